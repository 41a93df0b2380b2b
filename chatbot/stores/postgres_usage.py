"""The PostgreSQL store's usage ledger and quota overrides (see :mod:`chatbot.stores.usage`),
the mirror of :mod:`chatbot.stores.sqlite_usage`.

:func:`record` runs inside the transaction that stores a reply: the reply and its tokens
are committed together or not at all. Concurrent replies of one user on one day add to the
same row through ``INSERT ... ON CONFLICT DO UPDATE``, which takes the row's lock: no count
is lost between processes. A day is a ``date`` (UTC), so that a month of a user is one range
of the primary key ``(owner, day, backend, model)``. A reply without a backend or a model
is filed under ``''``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from chatbot.stores.usage import (
    GroupBy,
    Quota,
    QuotaState,
    UsageLedger,
    UsageRow,
    ledger_tokens,
)

#: asyncpg's connection and record; untyped (the driver ships no annotations).
Connection = Any
Record = Any

_GROUPS: dict[GroupBy, str] = {
    "day": "day",
    "backend": "backend",
    "model": "backend, model",
}


def day_of(when: datetime) -> date:
    """The UTC day of a moment, as the ledger files it."""
    return when.astimezone(UTC).date()


async def record(
    db: Connection,
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
    await db.execute(
        "INSERT INTO usage_totals "
        "(owner, day, backend, model, input_tokens, output_tokens, replies) "
        "VALUES ($1, $2, $3, $4, $5, $6, 1) "
        "ON CONFLICT (owner, day, backend, model) DO UPDATE SET "
        "input_tokens = usage_totals.input_tokens + excluded.input_tokens, "
        "output_tokens = usage_totals.output_tokens + excluded.output_tokens, "
        "replies = usage_totals.replies + 1",
        owner, day_of(when), backend or "", model or "", *tokens,
    )  # fmt: skip


def _row(group_by: GroupBy, row: Record) -> UsageRow:
    counts = (row["input_tokens"], row["output_tokens"], row["replies"])
    if group_by == "day":
        return UsageRow(*counts, day=row["day"])
    return UsageRow(
        *counts,
        backend=row["backend"] or None,
        model=(row["model"] or None) if group_by == "model" else None,
    )


class PostgresUsage(UsageLedger):
    """The ledger's methods of :class:`~chatbot.stores.postgres.PostgresStore`."""

    @property
    def pool(self) -> Any:
        raise NotImplementedError  # the store's asyncpg pool

    async def usage(
        self, owner: str, *, start: date, end: date, group_by: GroupBy
    ) -> list[UsageRow]:
        columns = _GROUPS[group_by]
        rows = await self.pool.fetch(
            f"SELECT {columns}, sum(input_tokens)::bigint AS input_tokens, "
            "sum(output_tokens)::bigint AS output_tokens, sum(replies)::bigint AS replies "
            "FROM usage_totals WHERE owner = $1 AND day BETWEEN $2 AND $3 "
            f"GROUP BY {columns} ORDER BY {columns}",
            owner, start, end,
        )  # fmt: skip
        return [_row(group_by, row) for row in rows]

    async def quota_state(self, owner: str, day: date, *, applies: bool) -> QuotaState:
        row = await self.pool.fetchrow(
            "WITH o AS (SELECT tokens_per_day, tokens_per_month FROM quota_overrides "
            "WHERE user_id = $1) "
            "SELECT EXISTS (SELECT 1 FROM o) AS overridden, "
            "(SELECT tokens_per_day FROM o) AS per_day, "
            "(SELECT tokens_per_month FROM o) AS per_month, "
            "coalesce(sum(input_tokens + output_tokens) FILTER (WHERE day = $2), 0)::bigint "
            "AS today, "
            "coalesce(sum(input_tokens + output_tokens), 0)::bigint AS this_month "
            "FROM usage_totals WHERE owner = $1 AND day BETWEEN $3 AND $2 "
            "AND ($4 OR EXISTS (SELECT 1 FROM o))",
            owner, day, day.replace(day=1), applies,
        )  # fmt: skip
        override = Quota(row["per_day"], row["per_month"]) if row["overridden"] else None
        return QuotaState(override, row["today"], row["this_month"])

    async def set_quota(self, user: str, quota: Quota) -> None:
        await self.pool.execute(
            "INSERT INTO quota_overrides (user_id, tokens_per_day, tokens_per_month, "
            "updated_at) VALUES ($1, $2, $3, now()) "
            "ON CONFLICT (user_id) DO UPDATE SET tokens_per_day = excluded.tokens_per_day, "
            "tokens_per_month = excluded.tokens_per_month, updated_at = excluded.updated_at",
            user, quota.tokens_per_day, quota.tokens_per_month,
        )  # fmt: skip

    async def get_quota(self, user: str) -> Quota | None:
        row = await self.pool.fetchrow(
            "SELECT tokens_per_day, tokens_per_month FROM quota_overrides WHERE user_id = $1",
            user,
        )
        return None if row is None else Quota(row["tokens_per_day"], row["tokens_per_month"])

    async def clear_quota(self, user: str) -> bool:
        deleted = await self.pool.fetchval(
            "DELETE FROM quota_overrides WHERE user_id = $1 RETURNING true", user
        )
        return deleted is not None
