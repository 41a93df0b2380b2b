"""The PostgreSQL store's tables as rows (:mod:`chatbot.stores.rows`): values go in and
out as they are (``timestamptz``, ``jsonb``); a message's search vector is made from its
content and its session's owner, as when it is written; and after a copy, each counted
key's sequence is moved past the copied ids."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from chatbot.stores.postgres import PostgresStore
from chatbot.stores.postgres_migrations import MIGRATIONS
from chatbot.stores.postgres_search import search_vector
from chatbot.stores.rows import Kind, Row, Table

_ARRAYS: dict[Kind, str] = {
    "text": "text[]",
    "int": "bigint[]",
    "time": "timestamptz[]",
    "day": "date[]",
}


async def _message_vectors(db: Any, rows: list[Row]) -> list[str]:
    """The search vector of each message: its owner's scope and its content's words."""
    session_ids = sorted({row["session_id"] for row in rows})
    owners = {
        found["id"]: found["owner"]
        for found in await db.fetch(
            "SELECT id, owner FROM sessions WHERE id = ANY($1::text[])", session_ids
        )
    }
    return [search_vector(owners[row["session_id"]], row["content"]) for row in rows]


#: Columns a table has on PostgreSQL alone: the column, the cast its value is sent with,
#: and how to make the values for rows being inserted.
DERIVED: dict[str, tuple[str, str, Callable[[Any, list[Row]], Awaitable[list[Any]]]]] = {
    "messages": ("search_vector", "::text::tsvector", _message_vectors),
}


class PostgresRows:
    """Rows in and out of a :class:`PostgresStore` (opened)."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    async def pending_migrations(self) -> list[str]:
        applied = set(await self.store.applied_migrations())
        return [name for name, _ in MIGRATIONS if name not in applied]

    async def read(self, table: Table, after: tuple[Any, ...] | None, limit: int) -> list[Row]:
        columns, key = ", ".join(table.names), ", ".join(table.key)
        if after is None:
            rows = await self.store.pool.fetch(
                f"SELECT {columns} FROM {table.name} ORDER BY {key} LIMIT $1", limit
            )
        else:
            marks = ", ".join(f"${n}" for n in range(2, len(after) + 2))
            rows = await self.store.pool.fetch(
                f"SELECT {columns} FROM {table.name} WHERE ({key}) > ({marks}) "
                f"ORDER BY {key} LIMIT $1",
                limit, *after,
            )  # fmt: skip
        return [dict(row) for row in rows]

    async def write(self, table: Table, rows: list[Row]) -> int:
        if not rows:
            return 0
        names = table.names
        key = ", ".join(table.key)
        arrays = ", ".join(
            f"${n}::{_ARRAYS[kind]}" for n, kind in enumerate(table.key_kinds, start=1)
        )
        async with self.store.db.write() as db:
            held = {
                tuple(found)
                for found in await db.fetch(
                    f"SELECT {key} FROM {table.name} "
                    f"WHERE ({key}) IN (SELECT * FROM unnest({arrays}))",
                    *([row[name] for row in rows] for name in table.key),
                )
            }
            missing = [row for row in rows if table.key_of(row) not in held]
            if not missing:
                return 0
            values = [[row[name] for name in names] for row in missing]
            marks = [f"${n}" for n in range(1, len(names) + 1)]
            if table.name in DERIVED:
                column, cast, derive = DERIVED[table.name]
                for value, derived in zip(values, await derive(db, missing), strict=True):
                    value.append(derived)
                names = [*names, column]
                marks.append(f"${len(names)}{cast}")
            await db.executemany(
                f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join(marks)})",
                values,
            )
            return len(missing)

    async def finish(self, table: Table) -> None:
        if not table.counted:
            return
        # Past every copied id, and never back below an id handed out before.
        await self.store.pool.execute(
            "SELECT setval(seq, GREATEST(coalesce(m.top, 0), "
            "coalesce(pg_sequence_last_value(seq), 0), 1)) "
            f"FROM (SELECT pg_get_serial_sequence($1, $2)::regclass AS seq) s, "
            f"(SELECT max({table.key[0]}) AS top FROM {table.name}) m",
            table.name, table.key[0],
        )  # fmt: skip
