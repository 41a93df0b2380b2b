"""``chatbot quota set|show|clear``: an operator's quota for one user, in the database of
``CHATBOT_DATABASE_URL``, whether a server runs on it or not. A running server applies a
change from the next message on: the override is read with every quota check."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from chatbot.cli_transfer import _with_store, check_user
from chatbot.errors import ConfigError
from chatbot.quotas import default_quota
from chatbot.settings import Settings
from chatbot.stores.base import SessionStore
from chatbot.stores.usage import Quota

PRECEDENCE = "it comes before any plan in their token and before the server's quota"


def describe(quota: Quota) -> str:
    """A quota in words: ``1000 tokens a day, no limit a month``."""
    parts = []
    for limit, per in ((quota.tokens_per_day, "a day"), (quota.tokens_per_month, "a month")):
        parts.append(f"no limit {per}" if limit is None else f"{limit} tokens {per}")
    return ", ".join(parts)


def quota_from_args(args: argparse.Namespace) -> Quota:
    """The override ``quota set`` was asked for."""
    given = args.per_day is not None or args.per_month is not None
    if args.unlimited and given:
        raise ConfigError("give --unlimited, or --per-day and --per-month, not both")
    if not args.unlimited and not given:
        raise ConfigError(
            "give --per-day N, --per-month N or both (a period left out has no limit), or "
            "--unlimited to exempt the user from every quota"
        )
    return Quota(args.per_day, args.per_month)


async def set_quota(settings: Settings, user: str, quota: Quota) -> str:
    async def store_it(store: SessionStore) -> None:
        await store.set_quota(user, quota)

    await _with_store(settings, store_it)
    return f"quota of {user}: {describe(quota)}; {PRECEDENCE}"


async def clear_quota(settings: Settings, user: str) -> str:
    async def clear(store: SessionStore) -> bool:
        return await store.clear_quota(user)

    if not await _with_store(settings, clear):
        return f"{user} has no override; nothing changed"
    return f"removed the override of {user}; {_without_override(settings)}"


async def show_quota(settings: Settings, user: str) -> str:
    today = datetime.now(UTC).date()

    async def read(store: SessionStore) -> tuple[Quota | None, int, int]:
        override = await store.get_quota(user)
        state = await store.quota_state(user, today, applies=True)
        return override, state.today, state.this_month

    override, used_today, used_month = await _with_store(settings, read)
    if override is not None:
        quota = f"quota of {user}: {describe(override)} (an override of `chatbot quota set`)"
    else:
        quota = f"{user} has no override; {_without_override(settings)}"
    return f"{quota}\nused: {used_today} tokens today, {used_month} this month (UTC)"


def _without_override(settings: Settings) -> str:
    """What applies to a user without an override."""
    default = default_quota(settings)
    server = "the server sets no quota"
    if default is not None:
        server = f"the server's quota applies: {describe(default)}"
    if settings.quota_claim is None:
        return server
    claim = settings.quota_claim
    return f"the plan in their token's {claim!r} claim applies if it carries one, else {server}"


async def run(args: argparse.Namespace) -> str:
    """Carry out ``chatbot quota ACTION``; the line(s) to print."""
    user = check_user(args.user)
    quota = quota_from_args(args) if args.action == "set" else None
    settings = Settings.from_env(with_backends=False)
    if quota is not None:
        return await set_quota(settings, user, quota)
    if args.action == "show":
        return await show_quota(settings, user)
    return await clear_quota(settings, user)
