"""A database written before conversations were trees, opened by the server of today: the
migrations to branches (0003) and to search (0004) turn each session into one branch in
the order its messages were listed, and lose nothing."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from chatbot.stores.sqlite_migrations import MIGRATIONS
from tests.conftest import ServerFactory, make_token, recv_json

ALICE = make_token("alice")
BOB = make_token("bob")

#: Messages as the server of migration 0002 stored them, in id order: (session, role,
#: content, status, client id, the row number of the message it answers). "k" was answered
#: late (after a restart), when "later" had been answered already; another session's
#: messages come in between.
ROWS: list[tuple[str, str, str, str, str | None, int | None]] = [
    ("trip", "user", "Which trams go to Belem?", "complete", "a", None),
    ("trip", "assistant", "Tram 15 goes to Belem.", "complete", None, 1),
    ("work", "user", "Draft the tram report", "complete", None, None),
    ("trip", "user", "And to the castle?", "complete", "k", None),
    ("work", "assistant", "Here is a draft of the", "cancelled", None, 3),
    ("trip", "user", "Where do we eat later?", "complete", "l", None),
    ("trip", "assistant", "Try the market later.", "complete", None, 6),
    ("trip", "assistant", "Tram 28 climbs to the castle.", "complete", None, 4),
    ("bob", "user", "My own tram question", "complete", None, None),
]
USAGE = {"input_tokens": 12, "output_tokens": 5}


def old_database(path: Path) -> None:
    """A file with the schema of migrations 0001 and 0002, written as their server did."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(
            "CREATE TABLE chatbot_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        for name, statements in MIGRATIONS[:2]:
            for statement in statements:
                db.execute(statement)
            db.execute(
                "INSERT INTO chatbot_migrations VALUES (?, '2026-01-01T00:00:00+00:00')", (name,)
            )
        sessions = [("trip", "alice"), ("work", "alice"), ("empty", "alice"), ("bob", "bob")]
        for session_id, owner in sessions:
            count = sum(1 for row in ROWS if row[0] == session_id)
            db.execute(
                "INSERT INTO sessions (id, owner, title, backend, model, system_prompt, "
                "created_at, updated_at, message_count) VALUES (?, ?, ?, 'echo', 'echo', NULL, "
                "'2026-01-01T10:00:00+00:00', '2026-01-01T11:00:00+00:00', ?)",
                (session_id, owner, session_id.title(), count),
            )
        for n, (session_id, role, content, status, client_id, reply_to) in enumerate(ROWS, 1):
            db.execute(
                "INSERT INTO messages (session_id, role, content, status, client_id, reply_to, "
                "backend, model, usage, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session_id, role, content, status, client_id, reply_to,
                    "echo" if role == "assistant" else None,
                    "echo" if role == "assistant" else None,
                    json.dumps(USAGE) if role == "assistant" else None,
                    f"2026-01-01T10:{n:02d}:00+00:00",
                ),
            )  # fmt: skip
        db.commit()


def ids_of(session_id: str) -> list[int]:
    """The ids the rows of a session got, in the order they were listed before."""
    return [n for n, row in enumerate(ROWS, 1) if row[0] == session_id]


def test_every_old_session_becomes_one_branch_in_the_order_it_was_listed(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    old_database(tmp_path / "chat.db")
    server = start_server()
    with server.http(ALICE) as http:
        for session_id in ("trip", "work"):
            ids = ids_of(session_id)
            session = http.get(f"/api/sessions/{session_id}").json()
            assert (session["message_count"], session["leaf_id"]) == (len(ids), ids[-1])
            messages = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
            assert [m["id"] for m in messages] == ids
            # One branch: each message follows the one listed before it, and has no sibling.
            assert [m["parent_id"] for m in messages] == [None, *ids[:-1]]
            assert [m["siblings"] for m in messages] == [[i] for i in ids]
            for message, n in zip(messages, ids, strict=True):
                _, role, content, status, client_id, reply_to = ROWS[n - 1]
                assert (message["role"], message["content"], message["status"]) == (
                    role, content, status,
                )  # fmt: skip
                assert message.get("client_id") == client_id
                assert message.get("in_reply_to") == reply_to
                assert message.get("usage") == (USAGE if role == "assistant" else None)
        empty = http.get("/api/sessions/empty").json()
        assert (empty["message_count"], empty["leaf_id"]) == (0, None)
        assert http.get("/api/sessions/empty/messages").json() == {
            "messages": [], "has_more": False,
        }  # fmt: skip
        # Paging walks the branch as it walked the ids.
        trip = ids_of("trip")
        page = http.get(f"/api/sessions/trip/messages?limit=2&before={trip[-2]}").json()
        assert ([m["id"] for m in page["messages"]], page["has_more"]) == (trip[-4:-2], True)

        # The old messages are found by search, each user's only by them.
        found = http.get("/api/search?q=tram").json()["results"]
        assert sorted(r["message_id"] for r in found) == [1, 2, 3, 8]
        assert {r["session_id"] for r in found} == {"trip", "work"}
        later = http.get("/api/search?q=later").json()["results"]
        assert sorted((r["message_id"], r["title"]) for r in later) == [
            (6, "Trip"), (7, "Trip"),
        ]  # fmt: skip
    with server.http(BOB) as http:
        found = http.get("/api/search?q=tram").json()["results"]
    assert [(r["session_id"], r["message_id"], r["snippet"]) for r in found] == [
        ("bob", 9, "My own tram question"),
    ]

    # The conversation goes on after its newest message.
    with server.ws(ALICE, session_id="trip") as ws:
        ws.send(json.dumps({"message": "Thanks!"}))
        assert recv_json(ws) == {"message": "Echo: Thanks!", "session_id": "trip"}
    with server.http(ALICE) as http:
        messages = http.get("/api/sessions/trip/messages").json()["messages"]
        session = http.get("/api/sessions/trip").json()
    assert [m["id"] for m in messages] == [*trip, 10, 11]
    assert [m["parent_id"] for m in messages[-2:]] == [trip[-1], 10]
    assert (session["message_count"], session["leaf_id"]) == (len(trip) + 2, 11)


def test_a_reply_stored_late_is_regenerated_as_an_answer_to_its_own_question(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    old_database(tmp_path / "chat.db")
    server = start_server()
    late, question = 8, ROWS[8 - 1][5]
    with server.ws(ALICE, session_id="trip") as ws:
        ws.send(json.dumps({"type": "regenerate", "message_id": late}))
        branch, reply = recv_json(ws), recv_json(ws)
    # Answered from the conversation as it stood when the question was asked, as the late
    # reply was: the backend is never shown what was said after it.
    assert branch == {"type": "branch", "leaf_id": question, "session_id": "trip"}
    assert reply["message"] == "Echo: And to the castle?"
    with server.http(ALICE) as http:
        messages = http.get("/api/sessions/trip/messages").json()["messages"]
        old = http.get(f"/api/sessions/trip/messages?leaf_id={late}").json()["messages"]
    assert [m["id"] for m in messages] == [1, 2, question, reply["message_id"]]
    regenerated = messages[-1]
    assert (regenerated["parent_id"], regenerated["in_reply_to"]) == (question, question)
    # Placed after its question, beside the messages that followed it; the old branch stays.
    assert regenerated["siblings"] == [6, reply["message_id"]]
    assert [m["id"] for m in old] == ids_of("trip")


def test_the_migrations_are_applied_once(
    start_server: ServerFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatbot")
    path = tmp_path / "chat.db"
    old_database(path)
    start_server().stop()
    start_server()  # a second start applies nothing
    applied = [r.getMessage() for r in caplog.records if r.getMessage().startswith("applied")]
    assert applied == ["applied migrations: " + ", ".join(name for name, _ in MIGRATIONS[2:])]
    with contextlib.closing(sqlite3.connect(path)) as db:
        names = [row[0] for row in db.execute("SELECT name FROM chatbot_migrations ORDER BY name")]
        leaves: list[tuple[Any, ...]] = db.execute(
            "SELECT id, leaf_id, message_count FROM sessions ORDER BY id"
        ).fetchall()
    assert names == [name for name, _ in MIGRATIONS]
    assert leaves == [("bob", 9, 1), ("empty", None, 0), ("trip", 8, 6), ("work", 5, 2)]
