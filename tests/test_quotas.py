"""Whose quota applies, what a token's plan claim may hold, and when a used-up quota
resets: the pure part of :mod:`chatbot.quotas`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from chatbot.quotas import (
    Exhausted,
    default_quota,
    effective_quota,
    exhausted,
    next_day,
    next_month,
    plan_from_claim,
)
from chatbot.settings import Settings
from chatbot.stores.usage import Quota
from tests.conftest import SECRET

NOW = datetime(2026, 5, 14, 21, 0, 0, 250_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("claim", "plan"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param({}, Quota(), id="empty-object: no limit"),
        pytest.param({"tokens_per_day": 5}, Quota(5, None), id="a-day"),
        pytest.param(
            {"tokens_per_day": None, "tokens_per_month": 0, "tier": "free"},
            Quota(None, 0),
            id="null-zero-and-other-keys",
        ),
        pytest.param('{"tokens_per_month": 9}', Quota(None, 9), id="a-string-holding-json"),
    ],
)
def test_a_plan_claim(claim: Any, plan: Quota | None) -> None:
    assert plan_from_claim(claim) == plan


@pytest.mark.parametrize(
    ("claim", "why"),
    [
        (5, "not an object"),
        ([5], "not an object"),
        ("free", "a string that is not JSON"),
        ('"free"', "not an object"),
        ({"tokens_per_day": -1}, "tokens_per_day is not a whole number >= 0"),
        ({"tokens_per_month": 1.5}, "tokens_per_month is not a whole number >= 0"),
        ({"tokens_per_day": True}, "tokens_per_day is not a whole number >= 0"),
        ({"tokens_per_day": "5"}, "tokens_per_day is not a whole number >= 0"),
    ],
)
def test_a_malformed_plan_claim_says_what_is_wrong(claim: Any, why: str) -> None:
    with pytest.raises(ValueError, match=f"^{why}$"):
        plan_from_claim(claim)


def test_the_override_comes_first_then_the_plan_then_the_server() -> None:
    override, plan, server = Quota(1, None), Quota(None, 2), Quota(3, 3)
    assert effective_quota(override, plan, server) == override
    assert effective_quota(None, plan, server) == plan
    assert effective_quota(None, None, server) == server
    assert effective_quota(None, None, None) is None
    # An override without any limit exempts the user, whatever the plan and the server say.
    assert effective_quota(Quota(), plan, server) == Quota()


def test_the_server_quota_comes_from_the_settings() -> None:
    base = Settings(jwt_secret=SECRET)  # type: ignore[arg-type]
    assert default_quota(base) is None
    settings = Settings(jwt_secret=SECRET, quota_tokens_per_month=50)  # type: ignore[arg-type]
    assert default_quota(settings) == Quota(None, 50)


def test_quotas_reset_at_utc_midnight_and_on_the_first_of_the_month() -> None:
    assert next_day(NOW) == datetime(2026, 5, 15, tzinfo=UTC)
    assert next_month(NOW) == datetime(2026, 6, 1, tzinfo=UTC)
    december = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert next_day(december) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_month(december) == datetime(2027, 1, 1, tzinfo=UTC)
    # A moment given in another zone is the same UTC moment.
    east = NOW.astimezone(timezone(timedelta(hours=5)))  # 02:00 on the 15th there
    assert next_day(east) == datetime(2026, 5, 15, tzinfo=UTC)
    assert next_month(datetime(2026, 1, 31, 12, tzinfo=UTC)) == datetime(2026, 2, 1, tzinfo=UTC)


def test_a_quota_is_used_up_at_its_limit_with_whole_seconds_to_its_reset() -> None:
    quota = Quota(tokens_per_day=100, tokens_per_month=1000)
    assert exhausted(quota, 99, 500, NOW) is None
    # 2 h 59 min 59.75 s to midnight: 10800 whole seconds.
    assert exhausted(quota, 100, 500, NOW) == Exhausted(
        "day", 100, datetime(2026, 5, 15, tzinfo=UTC), 10_800
    )
    # The month's quota used up: a new day would not lift it.
    month = exhausted(quota, 100, 1000, NOW)
    assert month == Exhausted("month", 1000, datetime(2026, 6, 1, tzinfo=UTC), 1_479_600)
    assert exhausted(quota, 0, 1200, NOW) == month
    assert exhausted(Quota(), 10**9, 10**9, NOW) is None


def test_a_limit_of_zero_has_no_reset() -> None:
    assert exhausted(Quota(0, None), 0, 0, NOW) == Exhausted("day", 0, None, None)
    assert exhausted(Quota(10, 0), 0, 0, NOW) == Exhausted("month", 0, None, None)


def test_the_error_message_says_which_quota_and_when_it_resets() -> None:
    day = exhausted(Quota(100, None), 120, 120, NOW)
    month = exhausted(Quota(None, 5000), 0, 5000, NOW)
    zero = exhausted(Quota(0, None), 0, 0, NOW)
    assert day is not None and month is not None and zero is not None
    assert day.message == (
        "you have used your quota of 100 tokens a day; the message was not stored, send it "
        "again after the quota resets at 00:00 UTC"
    )
    assert month.message == (
        "you have used your quota of 5000 tokens a month; the message was not stored, send "
        "it again after the quota resets on 2026-06-01 at 00:00 UTC"
    )
    assert zero.message == (
        "your quota allows no tokens a day; the message was not stored. Ask the operator of "
        "this server for a quota"
    )
