"""``GET /api/usage``: the caller's token totals from the ledger, per UTC day, backend or
model, and the quota that applies to them."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatbot.api import _authenticate, _route
from chatbot.errors import InvalidRequest
from chatbot.quotas import effective_quota
from chatbot.stores.usage import GROUPS, GroupBy, UsageRow

#: The most days one request may cover (both ends included): a year, leap or not.
MAX_RANGE_DAYS = 366
#: Without ``from``, the range is this many days ending at ``to``.
DEFAULT_RANGE_DAYS = 30
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _day(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        if _DATE.fullmatch(raw) is None:
            raise ValueError(raw)
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(
            f"invalid_{name}", f"{name} must be a date written YYYY-MM-DD (a UTC day)"
        ) from None


def usage_range(start: date | None, end: date | None, today: date) -> tuple[date, date]:
    """The days a request covers: ``to`` defaults to today (UTC), ``from`` to the 30 days
    ending at ``to``; ``InvalidRequest`` for a range that is backwards or too long."""
    end = end if end is not None else today
    if start is None:
        before = (end - date.min).days
        start = end - timedelta(days=min(DEFAULT_RANGE_DAYS - 1, before))
    if start > end:
        raise InvalidRequest(
            "invalid_range", f"from ({start}) is after to ({end}); give from <= to"
        )
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise InvalidRequest(
            "invalid_range",
            f"from {start} to {end} is more than {MAX_RANGE_DAYS} days; ask for a year "
            "at most at a time",
        )
    return start, end


def _group_by(request: Request) -> GroupBy:
    raw = request.query_params.get("group_by", "day")
    for group in GROUPS:
        if raw == group:
            return group
    raise InvalidRequest("invalid_group_by", "group_by must be day, backend or model")


def _counts(input_tokens: int, output_tokens: int, replies: int) -> dict[str, int]:
    return {"input_tokens": input_tokens, "output_tokens": output_tokens, "replies": replies}


def group_json(row: UsageRow, group_by: GroupBy) -> dict[str, Any]:
    """One group as the API sends it: its key fields, then its counts."""
    keys: dict[str, Any]
    if group_by == "day":
        assert row.day is not None
        keys = {"day": row.day.isoformat()}
    elif group_by == "backend":
        keys = {"backend": row.backend}
    else:
        keys = {"backend": row.backend, "model": row.model}
    return {**keys, **_counts(row.input_tokens, row.output_tokens, row.replies)}


async def usage(request: Request) -> Response:
    runtime, identity = await _authenticate(request)
    now = datetime.now(UTC)
    start, end = usage_range(_day(request, "from"), _day(request, "to"), now.date())
    group_by = _group_by(request)
    store, owner = runtime.store, identity.user_id
    rows = await store.usage(owner, start=start, end=end, group_by=group_by)
    default = runtime.workers.quota.default
    state = await store.quota_state(
        owner, now.date(), applies=identity.plan is not None or default is not None
    )
    quota = effective_quota(state.override, identity.plan, default)
    return JSONResponse(
        {
            "from": start.isoformat(),
            "to": end.isoformat(),
            "group_by": group_by,
            "groups": [group_json(row, group_by) for row in rows],
            "total": _counts(
                sum(row.input_tokens for row in rows),
                sum(row.output_tokens for row in rows),
                sum(row.replies for row in rows),
            ),
            "quota": None
            if quota is None
            else {
                "tokens_per_day": quota.tokens_per_day,
                "tokens_per_month": quota.tokens_per_month,
                "used_today": state.today,
                "used_this_month": state.this_month,
            },
        }
    )


routes = [_route("/api/usage", GET=usage)]
