"""The SQLite store's tables as rows (:mod:`chatbot.stores.rows`): timestamps are stored as
ISO 8601 text and JSON as text; the search index follows the inserted messages by itself
(its triggers), and AUTOINCREMENT moves past inserted ids by itself."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from chatbot.stores import sqlite_sql as sql
from chatbot.stores.rows import Kind, Row, Table
from chatbot.stores.sqlite import SQLiteStore
from chatbot.stores.sqlite_migrations import MIGRATIONS


def _stored(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return sql.stamp(value)
    if kind == "json":
        return json.dumps(value)
    return value


def _read(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return datetime.fromisoformat(value)
    if kind == "json":
        return json.loads(value)
    return value


class SQLiteRows:
    """Rows in and out of a :class:`SQLiteStore` (opened)."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store

    async def pending_migrations(self) -> list[str]:
        applied = set(await self.store.applied_migrations())
        return [name for name, _ in MIGRATIONS if name not in applied]

    async def read(self, table: Table, after: Any, limit: int) -> list[Row]:
        query = f"SELECT {', '.join(table.names)} FROM {table.name}"
        params: tuple[Any, ...] = ()
        if after is not None:
            query += f" WHERE {table.key} > ?"
            params = (after,)
        query += f" ORDER BY {table.key} LIMIT ?"

        def fetch(db: sqlite3.Connection) -> list[Row]:
            rows = db.execute(query, (*params, limit)).fetchall()
            return [{n: _read(k, row[n]) for n, k in table.columns} for row in rows]

        return await self.store.db.read(fetch)

    async def write(self, table: Table, rows: list[Row]) -> int:
        keys = [row[table.key] for row in rows]
        marks = ", ".join("?" * len(table.columns))

        def insert(db: sqlite3.Connection) -> int:
            held = {
                found[0]
                for found in db.execute(
                    f"SELECT {table.key} FROM {table.name} "
                    f"WHERE {table.key} IN ({', '.join('?' * len(keys))})",
                    keys,
                ).fetchall()
            }
            missing = [
                tuple(_stored(k, row[n]) for n, k in table.columns)
                for row in rows
                if row[table.key] not in held
            ]
            db.executemany(
                f"INSERT INTO {table.name} ({', '.join(table.names)}) VALUES ({marks})", missing
            )
            return len(missing)

        return await self.store.db.write(insert) if rows else 0

    async def finish(self, table: Table) -> None:
        """Nothing to do: an explicit id past AUTOINCREMENT's counter moves it."""
