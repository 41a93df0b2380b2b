"""``python -m bench.limits [--url URL]``: what counting a message in PostgreSQL costs.

Every chat message on a server with a PostgreSQL store makes one statement of
:mod:`chatbot.limits_postgres` (the rate limit) before it is stored. This measures that
statement against the cheapest round trip there is (``SELECT 1`` on the same pool), so that
the ratio says what the statement adds to the wire itself, and against:

* the same statement on a logged copy of its table (the ratio shows what ``UNLOGGED`` saves:
  a write-ahead-log flush per message);
* the in-memory limits of a one-process server;
* many connections at once, for many users (the usual case) and for one user (whose
  messages wait for each other on its row's lock);
* a socket's open and close (a transaction under a lock: once per socket, not per message).

The database is a fresh schema on ``--url`` (default: ``CHATBOT_TEST_POSTGRES_URL``),
migrated by the store as a server would, and dropped afterwards. Figures are medians over
rounds in which the measures take turns (:func:`bench.stats.interleaved`); on a shared
machine, compare ratios, not microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from bench.postgres import with_schema
from bench.stats import interleaved, median
from chatbot.limits import MemoryLimits
from chatbot.limits_postgres import PostgresLimits
from chatbot.settings import Settings
from chatbot.stores.postgres import PostgresStore

#: Users the many-user measures spread their messages over: each stays under its limit.
USERS = 2000
CONCURRENCY = 8


async def per_op(count: int, op: Callable[[int], Awaitable[Any]]) -> float:
    """Microseconds per call of ``op``, ``count`` calls one after the other."""
    start = time.perf_counter()
    for n in range(count):
        await op(n)
    return (time.perf_counter() - start) / count * 1e6


async def per_op_concurrent(count: int, op: Callable[[int], Awaitable[Any]]) -> float:
    """Microseconds of wall time per call, ``CONCURRENCY`` callers at once."""
    numbers = iter(range(count))

    async def caller() -> None:
        for n in numbers:
            await op(n)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))
    return (time.perf_counter() - start) / count * 1e6


async def measure(
    server: str, schema: str, count: int, rounds: int
) -> list[tuple[str, float, str]]:
    store = PostgresStore(with_schema(server, schema), pool_size=CONCURRENCY)
    await store.open()
    try:
        await store.migrate()
        pool = store.pool
        # The same table, logged, in a schema of its own beside it.
        logged_schema = f"{schema}_logged"
        await pool.execute(
            f"CREATE SCHEMA {logged_schema}; "
            f"CREATE TABLE {logged_schema}.rate_windows (LIKE rate_windows INCLUDING ALL)"
        )
        logged_store = PostgresStore(with_schema(server, logged_schema), pool_size=CONCURRENCY)
        await logged_store.open()
        try:
            return await _measure(pool, logged_store.pool, count, rounds)
        finally:
            await logged_store.close()
            await pool.execute(f"DROP SCHEMA {logged_schema} CASCADE")
    finally:
        await store.close()


async def _measure(
    pool: Any, logged_pool: Any, count: int, rounds: int
) -> list[tuple[str, float, str]]:
    settings = Settings(rate_limit_per_minute=30, max_sockets_per_user=10)
    limits = PostgresLimits(settings, pool)
    logged = PostgresLimits(settings, logged_pool)
    memory = MemoryLimits(settings)
    names = itertools.count()

    def user(n: int) -> str:
        return f"user-{n % USERS}"

    async def socket(n: int) -> None:
        socket_id = f"s{next(names)}"
        assert await limits.open_socket(user(n), socket_id)
        await limits.close_socket(user(n), socket_id)

    async def clear() -> None:
        # Every round starts with empty windows, so that no user reaches the limit.
        await pool.execute("TRUNCATE rate_windows")
        await logged_pool.execute("TRUNCATE rate_windows")

    measures: dict[str, Callable[[], Awaitable[float]]] = {
        "select": lambda: per_op(count, lambda n: pool.fetchval("SELECT 1")),
        "hit": lambda: per_op(count, lambda n: limits.hit(user(n))),
        "hit-logged": lambda: per_op(count, lambda n: logged.hit(user(n))),
        "hit-memory": lambda: per_op(count, lambda n: memory.hit(user(n))),
        "select-8": lambda: per_op_concurrent(count, lambda n: pool.fetchval("SELECT 1")),
        "hit-8": lambda: per_op_concurrent(count, lambda n: limits.hit(user(n))),
        "hit-8-one-user": lambda: per_op_concurrent(count, lambda n: limits.hit("one")),
        "socket": lambda: per_op(count // 4, socket),
    }

    async def fresh(measure: Callable[[], Awaitable[float]]) -> float:
        await clear()
        return await measure()

    results = await interleaved(
        rounds, {name: (lambda m=m: fresh(m)) for name, m in measures.items()}
    )
    figure = {name: median(values) for name, values in results.items()}
    select, select8 = figure["select"], figure["select-8"]
    return [
        ("SELECT 1, one connection", select, "1 (reference)"),
        ("a message's count (UNLOGGED table)", figure["hit"], f"{figure['hit'] / select:.2f}"),
        (
            "the same on a logged table",
            figure["hit-logged"],
            f"{figure['hit-logged'] / select:.2f} (logged/unlogged "
            f"{figure['hit-logged'] / figure['hit']:.2f})",
        ),
        ("in memory (one process)", figure["hit-memory"], f"{figure['hit-memory'] / select:.3f}"),
        (f"SELECT 1, {CONCURRENCY} at once", select8, "1 (reference)"),
        (
            f"counts, {CONCURRENCY} at once, many users",
            figure["hit-8"],
            _r(figure["hit-8"], select8),
        ),
        (
            f"counts, {CONCURRENCY} at once, one user",
            figure["hit-8-one-user"],
            _r(figure["hit-8-one-user"], select8),
        ),
        ("a socket opened and closed", figure["socket"], f"{figure['socket'] / select:.2f}"),
    ]


def _r(value: float, reference: float) -> str:
    return f"{value / reference:.2f}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__)
    parser.add_argument("--url", default=os.environ.get("CHATBOT_TEST_POSTGRES_URL"))
    parser.add_argument("--count", type=int, default=2000, help="calls per measure and round")
    parser.add_argument("--rounds", type=int, default=5)
    return parser.parse_args(argv)


async def run(url: str, count: int, rounds: int) -> None:
    schema = f"bench_limits_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            rows = await measure(url, schema, count, rounds)
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()
    print("| what | µs per call | ratio to SELECT 1 |\n|---|---:|---|")
    for what, micros, ratio in rows:
        print(f"| {what} | {micros:,.1f} | {ratio} |")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.url:
        raise SystemExit("give --url postgresql://... or set CHATBOT_TEST_POSTGRES_URL")
    asyncio.run(run(args.url, args.count, args.rounds))


if __name__ == "__main__":
    main()
