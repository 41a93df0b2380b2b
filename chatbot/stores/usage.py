"""The usage ledger's part of the store interface: token totals per user, UTC day, backend
and model, and per-user quota overrides.

The ledger is written in the transaction that stores a reply with usage, never computed
from the messages: deleting a session (or a message) does not give tokens back, and a
quota check reads a handful of rows, not a user's history.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

GroupBy = Literal["day", "backend", "model"]
GROUPS: tuple[GroupBy, ...] = ("day", "backend", "model")


@dataclass(frozen=True)
class Quota:
    """Tokens (input and output together) a user may use per UTC day and per UTC month;
    ``None``: no limit for that period."""

    tokens_per_day: int | None = None
    tokens_per_month: int | None = None


@dataclass(frozen=True)
class UsageRow:
    """One group of a user's totals. ``day`` is set when grouped by day; ``backend`` when
    grouped by backend or model; ``model`` when grouped by model (``None`` also for a reply
    whose backend named no model)."""

    input_tokens: int
    output_tokens: int
    replies: int
    day: date | None = None
    backend: str | None = None
    model: str | None = None


@dataclass(frozen=True)
class QuotaState:
    """What a quota check needs, read in one query: the user's override (``None``: none is
    set) and the tokens they used on the day asked about and in its month so far."""

    override: Quota | None
    today: int
    this_month: int


def ledger_tokens(usage: dict[str, Any] | None) -> tuple[int, int] | None:
    """The input and output tokens a reply's usage adds to the ledger; ``None`` when it
    reports neither (nothing is written then)."""
    if not usage:
        return None
    counts = []
    for key in ("input_tokens", "output_tokens"):
        value = usage.get(key)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        counts.append(value if ok else None)
    if counts == [None, None]:
        return None
    return counts[0] or 0, counts[1] or 0


class UsageLedger(abc.ABC):
    """The store's ledger of tokens used, and the quota overrides. Every method is scoped
    by the user it names."""

    @abc.abstractmethod
    async def usage(
        self, owner: str, *, start: date, end: date, group_by: GroupBy
    ) -> list[UsageRow]:
        """``owner``'s totals from the UTC day ``start`` to ``end``, both included, one row
        per group that used anything: by day (oldest first), by backend, or by backend and
        model (by name)."""

    @abc.abstractmethod
    async def quota_state(self, owner: str, day: date, *, applies: bool) -> QuotaState:
        """``owner``'s override and the tokens used on ``day`` and in its month up to it, in
        one indexed query. With ``applies`` false (no quota but an override could apply)
        the totals are read only if an override is set; they are 0 otherwise."""

    @abc.abstractmethod
    async def set_quota(self, user: str, quota: Quota) -> None:
        """Give ``user`` this quota, in place of any other (a period left ``None`` has no
        limit: ``Quota()`` exempts the user from every quota)."""

    @abc.abstractmethod
    async def get_quota(self, user: str) -> Quota | None:
        """``user``'s override, ``None`` if none is set."""

    @abc.abstractmethod
    async def clear_quota(self, user: str) -> bool:
        """Remove ``user``'s override; whether there was one."""
