"""Shared links through the HTTP API, end to end against a real server: a frozen, read-only
copy of a branch that anyone with its id can read, until it is revoked."""

from __future__ import annotations

import base64
import contextlib
import re
import sqlite3
from typing import Any

import httpx
import pytest

from chatbot.backend_config import BackendConfig
from tests.backends import FlakyBackend
from tests.conftest import LiveServer, ServerFactory, make_token
from tests.conversations import Conversation, branch

pytestmark = pytest.mark.e2e

ALICE = make_token("alice")
BOB = make_token("bob")
NOT_FOUND = {"error": {"code": "not_found", "message": "session not found"}}
SHARE_NOT_FOUND = {"error": {"code": "not_found", "message": "share not found"}}
SHARE_ID = re.compile(r"[A-Za-z0-9_-]{22,}")


def flaky_server(start_server: ServerFactory) -> LiveServer:
    """A server whose replies carry usage and a model."""
    settings = start_server.settings(
        backends={"flaky": BackendConfig("flaky", "flaky")}, default_backend="flaky"
    )
    return start_server(settings, backend_types={"flaky": FlakyBackend})


def share(http: httpx.Client, session_id: str) -> dict[str, Any]:
    response = http.post(f"/api/sessions/{session_id}/shares")
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def read(server: LiveServer, share_id: str) -> httpx.Response:
    """A share as anyone reads it: no token."""
    with server.http() as anonymous:
        return anonymous.get(f"/api/shares/{share_id}")


def test_a_share_is_the_branch_as_it_was_readable_without_a_token(
    start_server: ServerFactory,
) -> None:
    server = flaky_server(start_server)
    with Conversation(server, ALICE) as chat:
        first = chat.send("Where is Lyon?")
        paris = chat.send("And Paris?")
        # An edit: the branch shared is the current one, without its sibling.
        chat.send("And Marseille?", parent_id=first["message_id"])
        session_id = chat.session_id
        with server.http(ALICE) as http:
            shown = branch(http, session_id)
            created = share(http, session_id)
        response = read(server, created["share_id"])

        # Later changes: a message, a rename, a switch of branch.
        chat.send("And Nice?")
    with server.http(ALICE) as http:
        http.patch(f"/api/sessions/{session_id}", json={"title": "Renamed"})
        http.patch(f"/api/sessions/{session_id}", json={"leaf_id": paris["message_id"]})
        later = share(http, session_id)
    again = read(server, created["share_id"])

    assert created == {
        "share_id": created["share_id"],
        "url": f"{server.url}/s/{created['share_id']}",
        "title": "Where is Lyon?",
        "created_at": created["created_at"],
        "message_count": 4,
    }
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-robots-tag"] == "noindex"
    assert response.json() == {
        "share_id": created["share_id"],
        "title": "Where is Lyon?",
        "created_at": created["created_at"],
        "messages": [
            {
                "role": message["role"],
                "content": message["content"],
                "status": message["status"],
                "created_at": message["created_at"],
                "model": message.get("model"),
            }
            for message in shown
        ],
    }
    assert [m["content"] for m in response.json()["messages"]] == [
        "Where is Lyon?",
        "partial answer to Where is Lyon? with flaky-1",
        "And Marseille?",
        "partial answer to And Marseille? with flaky-1",
    ]
    assert [m["model"] for m in response.json()["messages"]] == [None, "flaky-1"] * 2
    # Immutable: what came after is not in it.
    assert again.status_code == 200
    assert again.json() == response.json()
    assert "Nice" not in again.text
    # A new share is of the session as it is now.
    assert later["title"] == "Renamed"
    assert later["message_count"] == 4
    assert [m["content"] for m in read(server, later["share_id"]).json()["messages"]] == [
        "Where is Lyon?",
        "partial answer to Where is Lyon? with flaky-1",
        "And Paris?",
        "partial answer to And Paris? with flaky-1",
    ]


def _keys(value: Any) -> set[str]:
    """Every key of every object in ``value``, however deep."""
    if isinstance(value, dict):
        return set(value).union(*map(_keys, value.values()))
    if isinstance(value, list):
        return set().union(*map(_keys, value))
    return set()


def test_a_share_holds_no_ids_usage_or_owner(start_server: ServerFactory) -> None:
    server = flaky_server(start_server)
    with Conversation(server, ALICE) as chat:
        reply = chat.send("Where is Lyon?")
        session_id = chat.session_id
    assert reply["usage"] == {"input_tokens": 3, "output_tokens": 4}
    with server.http(ALICE) as http:
        question = branch(http, session_id)[0]
        created = share(http, session_id)
    response = read(server, created["share_id"])
    assert _keys(response.json()) == {
        "share_id", "title", "created_at", "messages", "role", "content", "status", "model",
    }  # fmt: skip
    # Neither as keys nor as values: the owner, the session, the messages' and the client's
    # ids, the usage.
    for secret in ("alice", session_id, "c1", "input_tokens", "usage", "backend"):
        assert secret not in response.text, secret
    assert question["client_id"] == "c1"


def test_share_ids_are_long_random_and_distinct(server: LiveServer) -> None:
    with Conversation(server, ALICE) as chat:
        chat.send("hello")
        session_id = chat.session_id
    with server.http(ALICE) as http:
        created = [share(http, session_id)["share_id"] for _ in range(20)]
        listed = http.get(f"/api/sessions/{session_id}/shares").json()["shares"]
    assert len(set(created)) == 20
    for share_id in created:
        assert SHARE_ID.fullmatch(share_id), share_id
        # At least 128 random bits: url-safe base64 of at least 16 bytes.
        assert len(base64.urlsafe_b64decode(share_id + "=" * (-len(share_id) % 4))) >= 16
    # Newest first.
    assert [s["share_id"] for s in listed] == created[::-1]


def test_list_and_revoke(server: LiveServer) -> None:
    with Conversation(server, ALICE) as chat:
        chat.send("hello")
        session_id = chat.session_id
    with server.http(ALICE) as http:
        assert http.get(f"/api/sessions/{session_id}/shares").json() == {"shares": []}
        first = share(http, session_id)
        second = share(http, session_id)
        assert http.get(f"/api/sessions/{session_id}/shares").json() == {"shares": [second, first]}

        revoked = http.delete(f"/api/sessions/{session_id}/shares/{first['share_id']}")
        assert revoked.status_code == 204
        assert revoked.content == b""
        gone = read(server, first["share_id"])
        assert gone.status_code == 404
        assert gone.json() == SHARE_NOT_FOUND
        assert http.get(f"/api/sessions/{session_id}/shares").json() == {"shares": [second]}
        assert read(server, second["share_id"]).status_code == 200

        twice = http.delete(f"/api/sessions/{session_id}/shares/{first['share_id']}")
        assert twice.status_code == 404
        assert twice.json() == SHARE_NOT_FOUND
        too_long = http.delete(f"/api/sessions/{session_id}/shares/{'x' * 65}")
        assert too_long.status_code == 404
    assert read(server, "x" * 65).json() == SHARE_NOT_FOUND
    assert read(server, "no-such-share-0123456789").json() == SHARE_NOT_FOUND


def test_deleting_the_session_deletes_its_shares(server: LiveServer, tmp_path: Any) -> None:
    with Conversation(server, ALICE) as chat:
        chat.send("hello")
        session_id = chat.session_id
    with server.http(ALICE) as http:
        created = share(http, session_id)
        assert http.delete(f"/api/sessions/{session_id}").status_code == 204
        assert http.get(f"/api/sessions/{session_id}/shares").json() == NOT_FOUND
    response = read(server, created["share_id"])
    assert response.status_code == 404
    assert response.json() == SHARE_NOT_FOUND
    with contextlib.closing(sqlite3.connect(tmp_path / "chat.db")) as db:
        assert db.execute("SELECT COUNT(*) FROM shares").fetchone() == (0,)


def test_another_user_cannot_list_create_or_revoke_shares(server: LiveServer) -> None:
    with Conversation(server, ALICE) as chat:
        chat.send("hello")
        session_id = chat.session_id
    with Conversation(server, BOB) as chat:
        chat.send("mine")
        bobs = chat.session_id
    with server.http(ALICE) as http:
        created = share(http, session_id)
    share_id = created["share_id"]
    with server.http(BOB) as http:
        for method, path in [
            ("GET", f"/api/sessions/{session_id}/shares"),
            ("POST", f"/api/sessions/{session_id}/shares"),
            ("DELETE", f"/api/sessions/{session_id}/shares/{share_id}"),
        ]:
            theirs = http.request(method, path)
            missing = http.request(method, path.replace(session_id, "no-such-session"))
            assert theirs.status_code == missing.status_code == 404, (method, path)
            assert theirs.json() == missing.json() == NOT_FOUND
        # Alice's share through Bob's own session: no such share there.
        through_own = http.delete(f"/api/sessions/{bobs}/shares/{share_id}")
        assert through_own.status_code == 404
        assert through_own.json() == SHARE_NOT_FOUND
        assert http.get(f"/api/sessions/{bobs}/shares").json() == {"shares": []}
    assert read(server, share_id).status_code == 200
    with server.http(ALICE) as http:
        assert http.get(f"/api/sessions/{session_id}/shares").json() == {"shares": [created]}
    with server.http() as anonymous:
        assert anonymous.get(f"/api/sessions/{session_id}/shares").status_code == 401
        assert anonymous.post(f"/api/sessions/{session_id}/shares").status_code == 401


def test_an_empty_session_cannot_be_shared(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        session_id = http.post("/api/sessions").json()["session_id"]
        response = http.post(f"/api/sessions/{session_id}/shares")
        assert response.status_code == 422
        assert response.json() == {
            "error": {
                "code": "empty_session",
                "message": "the session holds no message to share yet",
            }
        }
        assert http.get(f"/api/sessions/{session_id}/shares").json() == {"shares": []}
