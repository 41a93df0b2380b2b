"""The benchmark's seeded databases: written straight into the SQLite file, they must read
through the store exactly as if the server had written them, and leave the schema (its
indexes, the triggers that keep the search index) as the server needs it."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.seed import BranchPages, branched_rows, seed_branches, seed_search
from chatbot.search import parse_query
from chatbot.stores.sqlite import SQLiteStore
from chatbot.stores.sqlite_migrations import MIGRATIONS
from tests.store_contract import StoreHarness, open_store

MIGRATION_NAMES = [name for name, _ in MIGRATIONS]
START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A database file with the server's schema and nothing in it."""
    path = tmp_path / "chat.db"
    with open_store(SQLiteStore(f"sqlite:///{path}"), migrations=MIGRATION_NAMES):
        pass
    return path


@contextlib.contextmanager
def reopened(database: Path) -> Iterator[StoreHarness]:
    with open_store(SQLiteStore(f"sqlite:///{database}"), migrations=MIGRATION_NAMES) as store:
        yield store


def schema(database: Path) -> list[tuple[str, str, str]]:
    """Every index and trigger: type, name and SQL."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        rows = db.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') "
            "AND sql IS NOT NULL ORDER BY name"
        ).fetchall()
    return [tuple(row) for row in rows]


def test_branched_rows_go_back_where_and_as_often_as_asked() -> None:
    rows, pages = branched_rows(1, "s", messages=30, forks=3, fork_length=2, start=START)

    # 24 messages on the current branch, forks before its messages at depths 6, 12 and
    # 18; each fork writes its 2 older messages first, then the new sibling.
    assert [row["id"] for row in rows] == list(range(1, 31))
    parents = {row["id"]: row["parent_id"] for row in rows}
    assert parents == {
        **{n: n - 1 for n in range(1, 31)},
        1: None,
        9: 6,
        17: 14,
        25: 22,
    }
    assert pages == BranchPages("s", middle=17, older_leaf=16)
    for row in rows:
        depth = 0
        parent = row["parent_id"]
        while parent is not None:
            depth, parent = depth + 1, parents[parent]
        assert row["role"] == ("user" if depth % 2 == 0 else "assistant")
        assert row["reply_to"] == (row["parent_id"] if depth % 2 else None)


def test_branched_rows_refuse_more_forks_than_fit() -> None:
    with pytest.raises(ValueError, match="5 forks of 4 do not fit in 20 messages"):
        branched_rows(1, "s", messages=20, forks=5, fork_length=4, start=START)


def test_seeded_branches_read_as_the_server_would_list_them(database: Path) -> None:
    before = schema(database)
    seeded = seed_branches(database, messages=30, forks=3, fork_length=2)

    assert schema(database) == before
    with reopened(database) as store:
        branched, linear = seeded.branched, seeded.linear
        assert store.get_session(seeded.owner, branched.session_id).leaf_id == 30
        newest = store.list_messages(seeded.owner, branched.session_id, limit=6)
        assert [m.id for m in newest.messages] == [25, 26, 27, 28, 29, 30]
        assert newest.siblings[25] == [23, 25]
        assert newest.has_more is True
        up = store.list_messages(seeded.owner, branched.session_id, limit=3, before=17)
        assert [m.id for m in up.messages] == [12, 13, 14]
        older = store.list_messages(
            seeded.owner, branched.session_id, limit=4, leaf_id=branched.older_leaf
        )
        assert [m.id for m in older.messages] == [13, 14, 15, 16]
        assert older.siblings[15] == [15, 17]

        # The session without branches: ids 31 to 60, its middle the 16th.
        assert linear.middle == linear.older_leaf == 46
        page = store.list_messages(seeded.owner, linear.session_id, limit=3, before=46)
        assert [m.id for m in page.messages] == [43, 44, 45]
        assert all(page.siblings[m.id] == [m.id] for m in page.messages)


def test_seeded_search_finds_what_each_user_wrote(database: Path) -> None:
    before = schema(database)
    corpus = seed_search(database, users=3, sessions_per_user=2, messages_per_session=10)

    assert (corpus.messages, corpus.per_user, corpus.owner) == (60, 20, "seed-search-0000")
    assert schema(database) == before
    with contextlib.closing(sqlite3.connect(database)) as db:
        owned = db.execute(
            "SELECT m.id, m.content FROM messages m JOIN sessions s ON s.id = m.session_id "
            "WHERE s.owner = ?",
            (corpus.owner,),
        ).fetchall()
    # Every word of a query matches as a prefix: "the", "there", "they"...
    expected = {n for n, content in owned if re.search(r"\bthe", content, re.I)}
    assert expected
    with reopened(database) as store:
        hits = store.search(corpus.owner, parse_query("the"), limit=100, offset=0)
        assert {hit.message.id for hit in hits} == expected

        # Each conversation is one branch of its 10 messages, its leaf the last.
        sessions = store.list_sessions(corpus.owner, limit=10).sessions
        assert len(sessions) == 2
        for session in sessions:
            page = store.list_messages(corpus.owner, session.id, limit=20)
            assert [m.role for m in page.messages] == ["user", "assistant"] * 5
            assert page.messages[-1].id == session.leaf_id
            assert session.message_count == 10

        # The triggers are back: a message written now is found at once.
        store.add_message(corpus.owner, sessions[0].id, role="user", content="quokka tour")
        [hit] = store.search(corpus.owner, parse_query("quokka"), limit=10, offset=0)
        assert hit.message.content == "quokka tour"


def test_a_trigger_the_seeder_does_not_know_stops_it(database: Path) -> None:
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute(
            "CREATE TRIGGER messages_touch AFTER INSERT ON messages BEGIN "
            "UPDATE sessions SET title = 'new' WHERE id = NEW.session_id; END"
        )
        db.commit()
    with pytest.raises(RuntimeError, match="trigger messages_touch runs on every insert"):
        seed_branches(database, messages=10, forks=1, fork_length=2)
