"""Two ``chatbot serve`` processes on one PostgreSQL database, as behind a load balancer: a
user's messages, sockets and sessions are counted once, whichever process they reach."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import bearer, expect_close, make_token, recv_json, wait_for
from tests.postgres import run_sql
from tests.processes import ServeProcess

pytestmark = pytest.mark.e2e

ALICE = make_token("alice")
BOB = make_token("bob")


@contextlib.contextmanager
def two_servers(tmp_path: Path, url: str, **limits: str) -> Iterator[list[ServeProcess]]:
    """Two servers on the database at ``url``, each in a folder of its own."""
    env = {"CHATBOT_DATABASE_URL": url, **limits}
    with contextlib.ExitStack() as stack:
        servers = []
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            servers.append(stack.enter_context(ServeProcess(folder, **env)))
        yield servers


def socket_to(
    server: ServeProcess, token: str, session_id: str | None = None
) -> contextlib.AbstractContextManager[ClientConnection]:
    url = server.ws_url + (f"?session_id={session_id}" if session_id else "")
    return connect(url, additional_headers=bearer(token), open_timeout=10)


def contents(server: ServeProcess, token: str, session_id: str) -> list[str]:
    page = httpx.get(
        f"{server.url}/api/sessions/{session_id}/messages", headers=bearer(token)
    ).json()
    return [m["content"] for m in page["messages"]]


def test_the_rate_limit_counts_the_messages_sent_to_both_processes(
    tmp_path: Path, postgres_url: str
) -> None:
    limits = {"CHATBOT_RATE_LIMIT_PER_MINUTE": "3", "CHATBOT_FLOOD_TOLERANCE": "2"}
    with (
        two_servers(tmp_path, postgres_url, **limits) as (a, b),
        socket_to(a, ALICE) as on_a,
        socket_to(b, ALICE) as on_b,
        socket_to(b, BOB) as bob,
    ):
        a_session = recv_json(on_a)["session_id"]
        b_session = recv_json(on_b)["session_id"]
        recv_json(bob)
        for ws, text in ((on_a, "one"), (on_b, "two"), (on_a, "three")):
            ws.send(json.dumps({"message": text}))
            assert recv_json(ws)["message"] == f"Echo: {text}"

        # The fourth of the minute is refused, on whichever process it arrives.
        on_b.send(json.dumps({"message": "four", "id": "m4"}))
        error = recv_json(on_b)
        assert (error["type"], error["reply_to"], error["session_id"]) == (
            "error", "m4", b_session,
        )  # fmt: skip
        assert error["error"]["code"] == "rate_limited"
        assert error["error"]["retryable"] is True
        assert 1 <= error["error"]["retry_after"] <= 60
        on_a.send(json.dumps({"message": "five"}))
        assert recv_json(on_a)["error"]["code"] == "rate_limited"
        # Two refused, on two processes: the next one is flooding.
        on_b.send(json.dumps({"message": "six"}))
        assert expect_close(on_b) == (4429, "persistent flooding")

        bob.send(json.dumps({"message": "unaffected"}))
        assert recv_json(bob)["message"] == "Echo: unaffected"

        assert contents(b, ALICE, a_session) == ["one", "Echo: one", "three", "Echo: three"]
        assert contents(a, ALICE, b_session) == ["two", "Echo: two"]


def test_the_socket_cap_counts_the_sockets_open_on_both_processes(
    tmp_path: Path, postgres_url: str
) -> None:
    def leases(user: str) -> int:
        rows = run_sql(postgres_url, "SELECT count(*) FROM socket_leases WHERE user_id = $1", user)
        count: int = rows[0][0]
        return count

    with (
        two_servers(tmp_path, postgres_url, CHATBOT_MAX_SOCKETS_PER_USER="2") as (a, b),
        socket_to(a, ALICE) as first,
    ):
        session_id = recv_json(first)["session_id"]
        with socket_to(b, ALICE, session_id) as second:
            second.send('{"type": "ping"}')
            assert recv_json(second) == {"type": "pong"}
            assert leases("alice") == 2
            for server in (a, b):
                with socket_to(server, ALICE, session_id) as third:
                    assert expect_close(third) == (4429, "too many connections")
            with socket_to(b, BOB) as bob:
                assert "session_id" in recv_json(bob)
        # The socket closed on one process frees a slot on the other.
        wait_for(lambda: leases("alice") == 1, "the closed socket's lease to be released")
        with socket_to(a, ALICE, session_id) as again:
            again.send('{"type": "ping"}')
            assert recv_json(again) == {"type": "pong"}
    # A server that stops gives back every lease it held.
    assert leases("alice") == leases("bob") == 0


def test_the_session_cap_counts_the_sessions_created_on_both_processes(
    tmp_path: Path, postgres_url: str
) -> None:
    with two_servers(tmp_path, postgres_url, CHATBOT_MAX_SESSIONS_PER_USER="2") as (a, b):
        assert (
            httpx.post(f"{a.url}/api/sessions", json={}, headers=bearer(ALICE)).status_code == 201
        )
        with socket_to(b, ALICE) as ws:
            assert "session_id" in recv_json(ws)
        refused = httpx.post(f"{a.url}/api/sessions", json={}, headers=bearer(ALICE))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_sessions"
        with socket_to(b, ALICE) as ws:
            assert expect_close(ws) == (4429, "too many sessions")
        assert httpx.post(f"{b.url}/api/sessions", json={}, headers=bearer(BOB)).status_code == 201
        listed = httpx.get(f"{b.url}/api/sessions", headers=bearer(ALICE)).json()["sessions"]
        assert len(listed) == 2
