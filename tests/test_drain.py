"""The graceful drain outside ``chatbot serve``: under ``uvicorn --factory`` the server closes
the sockets itself at SIGTERM, and the replies in flight still get their grace and are
stored, by the application's own lifespan."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
from pathlib import Path

from websockets.sync.client import connect

from tests.conftest import bearer, make_token, recv_json
from tests.processes import ServeProcess

ALICE = make_token("alice")
LONG = " ".join(f"w{n}" for n in range(30))


def factory(port: int) -> list[str]:
    return [
        "-m", "uvicorn", "--factory", "chatbot.app:create_app",
        "--port", str(port), "--host", "127.0.0.1",
    ]  # fmt: skip


def rows(db: Path) -> list[tuple[str, str, str]]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute(
            "SELECT role, content, status FROM messages ORDER BY id"
        ).fetchall()


def test_under_uvicorn_factory_sigterm_lets_the_reply_finish_and_stores_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "chatbot.toml").write_text('[backends.slow]\ntype = "echo"\ndelay = 0.05\n')
    server = ServeProcess(
        tmp_path, factory, CHATBOT_CONFIG=str(tmp_path / "chatbot.toml"),
        CHATBOT_SHUTDOWN_GRACE="20",
    )  # fmt: skip
    with server:
        with connect(server.ws_url, additional_headers=bearer(ALICE)) as ws:
            recv_json(ws)
            ws.send(json.dumps({"message": LONG, "id": "t1", "stream": True}))
            assert recv_json(ws)["type"] == "delta"
            server.signal(signal.SIGTERM)
        # uvicorn closed the socket at once (1012); the lifespan waits for the reply.
        assert server.wait() in (0, -signal.SIGTERM)
    # Before the lifespan drained, this reply was cut short and stored "cancelled".
    assert rows(tmp_path / "chat.db") == [
        ("user", LONG, "complete"),
        ("assistant", f"Echo: {LONG}", "complete"),
    ]
