"""The SQLite store's usage ledger and quota overrides (see :mod:`chatbot.stores.usage`).

:func:`record` runs inside the transaction that stores a reply: the reply and its tokens
are committed together or not at all. A day is a UTC date written ``YYYY-MM-DD``, so that
text order is date order and a month is a range of the primary key
``(owner, day, backend, model)``. A reply without a backend or a model is filed under ``''``.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime
from typing import Any

from chatbot.stores.sqlite_db import Database
from chatbot.stores.usage import (
    GroupBy,
    Quota,
    QuotaState,
    UsageLedger,
    UsageRow,
    ledger_tokens,
)

_GROUPS: dict[GroupBy, str] = {
    "day": "day",
    "backend": "backend",
    "model": "backend, model",
}


def day_of(when: datetime) -> str:
    """The UTC day of a moment, as the ledger files it."""
    return when.astimezone(UTC).date().isoformat()


def record(
    db: sqlite3.Connection,
    owner: str,
    when: datetime,
    backend: str | None,
    model: str | None,
    usage: dict[str, Any] | None,
) -> None:
    """Add a stored reply's tokens to ``owner``'s totals of its day, backend and model."""
    tokens = ledger_tokens(usage)
    if tokens is None:
        return
    db.execute(
        "INSERT INTO usage_totals "
        "(owner, day, backend, model, input_tokens, output_tokens, replies) "
        "VALUES (?, ?, ?, ?, ?, ?, 1) "
        "ON CONFLICT (owner, day, backend, model) DO UPDATE SET "
        "input_tokens = input_tokens + excluded.input_tokens, "
        "output_tokens = output_tokens + excluded.output_tokens, "
        "replies = replies + 1",
        (owner, day_of(when), backend or "", model or "", *tokens),
    )


def _row(group_by: GroupBy, row: sqlite3.Row) -> UsageRow:
    counts = (row["input_tokens"], row["output_tokens"], row["replies"])
    if group_by == "day":
        return UsageRow(*counts, day=date.fromisoformat(row["day"]))
    return UsageRow(
        *counts,
        backend=row["backend"] or None,
        model=(row["model"] or None) if group_by == "model" else None,
    )


class SQLiteUsage(UsageLedger):
    """The ledger's methods of :class:`~chatbot.stores.sqlite.SQLiteStore`."""

    db: Database

    async def usage(
        self, owner: str, *, start: date, end: date, group_by: GroupBy
    ) -> list[UsageRow]:
        columns = _GROUPS[group_by]
        query = (
            f"SELECT {columns}, SUM(input_tokens) AS input_tokens, "
            "SUM(output_tokens) AS output_tokens, SUM(replies) AS replies "
            "FROM usage_totals WHERE owner = ? AND day BETWEEN ? AND ? "
            f"GROUP BY {columns} ORDER BY {columns}"
        )
        params = (owner, start.isoformat(), end.isoformat())
        rows = await self.db.read(lambda db: db.execute(query, params).fetchall())
        return [_row(group_by, row) for row in rows]

    async def quota_state(self, owner: str, day: date, *, applies: bool) -> QuotaState:
        def read(db: sqlite3.Connection) -> QuotaState:
            row = db.execute(
                "WITH o AS (SELECT tokens_per_day, tokens_per_month FROM quota_overrides "
                "WHERE user_id = ?) "
                "SELECT EXISTS (SELECT 1 FROM o), (SELECT tokens_per_day FROM o), "
                "(SELECT tokens_per_month FROM o), "
                "COALESCE(SUM(CASE WHEN day = ? THEN input_tokens + output_tokens END), 0), "
                "COALESCE(SUM(input_tokens + output_tokens), 0) "
                "FROM usage_totals WHERE owner = ? AND day BETWEEN ? AND ? "
                "AND (? OR EXISTS (SELECT 1 FROM o))",
                (
                    owner,
                    day.isoformat(),
                    owner,
                    day.replace(day=1).isoformat(),
                    day.isoformat(),
                    applies,
                ),
            ).fetchone()
            overridden, per_day, per_month, today, month = row
            override = Quota(per_day, per_month) if overridden else None
            return QuotaState(override, today, month)

        return await self.db.read(read)

    async def set_quota(self, user: str, quota: Quota) -> None:
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        await self.db.write(
            lambda db: db.execute(
                "INSERT INTO quota_overrides "
                "(user_id, tokens_per_day, tokens_per_month, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (user_id) DO UPDATE SET "
                "tokens_per_day = excluded.tokens_per_day, "
                "tokens_per_month = excluded.tokens_per_month, updated_at = excluded.updated_at",
                (user, quota.tokens_per_day, quota.tokens_per_month, now),
            )
        )

    async def get_quota(self, user: str) -> Quota | None:
        def get(db: sqlite3.Connection) -> Quota | None:
            row = db.execute(
                "SELECT tokens_per_day, tokens_per_month FROM quota_overrides WHERE user_id = ?",
                (user,),
            ).fetchone()
            return None if row is None else Quota(row[0], row[1])

        return await self.db.read(get)

    async def clear_quota(self, user: str) -> bool:
        def clear(db: sqlite3.Connection) -> bool:
            cursor = db.execute("DELETE FROM quota_overrides WHERE user_id = ?", (user,))
            return cursor.rowcount > 0

        return await self.db.write(clear)
