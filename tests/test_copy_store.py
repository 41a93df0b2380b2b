"""``chatbot copy-store``: a SQLite database copied to PostgreSQL and back holds the same
sessions, messages (ids, order, branches, statuses, client ids, usage), current branches,
titles and shares; copying again copies nothing, and completes a copy that stopped half way.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from chatbot.copy import Copied, Report, copy_store, rows_of
from chatbot.search import parse_query
from chatbot.stores import store_for_url
from chatbot.stores.base import SessionStore
from chatbot.stores.postgres_migrations import MIGRATIONS
from chatbot.stores.rows import TABLES
from chatbot.stores.usage import GROUPS, Quota
from chatbot.transfer import ImportedMessage, ImportedSession
from tests.postgres import fresh_schema, run_sql
from tests.processes import FOREIGN_PREFIXES

OWNERS = ("alice", "bob", "carol")
MIGRATION_NAMES = [name for name, _ in MIGRATIONS]
SEARCHES = ("lisbon", "zebra", "hello", "e")


async def _opened(url: str) -> SessionStore:
    store = store_for_url(url)
    await store.open()
    await store.migrate()
    return store


async def _seed(store: SessionStore) -> None:
    """Conversations with every kind of row: branches (an edit, a regeneration), an
    errored reply, client ids, usage (and so the ledger), titles, shares, a deleted subtree
    (a gap in the ids), an import of an older conversation, an empty session, and quotas."""
    trip = (await store.create_session("alice", backend="echo", title="Lisbon")).id
    q1 = (
        await store.add_user_message("alice", trip, content="A café in Lisbon?", client_id="c-1")
    ).message
    a1 = await store.add_reply(
        "alice", trip, reply_to=q1.id, content="Try the pastéis", status="complete",
        backend="echo", model="echo-1", usage={"input_tokens": 3, "output_tokens": 4},
    )  # fmt: skip
    q2 = (await store.add_user_message("alice", trip, content="and zebra crossings?")).message
    await store.add_reply("alice", trip, reply_to=q2.id, content="", status="error")
    edit = await store.add_user_message("alice", trip, content="and trams?", parent=a1.id)
    await store.add_reply(
        "alice", trip, reply_to=edit.message.id, content="Tram 28", status="complete"
    )
    await store.switch_branch("alice", trip, edit.message.id, descend=False)
    await store.add_reply(
        "alice", trip, reply_to=edit.message.id, content="Tram 15 too", status="cancelled",
        client_id="regen-1",
    )  # fmt: skip
    doomed = await store.add_user_message("alice", trip, content="doomed", parent=None)
    await store.add_reply("alice", trip, reply_to=doomed.message.id, content="x", status="complete")
    await store.switch_branch("alice", trip, q2.id)
    await store.delete_message("alice", trip, doomed.message.id)
    branch = await store.list_messages("alice", trip, limit=50)
    shared = [{"role": m.role, "content": m.content} for m in branch.messages]
    await store.create_share("alice", trip, "share-trip", shared)
    other = (await store.create_session("bob", backend="echo", system_prompt="Be brief.")).id
    hello = await store.add_user_message("bob", other, content="hello\x00 there", client_id="b\x00")
    await store.add_reply(
        "bob", other, reply_to=hello.message.id, content="hi", status="complete",
        backend="echo", model="echo-2", usage={"input_tokens": 7},
    )  # fmt: skip
    await store.set_title("bob", other, "Greetings", only_if_untitled=True)
    await store.create_share("bob", other, "share-bob", [{"content": "hello\x00 there"}])
    await store.create_session("carol", backend="echo")
    ledger: Any = store
    await ledger.set_quota("alice", Quota(tokens_per_day=1000))
    await ledger.set_quota("carol", Quota(tokens_per_month=50_000))
    when = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    await store.import_sessions(
        "alice",
        [
            ImportedSession(
                title="Old", backend=None, model=None, system_prompt=None, created_at=when,
                messages=(
                    ImportedMessage("u", None, "user", "hello e", "complete", when,
                                    None, None, None),
                    ImportedMessage("a", "u", "assistant", "hey", "complete", when,
                                    None, "gpt", {"n": 1}),
                ),
                leaf_key="a",
            )
        ],
        backend="echo",
    )  # fmt: skip


async def _everything(store: SessionStore) -> dict[str, Any]:
    """All a user can see of the database, through the store, and its raw rows."""
    seen: dict[str, Any] = {}
    for owner in OWNERS:
        sessions = (await store.list_sessions(owner, limit=1000)).sessions
        seen[owner] = sessions
        for session in sessions:
            page = await store.list_messages(owner, session.id, limit=100)
            shares = await store.list_shares(owner, session.id)
            seen[session.id] = (
                await store.all_messages(owner, session.id), page, shares,
                [await store.get_share(share.id) for share in shares],
            )  # fmt: skip
        for words in SEARCHES:
            hits = await store.search(owner, parse_query(words), limit=100, offset=0)
            seen[f"{owner} searches {words}"] = sorted(hit.message.id for hit in hits)
        ledger: Any = store
        for group in GROUPS:
            seen[f"{owner} used by {group}"] = await ledger.usage(
                owner, start=date(2000, 1, 1), end=date(2100, 1, 1), group_by=group
            )
        seen[f"{owner}'s quota"] = await ledger.get_quota(owner)
    rows = rows_of(store)
    for table in TABLES:
        everything = await rows.read(table, None, 100_000)
        seen[table.name] = {table.key_of(row): row for row in everything}
    return seen


def _run(url: str, work: Any) -> Any:
    async def main() -> Any:
        store = await _opened(url)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(main())


def _counts(report: Report) -> dict[str, tuple[int, int]]:
    return {t.table: (t.copied, t.present) for t in report.tables}


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    _run(url, _seed)
    return url


def test_sqlite_to_postgresql_and_back_keeps_everything(
    sqlite_url: str, postgres_url: str, tmp_path: Path
) -> None:
    original = _run(sqlite_url, _everything)
    sizes = {table.name: len(original[table.name]) for table in TABLES}
    assert sizes == {
        "sessions": 4, "messages": 11, "shares": 2, "usage_totals": 2, "quota_overrides": 2,
    }  # fmt: skip

    report = asyncio.run(copy_store(sqlite_url, postgres_url))
    assert report.migrated == MIGRATION_NAMES
    assert _counts(report) == {name: (size, 0) for name, size in sizes.items()}
    assert _run(postgres_url, _everything) == original

    back = f"sqlite:///{tmp_path / 'back.db'}"
    report = asyncio.run(copy_store(postgres_url, back))
    assert _counts(report) == {name: (size, 0) for name, size in sizes.items()}
    assert _run(back, _everything) == original

    # Each copy goes on counting message ids past the copied ones.
    (top,) = max(original["messages"])
    for url in (postgres_url, back):
        sid = original["bob"][0].id

        async def add(store: SessionStore, sid: str = sid) -> int:
            return (await store.add_user_message("bob", sid, content="more")).message.id

        assert _run(url, add) == top + 1


def test_a_second_copy_copies_nothing_and_completes_a_partial_one(
    sqlite_url: str, postgres_url: str
) -> None:
    original = _run(sqlite_url, _everything)
    first = asyncio.run(copy_store(sqlite_url, postgres_url))
    again = asyncio.run(copy_store(sqlite_url, postgres_url))
    assert again.migrated == []
    assert _counts(again) == {t.table: (0, t.copied) for t in first.tables}

    # What an interrupted copy leaves: the newest messages, one session and the shares
    # missing (a batch is one transaction, so rows come whole or not at all).
    (middle,) = sorted(original["messages"])[6]
    run_sql(postgres_url, "DELETE FROM shares")
    run_sql(postgres_url, "DELETE FROM messages WHERE id >= $1", middle)
    run_sql(postgres_url, "DELETE FROM sessions WHERE owner = 'carol'")
    completed = asyncio.run(copy_store(sqlite_url, postgres_url, batch=2))
    assert _counts(completed) == {
        "sessions": (1, 3), "messages": (5, 6), "shares": (2, 0), "usage_totals": (0, 2),
        "quota_overrides": (0, 2),
    }  # fmt: skip
    assert _run(postgres_url, _everything) == original


def test_the_command_reports_each_table(sqlite_url: str, postgres_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
    command = [sys.executable, "-m", "chatbot", "copy-store", sqlite_url, postgres_url]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert (first.returncode, first.stderr) == (0, "")
    assert first.stdout == (
        "sessions: 4 copied, 0 already there\n"
        "messages: 11 copied, 0 already there\n"
        "shares: 2 copied, 0 already there\n"
        "usage_totals: 2 copied, 0 already there\n"
        "quota_overrides: 2 copied, 0 already there\n"
        f"migrated the target: {', '.join(MIGRATION_NAMES)}\n"
    )
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert second.stdout == (
        "sessions: 0 copied, 4 already there\n"
        "messages: 0 copied, 11 already there\n"
        "shares: 0 copied, 2 already there\n"
        "usage_totals: 0 copied, 2 already there\n"
        "quota_overrides: 0 copied, 2 already there\n"
    )


def test_a_source_that_is_not_there_or_not_migrated_is_refused(
    tmp_path: Path, postgres_url: str
) -> None:
    missing = tmp_path / "missing.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}

    def copy(source: str, target: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "chatbot", "copy-store", source, target]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    refused = copy(f"sqlite:///{missing}", postgres_url)
    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr == (
        f"chatbot: error: there is no SQLite database at {missing} to copy from; give the "
        "URL of the file the server uses (CHATBOT_DATABASE_URL)\n"
    )
    assert not missing.exists()
    with fresh_schema() as empty:
        refused = copy(empty, f"sqlite:///{tmp_path / 'target.db'}")
    assert refused.returncode == 2
    assert refused.stderr == (
        "chatbot: error: the source database lacks the migrations "
        f"{', '.join(MIGRATION_NAMES)}; run `chatbot migrate` with CHATBOT_DATABASE_URL set "
        "to it, then copy again\n"
    )
    refused = copy(postgres_url, postgres_url)
    assert refused.stderr == (
        "chatbot: error: the source and the target are the same database; name two\n"
    )


def test_progress_is_told_table_by_table(sqlite_url: str, postgres_url: str) -> None:
    told: list[Copied] = []
    asyncio.run(copy_store(sqlite_url, postgres_url, progress=told.append))
    assert [c.table for c in told] == [t.name for t in TABLES]
