"""kill -9 while many clients chat at once: every message a client saw acknowledged (its
reply frame arrived) is on disk, nothing is stored twice, and messages sent again with their
ids after the restart are answered exactly once. Group commit must not trade any of this."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import bearer, make_token
from tests.processes import ServeProcess

CLIENTS = 20
#: Replies seen, across all clients, before the server is killed.
BEFORE_KILL = 150


@pytest.fixture
def chat_db(tmp_path: Path) -> Path:
    return tmp_path / "chat.db"


@contextlib.contextmanager
def serve(tmp_path: Path) -> Iterator[ServeProcess]:
    (tmp_path / "chatbot.toml").write_text('[backends.echo]\ntype = "echo"\ndelay = 0.001\n')
    with ServeProcess(
        tmp_path,
        CHATBOT_CONFIG=str(tmp_path / "chatbot.toml"),
        CHATBOT_RATE_LIMIT_PER_MINUTE="100000",
        CHATBOT_MAX_SOCKETS_PER_USER="100",
    ) as server:
        yield server


async def client(
    url: str, user: str, acked: dict[str, str], sessions: dict[str, str], enough: asyncio.Event
) -> list[str]:
    """Send numbered messages one after another until the server goes away; the ids sent."""
    sent: list[str] = []
    token = make_token(user)
    with contextlib.suppress(ConnectionClosed, OSError):
        async with connect(url, additional_headers=bearer(token), open_timeout=10) as ws:
            sessions[user] = json.loads(await ws.recv())["session_id"]
            n = 0
            while True:
                client_id = f"{user}-{n}"
                sent.append(client_id)
                await ws.send(json.dumps({"message": f"m {client_id}", "id": client_id}))
                frame = json.loads(await ws.recv())
                assert frame["type"] == "message", frame
                assert frame["reply_to"] == client_id
                acked[client_id] = frame["message"]
                if len(acked) >= BEFORE_KILL:
                    enough.set()
                n += 1
    return sent


def stored(db_path: Path) -> list[tuple[str, str, str | None, int | None, int]]:
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return db.execute(
            "SELECT role, content, client_id, reply_to, id FROM messages ORDER BY id"
        ).fetchall()


def test_kill_9_under_load_loses_no_acknowledged_message_and_duplicates_none(
    tmp_path: Path, chat_db: Path
) -> None:
    acked: dict[str, str] = {}
    sessions: dict[str, str] = {}

    async def load(server: ServeProcess) -> list[list[str]]:
        enough = asyncio.Event()
        tasks = [
            asyncio.create_task(client(server.ws_url, f"u{n}", acked, sessions, enough))
            for n in range(CLIENTS)
        ]
        async with asyncio.timeout(60):
            await enough.wait()
        # Mid-load: every client has a message in flight right now.
        server.signal(signal.SIGKILL)
        return await asyncio.gather(*tasks)

    with serve(tmp_path) as server:
        sent = asyncio.run(load(server))
        assert server.wait() == -signal.SIGKILL

    rows = stored(chat_db)
    users = {r[2]: r for r in rows if r[0] == "user"}
    replies = {r[3]: r for r in rows if r[0] == "assistant"}
    # Nothing twice: one row per client id, one reply per user message.
    assert len(users) == len([r for r in rows if r[0] == "user"])
    assert len(replies) == len([r for r in rows if r[0] == "assistant"])
    # Every acknowledged message and its reply are on disk, as the client saw them.
    for client_id, reply in acked.items():
        assert client_id in users, f"{client_id} was acknowledged but is not stored"
        assert replies[users[client_id][4]][1] == reply
    unacknowledged = [cid for ids in sent for cid in ids if cid not in acked]
    assert len(unacknowledged) >= 1

    # After a restart, each client sends its unacknowledged messages again, with their ids.
    async def resend(server: ServeProcess) -> dict[str, str]:
        answers: dict[str, str] = {}
        for client_id in unacknowledged:
            user = client_id.rsplit("-", 1)[0]
            url = f"{server.ws_url}?session_id={sessions[user]}"
            async with connect(url, additional_headers=bearer(make_token(user))) as ws:
                await ws.send(json.dumps({"message": f"m {client_id}", "id": client_id}))
                answers[client_id] = json.loads(await ws.recv())["message"]
        return answers

    with serve(tmp_path) as again:
        answers = asyncio.run(resend(again))
    assert answers == {cid: f"Echo: m {cid}" for cid in unacknowledged}
    rows = stored(chat_db)
    user_ids = [r[2] for r in rows if r[0] == "user"]
    assert sorted(user_ids) == sorted(set(user_ids))
    reply_to = [r[3] for r in rows if r[0] == "assistant"]
    assert sorted(reply_to) == sorted(set(reply_to))
    # Every message sent, acknowledged before the kill or not, now has exactly one reply.
    assert {r[2] for r in rows if r[0] == "user"} == {cid for ids in sent for cid in ids}
    assert len(reply_to) == len(user_ids)
