"""The SQLite store: the shared contract on a real file, then what is SQLite's own."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chatbot.errors import ConfigError, DuplicateMessage
from chatbot.stores import store_for_url
from chatbot.stores.base import UserMessage
from chatbot.stores.sqlite import SQLiteStore, path_from_url
from chatbot.stores.sqlite_migrations import MIGRATIONS
from tests.store_contract import StoreContract, StoreHarness, open_store
from tests.store_contract_tree import TreeContract
from tests.store_contract_usage import UsageContract

MIGRATION_NAMES = [name for name, _ in MIGRATIONS]


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def query(store: StoreHarness, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the store's own connection (pragmas are per connection)."""

    def fetch(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in db.execute(sql, params).fetchall()]

    return store.run(store.store.db.read(fetch))


class TestSQLiteStore(StoreContract, TreeContract, UsageContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[StoreHarness]:
        url = sqlite_url(tmp_path / "chat.db")
        with open_store(SQLiteStore(url), migrations=MIGRATION_NAMES) as harness:
            yield harness

    def backdate(self, store: StoreHarness, owner: str, days: int) -> None:
        def move(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE usage_totals SET day = date(day, ?) WHERE owner = ?",
                (f"-{days} days", owner),
            )

        store.run(store.store.db.write(move))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "nested" / "chat.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[StoreHarness]:
    with open_store(SQLiteStore(sqlite_url(db_path)), migrations=MIGRATION_NAMES) as harness:
        yield harness


def test_migrating_an_empty_file_creates_the_schema(store: StoreHarness, db_path: Path) -> None:
    assert store.first_migrate == MIGRATION_NAMES
    assert db_path.is_file()

    with contextlib.closing(sqlite3.connect(db_path)) as db:
        objects = dict(db.execute("SELECT name, type FROM sqlite_master").fetchall())
        recorded = db.execute("SELECT name, applied_at FROM chatbot_migrations").fetchall()
    for table in ("sessions", "messages", "chatbot_migrations"):
        assert objects.get(table) == "table"
    for index in (
        "sessions_owner_activity",
        "messages_session",
        "messages_client_id",
        "messages_reply_to",
    ):
        assert objects.get(index) == "index"
    assert [name for name, _ in recorded] == MIGRATION_NAMES
    applied_at = datetime.fromisoformat(recorded[0][1])
    assert applied_at.utcoffset() == timedelta(0)


def test_the_message_count_migration_counts_what_is_there(tmp_path: Path) -> None:
    """A database of the first release gets its sessions' counts, once, from its rows."""
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE chatbot_migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
        for statement in MIGRATIONS[0][1]:
            db.execute(statement)
        db.execute("INSERT INTO chatbot_migrations VALUES ('0001_initial', '2026-01-01')")
        for sid, count in (("busy", 3), ("empty", 0)):
            db.execute(
                "INSERT INTO sessions VALUES (?, 'alice', NULL, 'echo', NULL, NULL, "
                "'2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')",
                (sid,),
            )
            for n in range(count):
                db.execute(
                    "INSERT INTO messages (session_id, role, content, status, created_at) "
                    "VALUES (?, 'user', ?, 'complete', '2026-01-01T00:00:00+00:00')",
                    (sid, str(n)),
                )
        db.commit()
    with open_store(SQLiteStore(sqlite_url(path)), migrations=MIGRATION_NAMES) as store:
        assert store.first_migrate == MIGRATION_NAMES[1:]
        assert store.get_session("alice", "busy").message_count == 3
        assert store.get_session("alice", "empty").message_count == 0
        store.add_message("alice", "busy", role="user", content="3")
        assert store.get_session("alice", "busy").message_count == 4


def test_connection_pragmas(store: StoreHarness) -> None:
    assert query(store, "PRAGMA journal_mode") == [("wal",)]
    assert query(store, "PRAGMA foreign_keys") == [(1,)]
    assert query(store, "PRAGMA busy_timeout") == [(5000,)]
    assert query(store, "PRAGMA synchronous") == [(2,)]  # FULL


def test_data_survives_a_restart(store: StoreHarness, db_path: Path) -> None:
    session = store.create_session("alice", backend="echo", title="kept", model="echo")
    question = store.add_message("alice", session.id, role="user", content="ça va ? 🙂")
    answer = store.add_message(
        "alice",
        session.id,
        role="assistant",
        content="Echo: ça va ? 🙂",
        reply_to=question.id,
        usage={"output_tokens": 4},
    )
    before = store.get_session("alice", session.id)
    store.run(store.store.close())

    with open_store(SQLiteStore(sqlite_url(db_path)), migrations=MIGRATION_NAMES) as again:
        assert again.first_migrate == []
        assert again.applied_migrations() == MIGRATION_NAMES
        assert again.get_session("alice", session.id) == before
        assert before.message_count == 2
        page = again.list_messages("alice", session.id, limit=10)
        assert page.messages == [question, answer]
        newer = again.add_message("alice", session.id, role="user", content="and now?")
        assert newer.id > answer.id


def _plan(store: StoreHarness, sql: str, params: tuple[Any, ...]) -> list[str]:
    return [row[3] for row in query(store, "EXPLAIN QUERY PLAN " + sql, params)]


def _assert_uses_indexes(plan: list[str]) -> None:
    text = "\n".join(plan)
    searches = [line for line in plan if line.startswith(("SCAN", "SEARCH"))]
    assert searches, text
    for line in searches:
        assert line.startswith("SEARCH"), f"a full scan:\n{text}"
        assert any(
            how in line
            for how in ("USING INDEX", "USING COVERING INDEX", "USING INTEGER PRIMARY KEY")
        ), text
    # The index gives the order too: no sorting of the matching rows.
    assert "TEMP B-TREE" not in text, text


@pytest.mark.parametrize(
    "page",
    [
        pytest.param({"after": 0}, id="messages-after"),
        pytest.param({"before": 10**9}, id="messages-before"),
        pytest.param({}, id="messages-newest"),
    ],
)
def test_message_queries_use_an_index(
    store: StoreHarness, monkeypatch: pytest.MonkeyPatch, page: dict[str, int]
) -> None:
    session = store.create_session("alice", backend="echo")
    for n in range(5):
        store.add_message("alice", session.id, role="user", content=str(n))
    executed = _record_queries(store, monkeypatch)

    store.list_messages("alice", session.id, limit=3, **page)

    # The branch is walked up from its leaf, one primary-key lookup a message; the
    # siblings come from the parent index. Only the walk's own queue (the CTE "up") is
    # scanned, and only the walk's rows are sorted: no table is.
    statements = [s for s, _ in executed if "messages" in s and s.startswith(("WITH", "SELECT"))]
    walk = next(s for s in statements if s.startswith("WITH RECURSIVE up"))
    plan = _plan(store, walk, ())
    text = "\n".join(plan)
    assert "SEARCH m USING INTEGER PRIMARY KEY (rowid=?)" in plan, text
    assert not [line for line in plan if line.startswith("SCAN") and line != "SCAN up"], text
    siblings = next(s for s in statements if "parent_id IN" in s)
    plan = _plan(store, siblings, ())
    _assert_uses_indexes(plan)
    assert any("messages_parent" in line for line in plan), plan


@pytest.mark.parametrize("with_cursor", [False, True], ids=["first-page", "next-page"])
def test_session_list_query_uses_an_index(
    store: StoreHarness, monkeypatch: pytest.MonkeyPatch, with_cursor: bool
) -> None:
    for owner in ("alice", "bob"):
        for _ in range(4):
            session = store.create_session(owner, backend="echo")
            store.add_message(owner, session.id, role="user", content="hi")
    cursor = store.list_sessions("alice", limit=2).next_cursor if with_cursor else None
    executed = _record_queries(store, monkeypatch)

    store.list_sessions("alice", limit=2, cursor=cursor)

    sql, params = next((s, p) for s, p in executed if "FROM sessions s WHERE s.owner" in s)
    plan = _plan(store, sql, params)
    _assert_uses_indexes(plan)
    assert any("sessions_owner_activity" in line for line in plan), plan


def _record_queries(
    store: StoreHarness, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, tuple[Any, ...]]]:
    """Record the exact SQL the store reads with from now on (SQLite's own trace, with the
    parameters written into the text)."""
    executed: list[tuple[str, tuple[Any, ...]]] = []
    store.store.db.reader.set_trace_callback(lambda sql: executed.append((sql, ())))
    return executed


def test_integrity_after_many_writes(store: StoreHarness, db_path: Path) -> None:
    sessions = [store.create_session(f"user{n % 3}", backend="echo") for n in range(12)]
    for n, session in enumerate(sessions):
        question = store.add_message(
            session.owner, session.id, role="user", content="q" * n, client_id=f"c{n}"
        )
        store.add_message(
            session.owner,
            session.id,
            role="assistant",
            content="a" * n,
            reply_to=question.id,
            usage={"output_tokens": n},
        )
        if n % 3 == 0:
            store.rename_session(session.owner, session.id, f"title {n}")
        if n % 4 == 0:
            store.delete_session(session.owner, session.id)

    assert query(store, "PRAGMA integrity_check") == [("ok",)]
    assert query(store, "PRAGMA foreign_key_check") == []
    assert query(store, "SELECT COUNT(*) FROM sessions") == [(9,)]
    assert query(store, "SELECT COUNT(*) FROM messages") == [(18,)]


def test_deleting_a_session_deletes_its_rows(store: StoreHarness) -> None:
    doomed = store.create_session("alice", backend="echo")
    kept = store.create_session("alice", backend="echo")
    question = store.add_message("alice", doomed.id, role="user", content="q")
    store.add_message("alice", doomed.id, role="assistant", content="a", reply_to=question.id)
    store.add_message("alice", kept.id, role="user", content="stays")

    store.delete_session("alice", doomed.id)

    assert query(store, "SELECT COUNT(*) FROM messages WHERE session_id = ?", (doomed.id,)) == [
        (0,)
    ]
    assert query(store, "SELECT content FROM messages") == [("stays",)]
    assert query(store, "SELECT id FROM sessions") == [(kept.id,)]


def test_duplicate_client_id_leaves_no_open_transaction(store: StoreHarness) -> None:
    session = store.create_session("alice", backend="echo")
    store.add_message("alice", session.id, role="user", content="hi", client_id="c1")
    with pytest.raises(DuplicateMessage) as raised:
        store.add_message("alice", session.id, role="user", content="hi", client_id="c1")
    assert raised.value.message.content == "hi"
    # The next write goes through: the failed one left no transaction open.
    store.add_message("alice", session.id, role="user", content="again", client_id="c2")
    assert store.get_session("alice", session.id).message_count == 2


def test_store_for_an_unknown_scheme_names_the_supported_ones() -> None:
    with pytest.raises(ConfigError) as raised:
        store_for_url("mysql://x")
    message = str(raised.value)
    assert message.startswith(
        "CHATBOT_DATABASE_URL has the scheme 'mysql', which no store handles;"
    )
    supported = re.search(r"supported: ([a-z]+://(?:, [a-z]+://)*)$", message)
    assert supported is not None, message
    assert "sqlite://" in supported.group(1).split(", ")


def test_store_for_a_sqlite_url() -> None:
    store = store_for_url("sqlite:///./some/where.db")
    assert isinstance(store, SQLiteStore)
    assert store.path == "./some/where.db"


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///./x.db", "./x.db"),
        ("sqlite:///x.db", "x.db"),
        ("sqlite:////tmp/x.db", "/tmp/x.db"),
        ("sqlite:///./my%20chats.db", "./my chats.db"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_path_from_url(url: str, path: str) -> None:
    assert path_from_url(url) == path


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("sqlite://", "names no file"),
        ("sqlite:///", "names no file"),
        ("sqlite://host/x.db", "not a SQLite URL"),
        ("postgresql:///x", "not a SQLite URL"),
    ],
)
def test_path_from_a_bad_url(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        path_from_url(url)
    assert words in str(raised.value)
    assert "sqlite:///" in str(raised.value)


def test_a_url_may_trade_power_loss_safety_for_fewer_fsyncs(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "fast.db") + "?synchronous=normal"
    with open_store(SQLiteStore(url), migrations=MIGRATION_NAMES) as store:
        assert query(store, "PRAGMA synchronous") == [(1,)]  # NORMAL


def test_an_unknown_synchronous_setting_says_what_to_write(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        SQLiteStore(sqlite_url(tmp_path / "x.db") + "?synchronous=off")
    assert str(raised.value) == (
        "the SQLite URL asks for synchronous='off'; write ?synchronous=full (the default) "
        "or ?synchronous=normal (see docs/performance.md)"
    )


def test_concurrent_writes_share_commits_and_a_failing_one_fails_alone(tmp_path: Path) -> None:
    """Writes from many sessions at once are group-committed: far fewer commits than
    writes. A write that fails in a group (a repeated id) is undone alone."""
    url = sqlite_url(tmp_path / "group.db")
    with open_store(SQLiteStore(url), migrations=MIGRATION_NAMES) as store:
        sessions = [store.create_session(f"user{n}", backend="echo") for n in range(40)]
        store.add_message("user0", sessions[0].id, role="user", content="x", client_id="taken")
        statements: list[str] = []
        store.store.db.writer.set_trace_callback(statements.append)

        async def together() -> list[object]:
            writes = [
                store.store.add_user_message(s.owner, s.id, content="hi", client_id=f"c{n}")
                for n, s in enumerate(sessions)
            ]
            repeated = store.store.add_user_message(
                "user0", sessions[0].id, content="again", client_id="taken"
            )
            return await asyncio.gather(*writes, repeated, return_exceptions=True)

        results = store.run(together())
        store.store.db.writer.set_trace_callback(None)
        commits = [s for s in statements if s.strip().upper() == "COMMIT"]
        assert isinstance(results[-1], DuplicateMessage)
        assert all(isinstance(r, UserMessage) for r in results[:-1])
        assert 1 <= len(commits) < 10, f"{len(commits)} commits for 41 writes"
        for n, session in enumerate(sessions):
            found = store.find_user_message(session.owner, session.id, f"c{n}")
            assert found is not None and found.content == "hi"
        assert store.get_session("user0", sessions[0].id).message_count == 2
