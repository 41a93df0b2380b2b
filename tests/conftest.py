"""Shared fixtures: a real uvicorn server on a loopback port, and tokens to talk to it."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import uvicorn
from starlette.datastructures import Secret
from starlette.types import ASGIApp
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from chatbot.app import create_app
from chatbot.backends import Backend
from chatbot.settings import Settings
from tests.postgres import postgres_url  # noqa: F401 (a fixture for every module)

SECRET = "test-secret-that-is-long-enough-for-every-hmac-algorithm-0123456789abcdef"
OTHER_SECRET = "another-secret-that-is-long-enough-for-every-hmac-algorithm-fedcba9876543210"
#: Per-user limits high enough that tests sending hundreds of generated messages and
#: sessions never meet them (the tests of the limits themselves set their own).
GENEROUS_LIMITS: dict[str, int] = {
    "rate_limit_per_minute": 1_000_000,
    "flood_tolerance": 1_000_000,
    "max_sockets_per_user": 10_000,
    "max_sessions_per_user": 1_000_000,
}


def make_token(
    sub: Any = "alice",
    *,
    secret: str = SECRET,
    ttl: float = 3600,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    **claims: Any,
) -> str:
    """A token as an identity provider would issue it; ``drop`` removes claims."""
    now = int(time.time())
    payload: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + int(ttl), **claims}
    for name in drop:
        payload.pop(name, None)
    return jwt.encode(payload, secret, algorithm=algorithm, headers=headers)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll until ``condition()`` is truthy (an event the server makes observable); its value."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
    return result


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class LiveServer:
    """A uvicorn server running an app in a thread, on a socket bound before it starts."""

    def __init__(self, app: ASGIApp, *, ws_max_size: int = 16 * 1024 * 1024) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", ws_max_size=ws_max_size, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()

    def http(self, token: str | None = None) -> httpx.Client:
        headers = bearer(token) if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def ws(
        self,
        token: str | None = None,
        *,
        session_id: str | None = None,
        path: str = "/ws/chat/",
        **kwargs: Any,
    ) -> ClientConnection:
        url = self.ws_url + path
        if session_id is not None:
            url += f"?session_id={session_id}"
        headers = kwargs.pop("additional_headers", None) or {}
        if token is not None:
            headers = {**headers, **bearer(token)}
        return connect(url, additional_headers=headers, open_timeout=10, **kwargs)


def wait_until_idle(server: LiveServer, timeout: float = 30) -> None:
    """Wait until the server holds no connection and runs no request or socket handler, so
    that whatever they log on their way out has been logged."""
    # uvicorn's own account of what it serves: a connection leaves it when closed, a
    # handler's task when it has returned.
    state = server.server.server_state
    wait_for(
        lambda: not state.connections and not state.tasks,
        "the server to close every connection and end every handler",
        timeout,
    )


def recv_json(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    import json

    frame = ws.recv(timeout=timeout)
    assert isinstance(frame, str), f"expected a text frame, got {frame!r}"
    data = json.loads(frame)
    assert isinstance(data, dict)
    return data


def expect_close(ws: ClientConnection, timeout: float = 10) -> tuple[int, str]:
    """Read until the server closes; return the close code and reason it sent."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "the connection dropped without a close frame"
            return exc.rcvd.code, exc.rcvd.reason
        except TimeoutError:
            raise AssertionError("the server did not close the connection") from None


@dataclass
class ServerFactory:
    tmp_path: Path
    started: list[LiveServer]

    def settings(self, **overrides: Any) -> Settings:
        base = Settings(
            jwt_secret=Secret(SECRET),
            database_url=f"sqlite:///{self.tmp_path / 'chat.db'}",
            data_dir=self.tmp_path / "data",
        )
        return replace(base, **overrides)

    def __call__(
        self,
        settings: Settings | None = None,
        *,
        backend_types: Mapping[str, type[Backend]] | None = None,
        ws_max_size: int = 16 * 1024 * 1024,
        **overrides: Any,
    ) -> LiveServer:
        if settings is None:
            settings = self.settings(**overrides)
        app = create_app(settings, backend_types=backend_types)
        server = LiveServer(app, ws_max_size=ws_max_size).start()
        self.started.append(server)
        return server


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerFactory]:
    """Start servers with ``start_server(**settings_overrides)``; all stop at teardown."""
    factory = ServerFactory(tmp_path, [])
    yield factory
    for server in reversed(factory.started):
        server.stop()


@pytest.fixture
def server(start_server: ServerFactory) -> LiveServer:
    """A server with default settings, the echo backend and a SQLite file in tmp_path."""
    return start_server()


@pytest.fixture
def token() -> Callable[..., str]:
    return make_token
