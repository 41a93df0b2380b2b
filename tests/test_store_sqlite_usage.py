"""The SQLite store's usage ledger beyond the contract: the migration that backfills it from
the replies already stored, and the quota check's query plan."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from chatbot.stores.sqlite import SQLiteStore
from chatbot.stores.sqlite_migrations import MIGRATIONS
from chatbot.stores.usage import QuotaState, UsageRow
from tests.store_contract import StoreHarness, open_store
from tests.test_store_sqlite import MIGRATION_NAMES, query, sqlite_url

WIDE = {"start": date(2000, 1, 1), "end": date(2100, 1, 1)}


def _database_before_the_ledger(path: Path, replies: list[tuple[Any, ...]]) -> None:
    """A database migrated up to the migration before 0007_usage, holding ``replies``:
    ``(owner, created_at, backend, model, usage JSON)``, each answering a question."""
    before = [name for name, _ in MIGRATIONS].index("0007_usage")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE chatbot_migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
        for name, statements in MIGRATIONS[:before]:
            for statement in statements:
                db.execute(statement)
            db.execute("INSERT INTO chatbot_migrations VALUES (?, '2026-01-01')", (name,))
        for owner in ("alice", "bob"):
            db.execute(
                "INSERT INTO sessions (id, owner, backend, created_at, updated_at) "
                "VALUES (?, ?, 'echo', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')",
                (f"s-{owner}", owner),
            )
        for owner, created_at, backend, model, usage in replies:
            question = db.execute(
                "INSERT INTO messages (session_id, role, content, status, created_at, usage) "
                "VALUES (?, 'user', 'q', 'complete', ?, ?)",
                (f"s-{owner}", created_at, usage),
            ).lastrowid
            db.execute(
                "INSERT INTO messages (session_id, role, content, status, reply_to, backend, "
                "model, usage, created_at) VALUES (?, 'assistant', 'a', 'complete', ?, ?, ?, ?, ?)",
                (f"s-{owner}", question, backend, model, usage, created_at),
            )
        db.commit()


def test_the_ledger_is_backfilled_from_the_replies_already_stored(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _database_before_the_ledger(
        path,
        [
            ("alice", "2026-03-01T10:00:00.000001+00:00", "echo", "echo",
             '{"input_tokens": 3, "output_tokens": 4}'),
            ("alice", "2026-03-01T23:59:59.999999+00:00", "echo", "echo",
             '{"input_tokens": 10, "output_tokens": 20}'),
            # Written with another offset: filed under its UTC day.
            ("alice", "2026-03-01T23:30:00-02:00", "gpt", None, '{"output_tokens": 7}'),
            # Nothing to count: no usage, no count, counts that are not whole numbers >= 0,
            # usage that is not an object, text that is not JSON.
            ("alice", "2026-03-02T08:00:00+00:00", "echo", "echo", None),
            ("alice", "2026-03-02T08:00:00+00:00", "echo", "echo", '{"cached_tokens": 5}'),
            ("alice", "2026-03-02T08:00:00+00:00", "echo", "echo",
             '{"input_tokens": -1, "output_tokens": 1.5}'),
            ("alice", "2026-03-02T08:00:00+00:00", "echo", "echo", "[1, 2]"),
            ("alice", "2026-03-02T08:00:00+00:00", "echo", "echo", "not json"),
            # One good count is enough; the other counts as 0.
            ("alice", "2026-03-02T09:00:00+00:00", "echo", "echo",
             '{"input_tokens": 5, "output_tokens": true}'),
            ("bob", "2026-03-01T12:00:00+00:00", "echo", "echo",
             '{"input_tokens": 100, "output_tokens": 200}'),
        ],
    )  # fmt: skip

    with open_store(SQLiteStore(sqlite_url(path)), migrations=MIGRATION_NAMES) as store:
        assert store.first_migrate == ["0007_usage"]
        assert store.usage("alice", group_by="day", **WIDE) == [
            UsageRow(13, 24, 2, day=date(2026, 3, 1)),
            UsageRow(5, 7, 2, day=date(2026, 3, 2)),
        ]
        assert store.usage("alice", group_by="model", **WIDE) == [
            UsageRow(18, 24, 3, backend="echo", model="echo"),
            UsageRow(0, 7, 1, backend="gpt", model=None),
        ]
        assert store.usage("bob", group_by="backend", **WIDE) == [
            UsageRow(100, 200, 1, backend="echo")
        ]
        assert store.quota_state("alice", date(2026, 3, 31), applies=True) == QuotaState(
            None, 0, 49
        )
        # A user message's usage (none is stored so, but one could be) was never a reply's.
        assert query(store, "SELECT SUM(replies) FROM usage_totals") == [(5,)]


@pytest.mark.parametrize("applies", [True, False])
def test_a_quota_check_is_one_query_on_primary_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, applies: bool
) -> None:
    with open_store(SQLiteStore(sqlite_url(tmp_path / "chat.db")), migrations=[]) as store:
        _fill(store)
        executed: list[str] = []
        store.store.db.reader.set_trace_callback(executed.append)

        store.quota_state("alice", date.today(), applies=applies)

        statements = [s for s in executed if s.lstrip().startswith(("WITH", "SELECT"))]
        assert len(statements) == 1, statements
        plan = [row[3] for row in query(store, "EXPLAIN QUERY PLAN " + statements[0])]
        text = "\n".join(plan)
        # The override is read once (the one-row "o"), the month's totals by their key.
        searches = [line for line in plan if line.startswith("SEARCH")]
        assert sorted(searches) == [
            "SEARCH quota_overrides USING PRIMARY KEY (user_id=?)",
            "SEARCH usage_totals USING PRIMARY KEY (owner=? AND day>? AND day<?)",
        ], text
        assert {line for line in plan if line.startswith("SCAN")} == {"SCAN o"}, text
        assert "TEMP B-TREE" not in text, text


def test_usage_by_day_reads_the_range_of_the_primary_key_in_order(tmp_path: Path) -> None:
    with open_store(SQLiteStore(sqlite_url(tmp_path / "chat.db")), migrations=[]) as store:
        _fill(store)
        executed: list[str] = []
        store.store.db.reader.set_trace_callback(executed.append)

        store.usage("alice", start=date(2026, 1, 1), end=date(2026, 1, 31), group_by="day")

        statement = next(s for s in executed if "FROM usage_totals" in s)
        plan = [row[3] for row in query(store, "EXPLAIN QUERY PLAN " + statement)]
        text = "\n".join(plan)
        assert plan == ["SEARCH usage_totals USING PRIMARY KEY (owner=? AND day>? AND day<?)"], text


def _fill(store: StoreHarness) -> None:
    """Ledger rows of several users, days and models, and a few overrides."""

    def fill(db: sqlite3.Connection) -> None:
        for n in range(300):
            db.execute(
                "INSERT OR IGNORE INTO usage_totals VALUES (?, ?, 'echo', ?, 1, 1, 1)",
                (f"user{n % 7}", f"2026-01-{n % 28 + 1:02d}", f"m{n % 3}"),
            )
            db.execute(
                "INSERT OR IGNORE INTO quota_overrides VALUES (?, 1, 2, '2026-01-01')",
                (f"user{n}",),
            )
        db.execute("ANALYZE")

    store.run(store.store.db.write(fill))
