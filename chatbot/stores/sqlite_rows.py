"""The SQLite store's tables as rows (:mod:`chatbot.stores.rows`): timestamps are stored as
ISO 8601 text and JSON as text; the search index follows the inserted messages by itself
(its triggers), and AUTOINCREMENT moves past inserted ids by itself."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, datetime
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
    if kind == "day":
        return value.isoformat()
    if kind == "json":
        return json.dumps(value)
    return value


def _read(kind: Kind, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return datetime.fromisoformat(value)
    if kind == "day":
        return date.fromisoformat(value)
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

    async def read(self, table: Table, after: tuple[Any, ...] | None, limit: int) -> list[Row]:
        key = ", ".join(table.key)
        query = f"SELECT {', '.join(table.names)} FROM {table.name}"
        params: tuple[Any, ...] = ()
        if after is not None:
            query += f" WHERE ({key}) > ({', '.join('?' * len(after))})"
            kinds = table.key_kinds
            params = tuple(_stored(kind, value) for kind, value in zip(kinds, after, strict=True))
        query += f" ORDER BY {key} LIMIT ?"

        def fetch(db: sqlite3.Connection) -> list[Row]:
            rows = db.execute(query, (*params, limit)).fetchall()
            return [{n: _read(k, row[n]) for n, k in table.columns} for row in rows]

        return await self.store.db.read(fetch)

    async def write(self, table: Table, rows: list[Row]) -> int:
        key = ", ".join(table.key)
        one = "(" + ", ".join("?" * len(table.key)) + ")"
        kinds = table.key_kinds
        keys = [
            _stored(kind, value)
            for row in rows
            for kind, value in zip(kinds, table.key_of(row), strict=True)
        ]
        marks = ", ".join("?" * len(table.columns))

        def insert(db: sqlite3.Connection) -> int:
            held = {
                tuple(_read(kind, value) for kind, value in zip(kinds, found, strict=True))
                for found in db.execute(
                    f"SELECT {key} FROM {table.name} "
                    f"WHERE ({key}) IN (VALUES {', '.join([one] * len(rows))})",
                    keys,
                ).fetchall()
            }
            missing = [
                tuple(_stored(k, row[n]) for n, k in table.columns)
                for row in rows
                if table.key_of(row) not in held
            ]
            db.executemany(
                f"INSERT INTO {table.name} ({', '.join(table.names)}) VALUES ({marks})", missing
            )
            return len(missing)

        return await self.store.db.write(insert) if rows else 0

    async def finish(self, table: Table) -> None:
        """Nothing to do: an explicit id past AUTOINCREMENT's counter moves it."""
