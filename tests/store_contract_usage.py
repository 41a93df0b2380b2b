"""The contract of a session store's usage ledger and quota overrides. Mixed into
:class:`tests.store_contract.StoreContract` by each implementation, which also supplies
:meth:`UsageContract.backdate` (the ledger files a reply under the day it is stored, and
only the database itself can make that day an earlier one)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from chatbot.errors import DuplicateReply, MessageNotFound, NotFound
from chatbot.stores.base import Message
from chatbot.stores.usage import Quota, QuotaState, UsageRow
from tests.store_contract import StoreHarness

WIDE = {"start": date(2000, 1, 1), "end": date(2100, 1, 1)}


def _today() -> date:
    return datetime.now(UTC).date()


def _question(store: StoreHarness, owner: str, sid: str, text: str = "q") -> Message:
    return store.add_user_message(owner, sid, content=text).message  # type: ignore[no-any-return]


def _reply(
    store: StoreHarness,
    owner: str,
    sid: str,
    usage: dict[str, Any] | None,
    *,
    backend: str | None = "echo",
    model: str | None = "echo",
) -> Message:
    question = _question(store, owner, sid)
    return store.add_reply(  # type: ignore[no-any-return]
        owner, sid, reply_to=question.id, content="a", status="complete",
        backend=backend, model=model, usage=usage,
    )  # fmt: skip


def _totals(store: StoreHarness, owner: str) -> tuple[int, int, int]:
    """``owner``'s input tokens, output tokens and replies, all time."""
    rows = store.usage(owner, group_by="backend", **WIDE)
    return (
        sum(r.input_tokens for r in rows),
        sum(r.output_tokens for r in rows),
        sum(r.replies for r in rows),
    )


class UsageContract:
    def backdate(self, store: StoreHarness, owner: str, days: int) -> None:
        """Move every ledger row of ``owner`` ``days`` days into the past."""
        raise NotImplementedError

    # -- the ledger -----------------------------------------------------------------------

    def test_replies_add_their_tokens_to_the_day_they_are_stored(self, store: StoreHarness) -> None:
        before = _today()
        sid = store.create_session("alice", backend="echo").id
        _reply(store, "alice", sid, {"input_tokens": 3, "output_tokens": 5})
        _reply(store, "alice", sid, {"input_tokens": 10, "output_tokens": 1})
        after = _today()

        rows = store.usage("alice", group_by="day", **WIDE)
        assert len(rows) == 1
        assert rows[0].day in (before, after)
        assert rows[0] == UsageRow(13, 6, 2, day=rows[0].day)

    def test_a_reply_without_usage_adds_nothing_and_one_count_is_enough(
        self, store: StoreHarness
    ) -> None:
        sid = store.create_session("alice", backend="echo").id
        _reply(store, "alice", sid, None)
        _reply(store, "alice", sid, {})
        _reply(store, "alice", sid, {"cache_read_tokens": 9})
        assert store.usage("alice", group_by="day", **WIDE) == []
        _reply(store, "alice", sid, {"output_tokens": 4})
        _reply(store, "alice", sid, {"input_tokens": 2, "output_tokens": -1})
        assert _totals(store, "alice") == (2, 4, 2)

    def test_stored_user_messages_and_assistant_messages_count_as_the_role_says(
        self, store: StoreHarness
    ) -> None:
        sid = store.create_session("alice", backend="echo").id
        store.add_message("alice", sid, role="user", content="q", usage={"input_tokens": 100})
        store.add_message(
            "alice", sid, role="assistant", content="a", backend="echo", model="echo",
            usage={"input_tokens": 1, "output_tokens": 2},
        )  # fmt: skip
        assert _totals(store, "alice") == (1, 2, 1)

    def test_deleting_a_session_or_a_message_gives_no_tokens_back(
        self, store: StoreHarness
    ) -> None:
        kept = store.create_session("alice", backend="echo").id
        doomed = store.create_session("alice", backend="echo").id
        reply = _reply(store, "alice", kept, {"input_tokens": 1, "output_tokens": 1})
        _reply(store, "alice", doomed, {"input_tokens": 5, "output_tokens": 7})
        assert _totals(store, "alice") == (6, 8, 2)

        store.delete_session("alice", doomed)
        store.delete_message("alice", kept, reply.id)
        assert _totals(store, "alice") == (6, 8, 2)

    def test_a_reply_answered_again_adds_the_new_tokens_to_the_old(
        self, store: StoreHarness
    ) -> None:
        sid = store.create_session("alice", backend="echo").id
        question = _question(store, "alice", sid)
        failed = store.add_reply(
            "alice", sid, reply_to=question.id, content="par", status="error",
            backend="echo", model="echo", usage={"input_tokens": 4, "output_tokens": 1},
        )  # fmt: skip
        store.add_reply(
            "alice", sid, reply_to=question.id, content="full", status="complete",
            backend="echo", model="echo", usage={"input_tokens": 4, "output_tokens": 3},
            replacing=failed.id,
        )  # fmt: skip
        store.replace_reply(
            "alice", sid, failed.id, content="again", status="complete",
            backend="echo", model="echo", usage={"input_tokens": 4, "output_tokens": 2},
        )  # fmt: skip
        assert _totals(store, "alice") == (12, 6, 3)

    def test_a_reply_that_is_not_stored_adds_nothing(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        question = _question(store, "alice", sid)
        store.delete_message("alice", sid, question.id)
        with pytest.raises(MessageNotFound):
            store.add_reply(
                "alice", sid, reply_to=question.id, content="late", status="complete",
                backend="echo", usage={"input_tokens": 1, "output_tokens": 1},
            )  # fmt: skip
        # A regeneration's id stored twice: the second is refused, and not counted.
        question = _question(store, "alice", sid)
        for attempt in range(2):
            call = store.add_reply
            kwargs: dict[str, Any] = {
                "reply_to": question.id, "content": "r", "status": "complete",
                "backend": "echo", "usage": {"output_tokens": 10}, "client_id": "regen-1",
            }  # fmt: skip
            if attempt == 0:
                call("alice", sid, **kwargs)
            else:
                with pytest.raises(DuplicateReply):
                    call("alice", sid, **kwargs)
        # Another user's session: not found, and nobody is charged.
        with pytest.raises(NotFound):
            store.add_reply(
                "bob", sid, reply_to=question.id, content="r", status="complete",
                backend="echo", usage={"output_tokens": 50},
            )  # fmt: skip
        assert _totals(store, "alice") == (0, 10, 1)
        assert _totals(store, "bob") == (0, 0, 0)

    def test_totals_are_the_owners_alone(self, store: StoreHarness) -> None:
        alice = store.create_session("alice", backend="echo").id
        bob = store.create_session("bob", backend="echo").id
        _reply(store, "alice", alice, {"input_tokens": 1, "output_tokens": 2})
        _reply(store, "bob", bob, {"input_tokens": 30, "output_tokens": 40})
        assert _totals(store, "alice") == (1, 2, 1)
        assert _totals(store, "bob") == (30, 40, 1)
        assert _totals(store, "carol") == (0, 0, 0)
        assert store.quota_state("alice", _today(), applies=True).today == 3

    # -- grouping and ranges --------------------------------------------------------------

    def test_grouped_by_backend_and_by_model(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        _reply(store, "alice", sid, {"input_tokens": 1, "output_tokens": 1}, model="small")
        _reply(store, "alice", sid, {"input_tokens": 2, "output_tokens": 2}, model="large")
        _reply(store, "alice", sid, {"input_tokens": 4, "output_tokens": 4}, model="small")
        _reply(
            store, "alice", sid, {"input_tokens": 8, "output_tokens": 8},
            backend="gpt", model="large",
        )  # fmt: skip
        _reply(store, "alice", sid, {"input_tokens": 16, "output_tokens": 0}, model=None)

        assert store.usage("alice", group_by="backend", **WIDE) == [
            UsageRow(23, 7, 4, backend="echo"),
            UsageRow(8, 8, 1, backend="gpt"),
        ]
        by_model = store.usage("alice", group_by="model", **WIDE)
        assert sorted(by_model, key=lambda r: (r.backend or "", r.model or "")) == [
            UsageRow(16, 0, 1, backend="echo", model=None),
            UsageRow(2, 2, 1, backend="echo", model="large"),
            UsageRow(5, 5, 2, backend="echo", model="small"),
            UsageRow(8, 8, 1, backend="gpt", model="large"),
        ]

    def test_grouped_by_day_oldest_first_within_the_range(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        _reply(store, "alice", sid, {"input_tokens": 1, "output_tokens": 0})
        self.backdate(store, "alice", 40)
        _reply(store, "alice", sid, {"input_tokens": 2, "output_tokens": 0})
        self.backdate(store, "alice", 2)
        _reply(store, "alice", sid, {"input_tokens": 4, "output_tokens": 0})
        today = _today()

        rows = store.usage("alice", group_by="day", **WIDE)
        assert rows == [
            UsageRow(1, 0, 1, day=today - timedelta(days=42)),
            UsageRow(2, 0, 1, day=today - timedelta(days=2)),
            UsageRow(4, 0, 1, day=today),
        ]
        # Both ends are included.
        two_ago = today - timedelta(days=2)
        assert store.usage("alice", start=two_ago, end=today, group_by="day") == rows[1:]
        assert store.usage("alice", start=two_ago, end=two_ago, group_by="day") == [rows[1]]
        assert store.usage(
            "alice", start=today - timedelta(days=41), end=today - timedelta(days=3),
            group_by="day",
        ) == []  # fmt: skip
        assert store.usage(
            "alice", start=today + timedelta(days=1), end=today + timedelta(days=30),
            group_by="backend",
        ) == []  # fmt: skip
        # Grouped by backend, the range still applies.
        assert store.usage("alice", start=two_ago, end=today, group_by="backend") == [
            UsageRow(6, 0, 2, backend="echo")
        ]

    # -- what a quota check reads ---------------------------------------------------------

    def test_quota_state_counts_the_day_and_the_month_up_to_it(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        _reply(store, "alice", sid, {"input_tokens": 3, "output_tokens": 4})
        day = store.usage("alice", group_by="day", **WIDE)[0].day
        assert day is not None

        def state(when: date) -> QuotaState:
            return store.quota_state("alice", when, applies=True)  # type: ignore[no-any-return]

        assert state(day) == QuotaState(None, 7, 7)
        # Before that day, nothing was used yet.
        assert state(day - timedelta(days=1)) == QuotaState(None, 0, 0)
        next_month = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
        assert state(next_month) == QuotaState(None, 0, 0)
        if day.day < 28:
            assert state(day + timedelta(days=1)) == QuotaState(None, 0, 7)
        # Tokens of last month are not this month's.
        self.backdate(store, "alice", day.day)
        assert state(day) == QuotaState(None, 0, 0)

    def test_without_a_quota_elsewhere_the_totals_are_read_only_for_an_override(
        self, store: StoreHarness
    ) -> None:
        sid = store.create_session("alice", backend="echo").id
        _reply(store, "alice", sid, {"input_tokens": 3, "output_tokens": 4})
        day = store.usage("alice", group_by="day", **WIDE)[0].day
        assert store.quota_state("alice", day, applies=False) == QuotaState(None, 0, 0)
        store.set_quota("alice", Quota(tokens_per_day=10))
        assert store.quota_state("alice", day, applies=False) == QuotaState(Quota(10, None), 7, 7)

    # -- overrides ------------------------------------------------------------------------

    def test_a_quota_override_is_set_replaced_and_cleared(self, store: StoreHarness) -> None:
        assert store.get_quota("alice") is None
        assert store.clear_quota("alice") is False

        store.set_quota("alice", Quota(tokens_per_day=1000, tokens_per_month=20_000))
        assert store.get_quota("alice") == Quota(1000, 20_000)
        # A new one replaces it whole: a period left out has no limit.
        store.set_quota("alice", Quota(tokens_per_month=5))
        assert store.get_quota("alice") == Quota(None, 5)
        # No limit at all is an override too (it exempts the user from the defaults).
        store.set_quota("alice", Quota())
        assert store.get_quota("alice") == Quota(None, None)
        assert store.quota_state("alice", _today(), applies=False).override == Quota()
        # Zero tokens is a limit, not the absence of one.
        store.set_quota("alice", Quota(0, 0))
        assert store.get_quota("alice") == Quota(0, 0)

        assert store.clear_quota("alice") is True
        assert store.get_quota("alice") is None
        assert store.clear_quota("alice") is False

    def test_quota_overrides_are_per_user(self, store: StoreHarness) -> None:
        store.set_quota("alice", Quota(tokens_per_day=1))
        store.set_quota("bob", Quota(tokens_per_day=2))
        assert store.get_quota("alice") == Quota(1, None)
        assert store.get_quota("bob") == Quota(2, None)
        assert store.get_quota("carol") is None
        store.clear_quota("alice")
        assert store.get_quota("bob") == Quota(2, None)
        assert store.quota_state("bob", _today(), applies=False).override == Quota(2, None)
        assert store.quota_state("alice", _today(), applies=False).override is None
