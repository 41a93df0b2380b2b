"""The contract every :class:`~chatbot.stores.base.SessionStore` passes.

An implementation's test module subclasses :class:`StoreContract` and supplies a ``store``
fixture that yields a :class:`StoreHarness` from :func:`open_store`::

    class TestSQLiteStore(StoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            with open_store(SQLiteStore(...), migrations=[...]) as harness:
                yield harness

The tests are synchronous; the harness runs the store's coroutines on one event loop per
test, so ``store.create_session(...)`` in a test returns the session itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import itertools
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest

from chatbot.errors import DuplicateMessage, DuplicateReply, InvalidRequest, NotFound
from chatbot.stores.base import Message, Session, SessionStore

T = TypeVar("T")

URL_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{22,}$")


class StoreHarness:
    """An opened, migrated store whose coroutine methods are called synchronously."""

    def __init__(
        self,
        store: SessionStore,
        runner: asyncio.Runner,
        *,
        migrations: Sequence[str],
        first_migrate: list[str],
    ) -> None:
        self.store = store
        self.runner = runner
        #: Every migration the implementation ships, in order.
        self.migrations = list(migrations)
        #: What ``migrate()`` returned when the fixture opened the empty database.
        self.first_migrate = first_migrate

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coroutine)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.runner.run(attribute(*args, **kwargs))

        return call


@contextlib.contextmanager
def open_store(store: SessionStore, *, migrations: Sequence[str]) -> Iterator[StoreHarness]:
    """Open ``store`` on a fresh event loop, migrate it, and close it afterwards."""
    with asyncio.Runner() as runner:
        runner.run(store.open())
        try:
            first = runner.run(store.migrate())
            yield StoreHarness(store, runner, migrations=migrations, first_migrate=first)
        finally:
            runner.run(store.close())


def _cursor(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


GARBAGE_CURSORS = [
    pytest.param("garbage", id="word"),
    pytest.param("", id="empty"),
    pytest.param("!!!***", id="not-base64"),
    pytest.param("é", id="not-ascii"),
    pytest.param(_cursor(b"\xff\xfe\xfd"), id="not-utf8"),
    pytest.param(_cursor(b"42"), id="a-number"),
    pytest.param(_cursor(b'["yesterday", "abc"]'), id="not-a-timestamp"),
    pytest.param(_cursor(b'["2024-05-01T10:00:00", "abc"]'), id="naive-timestamp"),
    pytest.param(_cursor(b'["2024-05-01T10:00:00+00:00", 7]'), id="id-not-a-string"),
    pytest.param(_cursor(b'["2024-05-01T10:00:00+00:00"]'), id="one-item"),
    pytest.param(_cursor(b"[" * 2000), id="deeply-nested"),
]


class StoreContract:
    """The behaviour every session store shares; subclasses provide the ``store`` fixture."""

    # -- sessions -------------------------------------------------------------------------

    def test_create_and_get_round_trip(self, store: StoreHarness) -> None:
        before = datetime.now(UTC)
        created = store.create_session(
            "alice",
            backend="echo",
            title="Trip to Lisbon ✈️",
            model="echo-large",
            system_prompt="Answer in Portuguese.",
        )
        after = datetime.now(UTC)

        assert isinstance(created, Session)
        assert created.owner == "alice"
        assert created.title == "Trip to Lisbon ✈️"
        assert created.backend == "echo"
        assert created.model == "echo-large"
        assert created.system_prompt == "Answer in Portuguese."
        assert created.message_count == 0
        for stamp in (created.created_at, created.updated_at):
            assert stamp.utcoffset() == timedelta(0)
            assert before - timedelta(seconds=1) <= stamp <= after + timedelta(seconds=1)
        assert created.created_at <= created.updated_at

        fetched = store.get_session("alice", created.id)
        assert fetched == created
        assert fetched.created_at.utcoffset() == timedelta(0)
        assert fetched.updated_at.utcoffset() == timedelta(0)

    def test_optional_fields_default_to_none(self, store: StoreHarness) -> None:
        created = store.create_session("alice", backend="echo")
        fetched = store.get_session("alice", created.id)
        assert (fetched.title, fetched.model, fetched.system_prompt) == (None, None, None)
        assert fetched.backend == "echo"

    def test_session_ids_are_unguessable(self, store: StoreHarness) -> None:
        async def create_many() -> list[Session]:
            return [await store.store.create_session("alice", backend="echo") for _ in range(1000)]

        ids = [session.id for session in store.run(create_many())]
        assert len(set(ids)) == 1000
        for session_id in ids:
            assert URL_SAFE_ID.match(session_id), session_id
            # One in 64 random ids would start with "-", which a command line (chatbot chat
            # --session ID) reads as an option.
            assert not session_id.startswith("-"), session_id

    def test_get_of_a_missing_session_is_not_found(self, store: StoreHarness) -> None:
        with pytest.raises(NotFound):
            store.get_session("alice", "no-such-session-id-000000")

    # -- owner scoping --------------------------------------------------------------------

    OPERATIONS: dict[str, Callable[[StoreHarness, str, str], Any]] = {
        "get": lambda store, owner, sid: store.get_session(owner, sid),
        "rename": lambda store, owner, sid: store.rename_session(owner, sid, "mine now"),
        "delete": lambda store, owner, sid: store.delete_session(owner, sid),
        "add_message": lambda store, owner, sid: store.add_message(
            owner, sid, role="user", content="hello?"
        ),
        "list_messages": lambda store, owner, sid: store.list_messages(owner, sid, limit=10),
    }

    @pytest.mark.parametrize("operation", list(OPERATIONS))
    def test_another_owners_session_looks_missing(
        self, store: StoreHarness, operation: str
    ) -> None:
        call = self.OPERATIONS[operation]
        mine = store.create_session("alice", backend="echo", title="private")
        store.add_message("alice", mine.id, role="user", content="secret plans")

        with pytest.raises(NotFound) as foreign:
            call(store, "bob", mine.id)
        with pytest.raises(NotFound) as missing:
            call(store, "bob", "no-such-session-id-000000")
        assert type(foreign.value) is type(missing.value)
        assert str(foreign.value) == str(missing.value)

        # The failed call changed nothing of alice's.
        after = store.get_session("alice", mine.id)
        assert after.title == "private"
        assert after.message_count == 1
        page = store.list_messages("alice", mine.id, limit=10)
        assert [m.content for m in page.messages] == ["secret plans"]

    def test_list_sessions_shows_only_the_owners(self, store: StoreHarness) -> None:
        alices = {store.create_session("alice", backend="echo").id for _ in range(3)}
        bobs = {store.create_session("bob", backend="echo").id for _ in range(2)}

        assert store.list_sessions("carol", limit=10).sessions == []
        listed_bob = store.list_sessions("bob", limit=10)
        assert {s.id for s in listed_bob.sessions} == bobs
        assert {s.owner for s in listed_bob.sessions} == {"bob"}
        assert {s.id for s in store.list_sessions("alice", limit=10).sessions} == alices

        # A cursor from alice's listing does not open her sessions to bob.
        first = store.list_sessions("alice", limit=1)
        assert first.next_cursor is not None
        rest_for_bob = store.list_sessions("bob", limit=10, cursor=first.next_cursor)
        assert not {s.id for s in rest_for_bob.sessions} & alices

    # -- listing sessions -----------------------------------------------------------------

    def test_count_sessions_counts_the_owners_only(self, store: StoreHarness) -> None:
        assert store.count_sessions("alice") == 0
        made = [store.create_session("alice", backend="echo") for _ in range(3)]
        store.create_session("bob", backend="echo")
        assert store.count_sessions("alice") == 3
        assert store.count_sessions("bob") == 1
        store.delete_session("alice", made[0].id)
        assert store.count_sessions("alice") == 2
        # The default implementation (paging through list_sessions) agrees.
        assert store.run(SessionStore.count_sessions(store.store, "alice")) == 2

    def test_list_sessions_most_recently_active_first(self, store: StoreHarness) -> None:
        sessions = [store.create_session("alice", backend="echo") for _ in range(5)]
        ids = [s.id for s in sessions]

        listed = store.list_sessions("alice", limit=10)
        assert [s.id for s in listed.sessions] == ids[::-1]
        assert listed.next_cursor is None

        message = store.add_message("alice", ids[1], role="user", content="back again")
        listed = store.list_sessions("alice", limit=10)
        assert [s.id for s in listed.sessions] == [ids[1], ids[4], ids[3], ids[2], ids[0]]
        moved = listed.sessions[0]
        assert moved.updated_at > sessions[1].updated_at
        assert moved.updated_at >= message.created_at
        assert moved.message_count == 1

    @pytest.mark.parametrize("limit", [1, 2, 3, 7, 10, 11])
    def test_list_sessions_pages_visit_every_session_once(
        self, store: StoreHarness, limit: int
    ) -> None:
        created = [store.create_session("alice", backend="echo").id for _ in range(10)]
        store.create_session("bob", backend="echo")
        expected = created[::-1]

        seen: list[str] = []
        sizes: list[int] = []
        cursor: str | None = None
        for _ in range(20):
            page = store.list_sessions("alice", limit=limit, cursor=cursor)
            seen += [s.id for s in page.sessions]
            sizes.append(len(page.sessions))
            cursor = page.next_cursor
            if cursor is None:
                break
            assert isinstance(cursor, str)
        assert cursor is None, "the pages never ended"
        assert seen == expected
        full_pages, last = divmod(10, limit)
        assert sizes == [limit] * full_pages + ([last] if last else [])

    @pytest.mark.parametrize("cursor", GARBAGE_CURSORS)
    def test_garbage_cursor_is_invalid_request(self, store: StoreHarness, cursor: str) -> None:
        store.create_session("alice", backend="echo")
        with pytest.raises(InvalidRequest) as raised:
            store.list_sessions("alice", limit=10, cursor=cursor)
        assert raised.value.code == "invalid_cursor"

    # -- messages -------------------------------------------------------------------------

    def test_message_count_counts_user_and_assistant_messages(self, store: StoreHarness) -> None:
        session = store.create_session("alice", backend="echo")
        other = store.create_session("alice", backend="echo")
        for turn in range(2):
            question = store.add_message("alice", session.id, role="user", content=f"q{turn}")
            store.add_message(
                "alice", session.id, role="assistant", content=f"a{turn}", reply_to=question.id
            )
        store.add_message("alice", session.id, role="assistant", content="", status="error")
        store.add_message("alice", other.id, role="user", content="elsewhere")

        assert store.get_session("alice", session.id).message_count == 5
        counts = {s.id: s.message_count for s in store.list_sessions("alice", limit=10).sessions}
        assert counts == {session.id: 5, other.id: 1}

    def test_message_ids_strictly_increase(self, store: StoreHarness) -> None:
        first = store.create_session("alice", backend="echo")
        second = store.create_session("bob", backend="echo")
        ids = []
        for turn in range(6):
            owner, session = ("alice", first) if turn % 2 else ("bob", second)
            ids.append(store.add_message(owner, session.id, role="user", content=str(turn)).id)
        assert all(isinstance(i, int) for i in ids)
        assert all(a < b for a, b in itertools.pairwise(ids))

    def test_message_fields_round_trip(self, store: StoreHarness) -> None:
        session = store.create_session("alice", backend="echo")
        before = datetime.now(UTC)
        question = store.add_message(
            "alice",
            session.id,
            role="user",
            content="Grüße 👋🏽 世界\nline two\t'quoted' \"double\" ; DROP TABLE sessions; --",
            client_id="c-1",
        )
        failed = store.add_message(
            "alice",
            session.id,
            role="assistant",
            content="",
            status="error",
            reply_to=question.id,
            backend="echo",
            model="echo",
        )
        answered = store.add_message(
            "alice",
            session.id,
            role="assistant",
            content="Echo: Grüße 👋🏽",
            status="complete",
            backend="echo",
            model="echo-large",
            usage={"input_tokens": 3, "output_tokens": 5},
        )
        partial = store.add_message(
            "alice", session.id, role="assistant", content="Echo:", status="cancelled"
        )
        pending = store.add_message(
            "alice", session.id, role="assistant", content="", status="in_progress"
        )

        assert question.role == "user"
        assert question.status == "complete"
        assert question.client_id == "c-1"
        assert question.session_id == session.id
        assert (failed.content, failed.status, failed.reply_to) == ("", "error", question.id)
        assert answered.usage == {"input_tokens": 3, "output_tokens": 5}
        for message in (question, failed, answered, partial, pending):
            assert message.created_at.utcoffset() == timedelta(0)
            assert message.created_at >= before - timedelta(seconds=1)

        listed = store.list_messages("alice", session.id, limit=10)
        assert listed.messages == [question, failed, answered, partial, pending]
        assert all(isinstance(m, Message) for m in listed.messages)
        assert listed.has_more is False
        stored = {m.id: m for m in listed.messages}
        assert stored[question.id].content.startswith("Grüße 👋🏽 世界\nline two")
        assert stored[question.id].usage is None
        assert stored[question.id].reply_to is None
        assert stored[failed.id].content == ""
        assert stored[failed.id].backend == "echo"
        assert stored[answered.id].model == "echo-large"
        assert stored[answered.id].usage == {"input_tokens": 3, "output_tokens": 5}
        assert [m.status for m in listed.messages] == [
            "complete",
            "error",
            "complete",
            "cancelled",
            "in_progress",
        ]

    def test_concurrent_adds_are_all_stored(self, store: StoreHarness) -> None:
        first = store.create_session("alice", backend="echo")
        second = store.create_session("alice", backend="echo")

        async def add_many() -> list[Message]:
            adds: list[Awaitable[Message]] = [
                store.store.add_message(
                    "alice", session.id, role="user", content=f"{session.id}:{n}"
                )
                for n in range(10)
                for session in (first, second)
            ]
            return list(await asyncio.gather(*adds))

        added = store.run(add_many())
        assert len({m.id for m in added}) == 20
        for session in (first, second):
            assert store.get_session("alice", session.id).message_count == 10
            page = store.list_messages("alice", session.id, limit=50)
            assert sorted(m.content for m in page.messages) == sorted(
                f"{session.id}:{n}" for n in range(10)
            )

    def _conversation(self, store: StoreHarness, count: int = 10) -> tuple[str, list[int]]:
        """A session of ``count`` messages, interleaved with another session's messages."""
        session = store.create_session("alice", backend="echo")
        noise = store.create_session("alice", backend="echo")
        ids = []
        for n in range(count):
            role = "user" if n % 2 == 0 else "assistant"
            ids.append(store.add_message("alice", session.id, role=role, content=f"m{n}").id)
            store.add_message("alice", noise.id, role="user", content=f"noise{n}")
        return session.id, ids

    def test_list_messages_of_an_empty_session(self, store: StoreHarness) -> None:
        session = store.create_session("alice", backend="echo")
        page = store.list_messages("alice", session.id, limit=10)
        assert page.messages == []
        assert page.has_more is False

    @pytest.mark.parametrize(
        ("limit", "expected", "has_more"),
        [
            (3, range(7, 10), True),
            (9, range(1, 10), True),
            (10, range(10), False),
            (50, range(10), False),
        ],
    )
    def test_list_messages_without_cursor_gives_the_newest(
        self, store: StoreHarness, limit: int, expected: range, has_more: bool
    ) -> None:
        session_id, ids = self._conversation(store)
        page = store.list_messages("alice", session_id, limit=limit)
        assert [m.id for m in page.messages] == [ids[n] for n in expected]
        assert [m.content for m in page.messages] == [f"m{n}" for n in expected]
        assert page.has_more is has_more

    @pytest.mark.parametrize(
        ("before", "limit", "expected", "has_more"),
        [
            (7, 3, range(4, 7), True),
            (3, 3, range(0, 3), False),
            (2, 3, range(0, 2), False),
            (0, 3, range(0), False),
            (9, 1, range(8, 9), True),
        ],
    )
    def test_list_messages_before(
        self, store: StoreHarness, before: int, limit: int, expected: range, has_more: bool
    ) -> None:
        session_id, ids = self._conversation(store)
        page = store.list_messages("alice", session_id, limit=limit, before=ids[before])
        assert [m.id for m in page.messages] == [ids[n] for n in expected]
        assert page.has_more is has_more

    @pytest.mark.parametrize(
        ("after", "limit", "expected", "has_more"),
        [
            (2, 3, range(3, 6), True),
            (6, 3, range(7, 10), False),
            (5, 3, range(6, 9), True),
            (9, 3, range(0), False),
            (0, 1, range(1, 2), True),
        ],
    )
    def test_list_messages_after(
        self, store: StoreHarness, after: int, limit: int, expected: range, has_more: bool
    ) -> None:
        session_id, ids = self._conversation(store)
        page = store.list_messages("alice", session_id, limit=limit, after=ids[after])
        assert [m.id for m in page.messages] == [ids[n] for n in expected]
        assert page.has_more is has_more

    @pytest.mark.parametrize("limit", [1, 3, 4, 10, 11])
    def test_walking_backwards_visits_every_message_once(
        self, store: StoreHarness, limit: int
    ) -> None:
        session_id, ids = self._conversation(store)
        pages: list[list[int]] = []
        page = store.list_messages("alice", session_id, limit=limit)
        pages.append([m.id for m in page.messages])
        while page.has_more:
            assert len(pages) <= 20, "the pages never ended"
            page = store.list_messages("alice", session_id, limit=limit, before=pages[-1][0])
            pages.append([m.id for m in page.messages])
        for ids_of_page in pages:
            assert ids_of_page == sorted(ids_of_page)
        assert [i for ids_of_page in reversed(pages) for i in ids_of_page] == ids

    @pytest.mark.parametrize("limit", [1, 3, 4, 10, 11])
    def test_walking_forwards_visits_every_message_once(
        self, store: StoreHarness, limit: int
    ) -> None:
        session_id, ids = self._conversation(store)
        seen: list[int] = []
        position = 0
        for _ in range(20):
            page = store.list_messages("alice", session_id, limit=limit, after=position)
            assert len(page.messages) <= limit
            seen += [m.id for m in page.messages]
            if not page.has_more:
                break
            position = page.messages[-1].id
        else:
            raise AssertionError("the pages never ended")
        assert seen == ids

    def test_any_string_is_stored_as_given(self, store: StoreHarness) -> None:
        """U+0000 (which PostgreSQL's text and jsonb cannot hold), a private-use character
        and the like, in every text a client or a backend gives, come back as given, and
        an id holding one is a look-up like any other."""
        odd = "nul\x00 mark\U0010fffd pair\U0010fffd0 \U0010fffdm end\x00"
        session = store.create_session(
            "alice", backend="echo", title=odd, model=odd, system_prompt=odd
        )
        question = store.add_user_message("alice", session.id, content=odd, client_id=odd)
        reply = store.add_reply(
            "alice", session.id, reply_to=question.message.id, content=odd, status="complete",
            backend=odd, model=odd, usage={odd: [odd, 1]},
        )  # fmt: skip
        fetched = store.get_session("alice", session.id)
        assert (fetched.title, fetched.model, fetched.system_prompt) == (odd, odd, odd)
        page = store.list_messages("alice", session.id, limit=10)
        assert page.messages == [question.message, reply]
        assert reply.usage == {odd: [odd, 1]}
        assert store.find_user_message("alice", session.id, odd) == question.message
        assert store.find_user_message("alice", session.id, "nul\x00") is None
        with pytest.raises(DuplicateMessage):
            store.add_user_message("alice", session.id, content="again", client_id=odd)
        # An owner or a session id that differs by one such character is another one.
        assert store.list_sessions("alice\x00", limit=10).sessions == []
        with pytest.raises(NotFound):
            store.get_session("alice", session.id + "\x00")
        with pytest.raises(NotFound):
            store.get_session("alice\x00", session.id)

    # -- rename and delete ----------------------------------------------------------------

    def test_rename(self, store: StoreHarness) -> None:
        session = store.create_session("alice", backend="echo", title="old")
        renamed = store.rename_session("alice", session.id, "Nuevo título 🎉")
        assert renamed.title == "Nuevo título 🎉"
        assert renamed.id == session.id
        assert store.get_session("alice", session.id).title == "Nuevo título 🎉"
        assert [s.title for s in store.list_sessions("alice", limit=5).sessions] == [
            "Nuevo título 🎉"
        ]

        cleared = store.rename_session("alice", session.id, None)
        assert cleared.title is None
        assert store.get_session("alice", session.id).title is None

    def test_rename_of_a_missing_session_is_not_found(self, store: StoreHarness) -> None:
        with pytest.raises(NotFound):
            store.rename_session("alice", "no-such-session-id-000000", "x")

    def test_delete_removes_the_session_and_its_messages(self, store: StoreHarness) -> None:
        doomed = store.create_session("alice", backend="echo")
        kept = store.create_session("alice", backend="echo")
        question = store.add_message("alice", doomed.id, role="user", content="bye", client_id="q")
        store.add_message("alice", doomed.id, role="assistant", content="ok", reply_to=question.id)
        survivor = store.add_message("alice", kept.id, role="user", content="still here")

        assert store.delete_session("alice", doomed.id) is None

        with pytest.raises(NotFound):
            store.get_session("alice", doomed.id)
        with pytest.raises(NotFound):
            store.list_messages("alice", doomed.id, limit=10)
        with pytest.raises(NotFound):
            store.add_message("alice", doomed.id, role="user", content="again")
        with pytest.raises(NotFound):
            store.delete_session("alice", doomed.id)
        assert [s.id for s in store.list_sessions("alice", limit=10).sessions] == [kept.id]
        assert store.list_messages("alice", kept.id, limit=10).messages == [survivor]

    # -- client ids -----------------------------------------------------------------------

    def test_client_id_is_unique_per_session(self, store: StoreHarness) -> None:
        session = store.create_session("alice", backend="echo")
        other = store.create_session("alice", backend="echo")
        first = store.add_message("alice", session.id, role="user", content="hi", client_id="c1")

        with pytest.raises(DuplicateMessage):
            store.add_message("alice", session.id, role="user", content="hi", client_id="c1")

        # Nothing of the refused message was kept, and the store still works.
        assert store.list_messages("alice", session.id, limit=10).messages == [first]
        assert store.get_session("alice", session.id).message_count == 1
        elsewhere = store.add_message("alice", other.id, role="user", content="hi", client_id="c1")
        assert elsewhere.client_id == "c1"
        later = store.add_message("alice", session.id, role="user", content="next", client_id="c2")
        assert later.id > elsewhere.id > first.id
        for _ in range(2):
            store.add_message("alice", session.id, role="user", content="no id")
        assert store.get_session("alice", session.id).message_count == 4

    def test_find_user_message_and_its_reply(self, store: StoreHarness) -> None:
        session = store.create_session("alice", backend="echo")
        question = store.add_message("alice", session.id, role="user", content="q", client_id="c1")
        assert store.find_user_message("alice", session.id, "c1") == question
        assert store.find_user_message("alice", session.id, "c2") is None
        assert store.find_reply("alice", session.id, question.id) is None
        answer = store.add_message(
            "alice", session.id, role="assistant", content="a", reply_to=question.id
        )
        assert store.find_reply("alice", session.id, question.id) == answer
        # Another owner sees nothing, even with the right ids.
        assert store.find_user_message("bob", session.id, "c1") is None
        assert store.find_reply("bob", session.id, question.id) is None
        other = store.create_session("alice", backend="echo")
        assert store.find_user_message("alice", other.id, "c1") is None
        assert store.find_reply("alice", other.id, question.id) is None

    def test_replace_reply_keeps_the_id_and_place(self, store: StoreHarness) -> None:
        session = store.create_session("alice", backend="echo")
        question = store.add_message("alice", session.id, role="user", content="q")
        failed = store.add_message(
            "alice", session.id, role="assistant", content="par", status="error",
            reply_to=question.id,
        )  # fmt: skip
        later = store.add_message("alice", session.id, role="user", content="next")
        replaced = store.replace_reply(
            "alice", session.id, failed.id, content="full answer", status="complete",
            backend="echo", model="echo", usage={"output_tokens": 2},
        )  # fmt: skip
        assert replaced.id == failed.id
        assert (replaced.content, replaced.status, replaced.reply_to) == (
            "full answer", "complete", question.id,
        )  # fmt: skip
        assert replaced.usage == {"output_tokens": 2}
        page = store.list_messages("alice", session.id, limit=10).messages
        assert [m.id for m in page] == [question.id, failed.id, later.id]
        assert page[1] == replaced
        assert store.find_reply("alice", session.id, question.id) == replaced
        with pytest.raises(NotFound):
            store.replace_reply("bob", session.id, failed.id, content="x", status="complete")
        with pytest.raises(NotFound):
            store.replace_reply("alice", session.id, question.id, content="x", status="complete")
        assert store.list_messages("alice", session.id, limit=10).messages[0] == question

    def test_a_regeneration_id_is_stored_once(self, store: StoreHarness) -> None:
        session = store.create_session("alice", backend="echo")
        question = store.add_message("alice", session.id, role="user", content="q")
        first = store.add_message(
            "alice", session.id, role="assistant", content="a", reply_to=question.id
        )
        again = store.add_reply(
            "alice", session.id, reply_to=question.id, content="b", status="complete",
            client_id="regen-1",
        )  # fmt: skip
        assert again.parent_id == first.parent_id == question.id
        with pytest.raises(DuplicateReply) as raised:
            store.add_reply(
                "alice", session.id, reply_to=question.id, content="c", status="complete",
                client_id="regen-1",
            )  # fmt: skip
        assert raised.value.reply == again
        assert store.get_session("alice", session.id).message_count == 3
        # A repeated user message still finds the reply its id was first answered with.
        assert store.find_reply("alice", session.id, question.id) == first

    # -- migrations -----------------------------------------------------------------------

    def test_migrations_are_recorded_and_applied_once(self, store: StoreHarness) -> None:
        assert store.migrations, "the implementation ships no migrations"
        assert store.first_migrate == store.migrations
        assert store.applied_migrations() == store.migrations
        assert store.migrate() == []
        assert store.applied_migrations() == store.migrations

    def test_ping_answers(self, store: StoreHarness) -> None:
        assert store.ping() is None
