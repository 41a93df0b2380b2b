"""``/readyz``: ready while the store and the hub answer, ``503`` naming the one that does not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chatbot.api import readiness
from chatbot.hub.local import LocalHub
from chatbot.runtime import Runtime
from chatbot.stores.sqlite import SQLiteStore
from tests.conftest import LiveServer


class ListenerDown(LocalHub):
    """A hub across processes whose listener has lost its connection."""

    async def ping(self) -> None:
        raise ConnectionError("the listener's connection to postgresql://chat:pw@db is gone")


def test_a_closed_store_is_not_ready(server: LiveServer) -> None:
    with server.http() as http:
        assert http.get("/readyz").json() == {"status": "ready"}
        # Closed in the server's own event loop, as its lifespan would close it.
        loop = server.server.servers[0].get_loop()
        asyncio.run_coroutine_threadsafe(_runtime(server).store.close(), loop).result(10)
        answer = http.get("/readyz")
        assert answer.status_code == 503
        assert answer.json() == {
            "error": {"code": "not_ready", "message": "the store does not answer"},
            "checks": {"store": "failed", "hub": "ok"},
        }
        # Alive all the same: a restart would not help a database that is down.
        assert http.get("/healthz").json() == {"status": "ok"}


def _runtime(server: LiveServer) -> Runtime:
    app = server.server.config.app
    runtime = app.state.chatbot  # type: ignore[union-attr]
    assert isinstance(runtime, Runtime)
    return runtime


def test_a_hub_whose_listener_is_down_is_not_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def check() -> tuple[dict[str, str], dict[str, str]]:
        store = SQLiteStore(f"sqlite:///{tmp_path / 'chat.db'}")
        await store.open()
        try:
            up = await readiness(store, LocalHub())
            down = await readiness(store, ListenerDown())
        finally:
            await store.close()
        return up, down

    up, down = asyncio.run(check())
    assert up == {"store": "ok", "hub": "ok"}
    assert down == {"store": "ok", "hub": "failed"}
    assert caplog.messages == ["not ready: the hub does not answer (ConnectionError)"]
