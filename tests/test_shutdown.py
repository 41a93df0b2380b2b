"""Stopping the server: SIGTERM drains replies in flight, kill -9 loses nothing stored.

These run ``python -m chatbot serve`` as a real subprocess, so that the signal reaches the
server exactly as an init system or a container runtime would send it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import bearer, expect_close, make_token, recv_json, wait_for
from tests.processes import ServeProcess

ALICE = make_token("alice")
WORDS = 30
LONG = " ".join(f"w{n}" for n in range(WORDS))


class ServerProcess(ServeProcess):
    """``chatbot serve`` with a slow echo backend and a shutdown grace of its own."""

    def __init__(self, tmp_path: Path, *, delay: float, grace: float) -> None:
        (tmp_path / "chatbot.toml").write_text(
            f'default_backend = "slow"\n[backends.slow]\ntype = "echo"\ndelay = {delay}\n'
        )
        super().__init__(
            tmp_path,
            CHATBOT_CONFIG=str(tmp_path / "chatbot.toml"),
            CHATBOT_SHUTDOWN_GRACE=str(grace),
        )
        self.db = tmp_path / "chat.db"

    def start(self) -> ServerProcess:
        self.__enter__()
        return self

    def ws(self, path: str = "/ws/chat/") -> ClientConnection:
        return connect(
            f"ws://127.0.0.1:{self.port}{path}", additional_headers=bearer(ALICE),
            open_timeout=5,
        )  # fmt: skip

    def printed(self) -> str:
        """Everything the server has printed so far (its log)."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def rows(self) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            return db.execute(
                "SELECT role, content, status, client_id FROM messages ORDER BY id"
            ).fetchall()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[ServerProcess], tmp_path: Path, **kwargs: Any) -> ServerProcess:
    server = ServerProcess(tmp_path, **kwargs).start()
    servers.append(server)
    return server


def exited_on_sigterm(code: int) -> bool:
    # uvicorn finishes its shutdown, then re-raises the signal it caught.
    return code in (0, -signal.SIGTERM)


def test_sigterm_lets_the_reply_in_flight_finish(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    server = start(servers, tmp_path, delay=0.05, grace=20)
    with server.ws() as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": LONG, "id": "t1", "stream": True}))
        deltas = [recv_json(ws) for _ in range(3)]
        server.signal(signal.SIGTERM)
        frames = []
        while (frame := recv_json(ws))["type"] == "delta":
            deltas.append(frame)
        frames.append(frame)
        assert expect_close(ws) == (1001, "server shutting down")
    final = frames[0]
    assert final["status"] == "complete"
    assert final["message"] == "".join(d["delta"] for d in deltas) == f"Echo: {LONG}"
    assert exited_on_sigterm(server.wait())
    assert server.rows() == [
        ("user", LONG, "complete", "t1"),
        ("assistant", f"Echo: {LONG}", "complete", None),
    ]


def test_sigterm_stops_accepting_sockets(servers: list[ServerProcess], tmp_path: Path) -> None:
    server = start(servers, tmp_path, delay=0.2, grace=20)
    with server.ws() as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": LONG, "id": "t1"}))
        with server.ws(f"/ws/chat/?session_id={session_id}&stream=1") as watcher:
            assert recv_json(watcher)["type"] == "delta"  # the reply is being generated
        server.signal(signal.SIGTERM)
        # Logged once the server has closed its listening socket, before it drains.
        wait_for(
            lambda: "waiting up to 20 s for 1 reply in flight" in server.printed(),
            "the server to log that it drains the reply in flight",
        )
        with pytest.raises(ConnectionRefusedError), server.ws():
            pass
        ws.send(json.dumps({"type": "cancel"}))
        assert recv_json(ws)["status"] == "cancelled"
        assert expect_close(ws)[0] == 1001


def test_sigterm_past_the_grace_stores_the_rest_as_cancelled(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    server = start(servers, tmp_path, delay=0.2, grace=0.5)
    with server.ws() as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": LONG, "id": "long", "stream": True}))
        ws.send(json.dumps({"message": "queued", "id": "queued"}))
        deltas = [recv_json(ws) for _ in range(2)]
        server.signal(signal.SIGTERM)
        while (frame := recv_json(ws))["type"] == "delta":
            deltas.append(frame)
        cancelled = frame
        waiting = recv_json(ws)
        assert expect_close(ws) == (1001, "server shutting down")
    partial = "".join(d["delta"] for d in deltas)
    assert cancelled["status"] == "cancelled"
    assert cancelled["reply_to"] == "long"
    assert cancelled["message"] == partial
    assert 0 < len(partial) < len(f"Echo: {LONG}")
    assert waiting["type"] == "error"
    assert waiting["reply_to"] == "queued"
    assert waiting["error"]["code"] == "backend_unavailable"
    assert waiting["error"]["retryable"] is True
    assert exited_on_sigterm(server.wait())
    assert server.rows() == [
        ("user", LONG, "complete", "long"),
        ("assistant", partial, "cancelled", None),
        ("user", "queued", "complete", "queued"),
    ]
    # After a restart, sending the queued message again with its id answers it once.
    again = start(servers, tmp_path, delay=0.0, grace=5)
    session_id = cancelled["session_id"]
    with again.ws(f"/ws/chat/?session_id={session_id}") as ws:
        ws.send(json.dumps({"message": "queued", "id": "queued"}))
        assert recv_json(ws)["message"] == "Echo: queued"
    assert again.rows()[2:] == [
        ("user", "queued", "complete", "queued"),
        ("assistant", "Echo: queued", "complete", None),
    ]


def test_kill_9_mid_stream_loses_nothing_stored(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    server = start(servers, tmp_path, delay=0.2, grace=5)
    with server.ws() as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "first", "id": "a"}))
        assert recv_json(ws)["message"] == "Echo: first"
        ws.send(json.dumps({"message": LONG, "id": "k", "stream": True}))
        for _ in range(3):
            assert recv_json(ws)["type"] == "delta"
        server.signal(signal.SIGKILL)
        assert server.wait() == -signal.SIGKILL
    with contextlib.closing(sqlite3.connect(server.db)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert server.rows() == [
        ("user", "first", "complete", "a"),
        ("assistant", "Echo: first", "complete", None),
        ("user", LONG, "complete", "k"),
    ]
    again = start(servers, tmp_path, delay=0.0, grace=5)
    with again.ws(f"/ws/chat/?session_id={session_id}") as ws:
        ws.send(json.dumps({"message": "first", "id": "a"}))
        assert recv_json(ws)["message"] == "Echo: first"
        ws.send(json.dumps({"message": "later", "id": "l"}))
        assert recv_json(ws)["message"] == "Echo: later"
        # Answered late, "k" is answered from the conversation as it stood when it was sent.
        ws.send(json.dumps({"message": LONG, "id": "k"}))
        assert recv_json(ws)["message"] == f"Echo: {LONG}"
    assert again.rows() == [
        ("user", "first", "complete", "a"),
        ("assistant", "Echo: first", "complete", None),
        ("user", LONG, "complete", "k"),
        ("user", "later", "complete", "l"),
        ("assistant", "Echo: later", "complete", None),
        ("assistant", f"Echo: {LONG}", "complete", None),
    ]
    with contextlib.closing(sqlite3.connect(again.db)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
