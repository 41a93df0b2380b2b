"""Token quotas: whose quota applies to a user, and whether they have used it up.

A user's quota is the first of these that exists, whole (a period it leaves out has no
limit):

1. the operator's override for that user (``chatbot quota set``);
2. the plan their token carries in the ``CHATBOT_QUOTA_CLAIM`` claim;
3. the server's ``CHATBOT_QUOTA_TOKENS_PER_DAY`` and ``CHATBOT_QUOTA_TOKENS_PER_MONTH``.

A quota counts input and output tokens together, per UTC day and per UTC month, as the
store's ledger holds them. The check reads the ledger, so it holds across every process
that shares the database; replies still being generated when it runs are not in the ledger
yet, and may take a user past the quota by what they use.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, Literal

from chatbot.settings import Settings
from chatbot.stores.base import SessionStore
from chatbot.stores.usage import Quota

Period = Literal["day", "month"]
#: The keys of a plan in a token's claim.
PLAN_KEYS = ("tokens_per_day", "tokens_per_month")


def default_quota(settings: Settings) -> Quota | None:
    """The server's quota, ``None`` when it sets none."""
    if settings.quota_tokens_per_day is None and settings.quota_tokens_per_month is None:
        return None
    return Quota(settings.quota_tokens_per_day, settings.quota_tokens_per_month)


def plan_from_claim(value: Any) -> Quota | None:
    """The quota a token's claim carries: an object ``{"tokens_per_day": N,
    "tokens_per_month": M}`` (either may be missing or null: no limit), or a string holding
    one (some providers' custom attributes are strings). ``None`` (the claim is absent or
    null): the token carries no plan. ``ValueError`` saying what is wrong otherwise."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise ValueError("a string that is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError("not an object")
    limits: list[int | None] = []
    for key in PLAN_KEYS:
        limit = value.get(key)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise ValueError(f"{key} is not a whole number >= 0")
        limits.append(limit)
    return Quota(*limits)


def effective_quota(
    override: Quota | None, plan: Quota | None, default: Quota | None
) -> Quota | None:
    """The quota that applies: the override, else the token's plan, else the server's."""
    for quota in (override, plan, default):
        if quota is not None:
            return quota
    return None


def next_day(now: datetime) -> datetime:
    """The next UTC midnight after ``now``: when a daily quota resets."""
    return datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time(), UTC)


def next_month(now: datetime) -> datetime:
    """The first of the next UTC month, at midnight: when a monthly quota resets."""
    first = now.astimezone(UTC).date().replace(day=1)
    return datetime.combine((first + timedelta(days=32)).replace(day=1), time(), UTC)


@dataclass(frozen=True)
class Exhausted:
    """A quota used up: which period's, its limit, and when sending again can work."""

    period: Period
    limit: int
    #: When the quota resets; ``None`` for a limit of 0, which no reset lifts.
    resets_at: datetime | None
    #: Whole seconds from the check to ``resets_at``.
    retry_after: int | None

    @property
    def message(self) -> str:
        """The error frame's message."""
        per = "a day" if self.period == "day" else "a month"
        if self.resets_at is None:
            return (
                f"your quota allows no tokens {per}; the message was not stored. Ask the "
                "operator of this server for a quota"
            )
        when = f"at {self.resets_at:%H:%M} UTC"
        if self.period == "month":
            when = f"on {self.resets_at:%Y-%m-%d} {when}"
        return (
            f"you have used your quota of {self.limit} tokens {per}; the message was not "
            f"stored, send it again after the quota resets {when}"
        )


def exhausted(quota: Quota, today: int, this_month: int, now: datetime) -> Exhausted | None:
    """Which limit of ``quota`` the tokens used already reach, if any. When both do, the
    month's: the day's reset would not lift it."""
    found: Exhausted | None = None
    checks: tuple[tuple[Period, int | None, int, datetime], ...] = (
        ("day", quota.tokens_per_day, today, next_day(now)),
        ("month", quota.tokens_per_month, this_month, next_month(now)),
    )
    for period, limit, used, resets_at in checks:
        if limit is None or used < limit:
            continue
        if limit == 0:
            return Exhausted(period, 0, None, None)
        wait = max(1, math.ceil((resets_at - now).total_seconds()))
        found = Exhausted(period, limit, resets_at, wait)
    return found


class QuotaCheck:
    """Checks a user's quota before their message reaches a model: one indexed query of
    the store, and none of the ledger when no quota could apply."""

    def __init__(self, store: SessionStore, default: Quota | None) -> None:
        self.store = store
        self.default = default

    async def __call__(
        self, owner: str, plan: Quota | None, now: datetime | None = None
    ) -> Exhausted | None:
        """What ``owner`` has used up, if anything; ``plan`` is their token's."""
        now = now or datetime.now(UTC)
        elsewhere = plan if plan is not None else self.default
        state = await self.store.quota_state(
            owner, now.astimezone(UTC).date(), applies=elsewhere is not None
        )
        quota = effective_quota(state.override, plan, self.default)
        if quota is None:
            return None
        return exhausted(quota, state.today, state.this_month, now)
