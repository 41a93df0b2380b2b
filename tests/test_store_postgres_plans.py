"""The PostgreSQL store's queries use indexes: every statement it runs for paging history,
walking and switching branches, listing sessions, searching and shares is planned (from
the exact text and parameters it sent, recorded by the driver) over enough rows that a full
scan would be the planner's choice without an index, with custom and with generic plans
(asyncpg prepares each statement once and PostgreSQL may switch to a generic plan)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from chatbot.search import parse_query
from chatbot.stores.postgres import PostgresStore
from chatbot.stores.postgres_search import scope

#: Alice's older sessions and messages (a heavy user: a fifth of the messages, so reading
#: all of hers must not look cheaper than an index), other owners' sessions and messages
#: around them, and shares. Every message holds "lisbon"; only the other owners' hold
#: "coimbra". $1 is alice's scope lexeme.
SEED = [
    """
    INSERT INTO sessions (id, owner, backend, created_at, updated_at, message_count)
    SELECT 's' || n, CASE WHEN n <= 100 THEN 'alice' ELSE 'user' || (n % 500) END, 'echo',
           now(), now() - n * interval '1 second', 8
    FROM generate_series(1, 5000) n
    """,
    """
    INSERT INTO messages (session_id, role, content, status, created_at, search_vector)
    SELECT 's' || CASE WHEN n <= 8000 THEN n % 100 + 1 ELSE n % 4900 + 101 END,
           CASE WHEN n % 2 = 0 THEN 'user' ELSE 'assistant' END, 'word' || n, 'complete',
           now(),
           CASE WHEN n <= 8000
                THEN format('%s:1A word%s:2 lisbon:3', $1::text, n)
                ELSE format('u%s:1A word%s:2 lisbon:3 coimbra:4', md5(n::text), n)
           END::tsvector
    FROM generate_series(1, 40000) n
    """,
    """
    INSERT INTO shares (id, session_id, owner, title, created_at, messages)
    SELECT 'share' || n, 's' || (n % 5000 + 1), 'user' || n, NULL, now(), '[]'
    FROM generate_series(1, 5000) n
    """,
]


async def seed(store: PostgresStore) -> None:
    await store.pool.execute(SEED[0])
    await store.pool.execute(SEED[1], scope("alice"))
    await store.pool.execute(SEED[2])


TABLES = re.compile(r"\b(messages|sessions|shares)\b")


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


async def exercise(store: PostgresStore) -> None:
    """Every read and write of a conversation's life, on a session among many others."""
    sid = (await store.create_session("alice", backend="echo")).id
    ids = []
    for n in range(30):
        added = await store.add_user_message("alice", sid, content=f"m{n} lisbon café")
        ids.append(added.message.id)
    reply = await store.add_reply(
        "alice", sid, reply_to=ids[-1], content="a", status="error", client_id="regen"
    )
    await store.replace_reply("alice", sid, reply.id, content="b", status="complete")
    await store.add_user_message("alice", sid, content="edit", parent=ids[5])
    await store.create_share("alice", sid, "mine", [{"role": "user", "content": "hi"}])
    await store.pool.execute("ANALYZE")
    await store.list_messages("alice", sid, limit=5)
    await store.list_messages("alice", sid, limit=5, before=ids[10])
    await store.list_messages("alice", sid, limit=5, before=10**12)
    await store.list_messages("alice", sid, limit=5, after=ids[10])
    await store.list_messages("alice", sid, limit=5, leaf_id=ids[20])
    await store.branch_to("alice", sid, ids[20], limit=10)
    await store.newest_reply("alice", sid)
    await store.switch_branch("alice", sid, ids[3])
    await store.delete_message("alice", sid, ids[20])
    first = await store.list_sessions("alice", limit=1)
    await store.list_sessions("user7", limit=2, cursor=first.next_cursor)
    await store.count_sessions("alice")
    await store.get_session("alice", sid)
    await store.search("alice", parse_query('lisbon caf "m1 lisbon"'), limit=5, offset=0)
    await store.find_user_message("alice", sid, "c")
    await store.find_user_message("alice", sid, "regen", "assistant")
    await store.find_reply("alice", sid, ids[2])
    await store.all_messages("alice", sid)
    await store.list_shares("alice", sid)
    await store.get_share("mine")
    await store.delete_share("alice", sid, "mine")
    await store.set_title("alice", sid, "t", only_if_untitled=True)
    await store.delete_session("alice", sid)


@contextlib.contextmanager
def recording(store: PostgresStore) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """The statements the store runs in the block, with their parameters, as the driver
    sent them (the pool of a store made with ``pool_size=1`` has the one connection)."""
    executed: list[tuple[str, tuple[Any, ...]]] = []
    (connection,) = [holder._con for holder in store.pool._holders if holder._con]

    def record(query: Any) -> None:
        executed.append((query.query, query.args))

    connection.add_query_logger(record)
    try:
        yield executed
    finally:
        connection.remove_query_logger(record)


def literal(value: Any) -> str:
    """``value`` written as an SQL constant (EXPLAIN EXECUTE takes no parameters)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int):
        return str(value).lower()
    if isinstance(value, list):
        return "'{" + ",".join(map(str, value)) + "}'"
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text.replace("'", "''") + "'"


async def explain(db: Any, statement: str, args: tuple[Any, ...], *options: str) -> Any:
    """The plan of ``statement`` with ``args``, as PostgreSQL makes it for a prepared
    statement (the driver prepares each one) under the session's ``plan_cache_mode``.
    EXPLAIN of the statement itself would plan for the values given: a custom plan."""
    await db.execute(f"PREPARE planned AS {statement}")
    try:
        values = f"({', '.join(map(literal, args))})" if args else ""
        text = await db.fetchval(
            f"EXPLAIN ({', '.join(('FORMAT JSON', *options))}) EXECUTE planned{values}"
        )
    finally:
        await db.execute("DEALLOCATE planned")
    return json.loads(text)[0]["Plan"]


def plans(url: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(plan cache mode, statement, plan) of every statement the store ran on its tables."""

    async def main() -> list[tuple[str, str, dict[str, Any]]]:
        store = PostgresStore(url, pool_size=1)
        await store.open()
        try:
            await store.migrate()
            await seed(store)
            with recording(store) as executed:
                await exercise(store)
            found = []
            async with store.pool.acquire() as db:
                for mode in ("force_custom_plan", "force_generic_plan"):
                    await db.execute(f"SET plan_cache_mode = {mode}")
                    for statement, args in executed:
                        if TABLES.search(statement) and not statement.startswith("INSERT"):
                            found.append((mode, statement, await explain(db, statement, args)))
            return found
        finally:
            await store.close()

    return asyncio.run(main())


def test_every_statement_reads_through_an_index(postgres_url: str) -> None:
    planned = plans(postgres_url)
    assert len(planned) > 60
    for mode, statement, plan in planned:
        scans = [(n["Node Type"], n.get("Relation Name")) for n in nodes(plan)]
        full = [scan for scan in scans if scan[0] == "Seq Scan"]
        assert not full, f"{mode}: {statement}\n{json.dumps(plan, indent=1)}"

    def indexes(fragment: str) -> set[str]:
        chosen = set()
        for _, statement, plan in planned:
            if fragment in statement:
                chosen |= {n["Index Name"] for n in nodes(plan) if "Index Name" in n}
        assert chosen, f"no statement holds {fragment!r}"
        return chosen

    # The branch is walked up one primary-key lookup a message, siblings and descendants
    # come from the parent index, the search from the GIN index, the listing from the
    # owner's activity index.
    assert "messages_pkey" in indexes("WITH RECURSIVE up(id, parent_id, n)")
    assert "messages_parent" in indexes("parent_id = ANY(")
    # A step down the tree looks up the children of the messages reached so far, rather
    # than reading the whole session at each step.
    for walk in ("down", "sub"):
        lookups = [
            n.get("Index Cond", "")
            for _, statement, plan in planned
            if f"WITH RECURSIVE {walk}(id)" in statement
            for n in nodes(plan)
            if n.get("Index Name") == "messages_parent"
        ]
        step = re.compile(rf"parent_id = {walk}(_\d+)?\.id\b")
        assert lookups and all(step.search(c) for c in lookups), lookups
    for mode in ("force_custom_plan", "force_generic_plan"):
        (search,) = [p for m, s, p in planned if m == mode and "@@" in s]
        assert "messages_search" in {n.get("Index Name") for n in nodes(search)}, mode
    assert "sessions_owner_activity" in indexes("ORDER BY updated_at DESC")
    assert "shares_session" in indexes("FROM shares WHERE session_id")
    assert "shares_pkey" in indexes("FROM shares WHERE id = $1")


def test_the_search_index_returns_the_owners_matches_only(postgres_url: str) -> None:
    """Thirty-two thousand messages of other owners hold "coimbra" too; the GIN index is asked
    for the owner's scope lexeme with the words, so it hands over alice's three alone."""

    async def main() -> dict[str, Any]:
        store = PostgresStore(url=postgres_url, pool_size=1)
        await store.open()
        try:
            await store.migrate()
            await seed(store)
            sid = (await store.create_session("alice", backend="echo")).id
            for n in range(3):
                await store.add_user_message("alice", sid, content=f"Coimbra, day {n}")
            await store.add_user_message("alice", sid, content="Porto")
            await store.pool.execute("ANALYZE")
            with recording(store) as executed:
                hits = await store.search("alice", parse_query("coimbra"), limit=10, offset=0)
            assert len(hits) == 3
            ((statement, args),) = [(s, a) for s, a in executed if "@@" in s]
            async with store.pool.acquire() as db:
                return await explain(db, statement, args, "ANALYZE")
        finally:
            await store.close()

    plan = asyncio.run(main())
    (lookup,) = [n for n in nodes(plan) if n.get("Index Name") == "messages_search"]
    assert lookup["Node Type"] == "Bitmap Index Scan"
    assert lookup["Actual Rows"] == 3
