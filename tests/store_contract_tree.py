"""The contract of a session store's message tree: branches, titles, search, import and
shares. Mixed into :class:`tests.store_contract.StoreContract` by each implementation."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chatbot.errors import MessageNotFound, NotFound, TooManySessions
from chatbot.search import parse_query
from chatbot.stores.base import Message
from chatbot.transfer import ImportedMessage, ImportedSession
from tests.store_contract import StoreHarness


def _ask(store: StoreHarness, sid: str, text: str, **kwargs: object) -> Message:
    return store.add_user_message("alice", sid, content=text, **kwargs).message


def _answer(store: StoreHarness, sid: str, question: Message, text: str) -> Message:
    return store.add_reply(  # type: ignore[no-any-return]
        "alice", sid, reply_to=question.id, content=text, status="complete"
    )


def _branch(store: StoreHarness, sid: str, **kwargs: object) -> list[str]:
    page = store.list_messages("alice", sid, limit=100, **kwargs)
    return [m.content for m in page.messages]


class TreeContract:
    # -- branches -------------------------------------------------------------------------

    def test_messages_chain_into_one_branch(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        q1 = _ask(store, sid, "q1")
        a1 = _answer(store, sid, q1, "a1")
        q2 = _ask(store, sid, "q2")
        assert (q1.parent_id, a1.parent_id, q2.parent_id) == (None, q1.id, a1.id)
        session = store.get_session("alice", sid)
        assert session.leaf_id == q2.id
        assert session.message_count == 3
        page = store.list_messages("alice", sid, limit=10)
        assert [m.id for m in page.messages] == [q1.id, a1.id, q2.id]
        assert [m.parent_id for m in page.messages] == [None, q1.id, a1.id]
        assert page.siblings == {q1.id: [q1.id], a1.id: [a1.id], q2.id: [q2.id]}

    def test_an_edit_starts_a_branch_and_makes_it_current(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        q1 = _ask(store, sid, "q1")
        a1 = _answer(store, sid, q1, "a1")
        q2 = _ask(store, sid, "q2")
        a2 = _answer(store, sid, q2, "a2")
        stored = store.add_user_message("alice", sid, content="q2 edited", parent=a1.id)
        edit = stored.message
        assert edit.parent_id == a1.id
        assert stored.leaf_before == a2.id
        reply = _answer(store, sid, edit, "a2 edited")
        assert _branch(store, sid) == ["q1", "a1", "q2 edited", "a2 edited"]
        page = store.list_messages("alice", sid, limit=10)
        assert page.siblings[edit.id] == [q2.id, edit.id]
        assert page.siblings[q1.id] == [q1.id]
        # The old branch is kept and readable by its leaf.
        assert _branch(store, sid, leaf_id=a2.id) == ["q1", "a1", "q2", "a2"]
        assert store.get_session("alice", sid).leaf_id == reply.id
        assert store.get_session("alice", sid).message_count == 6
        # Editing the first message makes a new root.
        root = store.add_user_message("alice", sid, content="again", parent=None).message
        assert root.parent_id is None
        assert _branch(store, sid) == ["again"]
        assert store.list_messages("alice", sid, limit=10).siblings[root.id] == [q1.id, root.id]

    def test_a_reply_to_a_message_off_the_branch_leaves_the_leaf(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        q1 = _ask(store, sid, "q1")
        store.add_user_message("alice", sid, content="other", parent=None)
        late = _answer(store, sid, q1, "late")
        assert late.parent_id == q1.id
        assert _branch(store, sid) == ["other"]

    def test_regenerated_replies_are_siblings(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        q1 = _ask(store, sid, "q1")
        a1 = _answer(store, sid, q1, "a1")
        assert store.newest_reply("alice", sid) == a1
        session = store.switch_branch("alice", sid, q1.id, descend=False)
        assert session.leaf_id == q1.id
        b1 = _answer(store, sid, q1, "b1")
        assert _branch(store, sid) == ["q1", "b1"]
        assert store.list_messages("alice", sid, limit=10).siblings[b1.id] == [a1.id, b1.id]
        assert store.newest_reply("alice", sid) == b1

    def test_switch_follows_the_newest_child_down(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        q1 = _ask(store, sid, "q1")
        a1 = _answer(store, sid, q1, "a1")
        q2 = _ask(store, sid, "q2")
        _answer(store, sid, q2, "a2")
        edit = store.add_user_message("alice", sid, content="q2b", parent=a1.id).message
        assert store.switch_branch("alice", sid, q2.id).leaf_id == q2.id + 1
        assert _branch(store, sid) == ["q1", "a1", "q2", "a2"]
        assert store.switch_branch("alice", sid, q1.id).leaf_id == edit.id
        with pytest.raises(MessageNotFound):
            store.switch_branch("alice", sid, 10**12)
        other = store.create_session("alice", backend="echo").id
        with pytest.raises(MessageNotFound):
            store.switch_branch("alice", other, q1.id)
        with pytest.raises(NotFound):
            store.switch_branch("bob", sid, q1.id)

    def test_delete_removes_the_subtree_and_moves_the_branch(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        q1 = _ask(store, sid, "q1")
        a1 = _answer(store, sid, q1, "a1")
        q2 = _ask(store, sid, "q2")
        _answer(store, sid, q2, "a2")
        edit = store.add_user_message("alice", sid, content="q2b", parent=a1.id).message
        b2 = _answer(store, sid, edit, "b2")
        # Off the current branch: the leaf stays.
        session = store.delete_message("alice", sid, q2.id)
        assert session.leaf_id == b2.id
        assert session.message_count == 4
        assert store.list_messages("alice", sid, limit=10).siblings[edit.id] == [edit.id]
        # Through it: the parent's branch (no sibling is left).
        session = store.delete_message("alice", sid, edit.id)
        assert session.leaf_id == a1.id
        assert session.message_count == 2
        assert _branch(store, sid) == ["q1", "a1"]
        with pytest.raises(MessageNotFound):
            store.get_message("alice", sid, b2.id)
        with pytest.raises(MessageNotFound):
            store.delete_message("alice", sid, edit.id)
        with pytest.raises(NotFound):
            store.delete_message("bob", sid, a1.id)
        # The root: the session is empty again and takes a new first message.
        session = store.delete_message("alice", sid, q1.id)
        assert (session.leaf_id, session.message_count) == (None, 0)
        assert _branch(store, sid) == []
        assert _ask(store, sid, "fresh").parent_id is None

    def test_delete_moves_to_the_newest_remaining_sibling(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        q1 = _ask(store, sid, "q1")
        a1 = _answer(store, sid, q1, "a1")
        store.switch_branch("alice", sid, q1.id, descend=False)
        b1 = _answer(store, sid, q1, "b1")
        store.switch_branch("alice", sid, q1.id, descend=False)
        c1 = _answer(store, sid, q1, "c1")
        assert store.delete_message("alice", sid, c1.id).leaf_id == b1.id
        assert store.delete_message("alice", sid, b1.id).leaf_id == a1.id

    def test_an_edit_of_a_missing_parent_stores_nothing(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        other = store.create_session("alice", backend="echo").id
        elsewhere = _ask(store, other, "elsewhere")
        for parent in (10**12, elsewhere.id):
            with pytest.raises(MessageNotFound):
                store.add_user_message("alice", sid, content="x", parent=parent)
        assert store.get_session("alice", sid).message_count == 0
        q = _ask(store, sid, "q")
        store.delete_message("alice", sid, q.id)
        with pytest.raises(MessageNotFound):
            _answer(store, sid, q, "too late")

    def test_paging_a_branch(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        ids = []
        for n in range(10):
            ids.append(_ask(store, sid, f"m{n}").id)
        # A side branch from m4, newer than everything above.
        side = store.add_user_message("alice", sid, content="side", parent=ids[4]).message
        store.switch_branch("alice", sid, ids[9])
        page = store.list_messages("alice", sid, limit=3)
        assert [m.content for m in page.messages] == ["m7", "m8", "m9"]
        assert page.has_more
        page = store.list_messages("alice", sid, limit=3, before=ids[7])
        assert [m.content for m in page.messages] == ["m4", "m5", "m6"]
        page = store.list_messages("alice", sid, limit=5, before=ids[2])
        assert [m.content for m in page.messages] == ["m0", "m1"]
        assert not page.has_more
        page = store.list_messages("alice", sid, limit=3, after=ids[2])
        assert [m.content for m in page.messages] == ["m3", "m4", "m5"]
        assert page.has_more
        page = store.list_messages("alice", sid, limit=3, after=ids[7])
        assert [m.content for m in page.messages] == ["m8", "m9"]
        assert not page.has_more
        # An id that is not a message bounds the branch's ids.
        page = store.list_messages("alice", sid, limit=2, before=side.id + 1000)
        assert [m.content for m in page.messages] == ["m8", "m9"]
        # The side branch, by its leaf.
        page = store.list_messages("alice", sid, limit=3, leaf_id=side.id)
        assert [m.content for m in page.messages] == ["m3", "m4", "side"]
        assert page.siblings[side.id] == [ids[5], side.id]
        with pytest.raises(MessageNotFound):
            store.list_messages("alice", sid, limit=3, leaf_id=10**12)

    def test_path_is_what_a_backend_sees(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        q1 = _ask(store, sid, "q1")
        a1 = _answer(store, sid, q1, "a1")
        _ask(store, sid, "q2")
        edit = store.add_user_message("alice", sid, content="q2b", parent=a1.id).message
        assert [m.content for m in store.branch_to("alice", sid, edit.id, limit=10)] == [
            "q1", "a1", "q2b",
        ]  # fmt: skip
        assert [m.content for m in store.branch_to("alice", sid, edit.id, limit=2)] == ["a1", "q2b"]
        with pytest.raises(NotFound):
            store.branch_to("bob", sid, edit.id, limit=10)

    def test_all_messages_is_the_whole_tree(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        q1 = _ask(store, sid, "q1")
        store.add_user_message("alice", sid, content="q1b", parent=None)
        _answer(store, sid, q1, "a1")
        assert [m.content for m in store.all_messages("alice", sid)] == ["q1", "q1b", "a1"]
        with pytest.raises(NotFound):
            store.all_messages("bob", sid)

    # -- titles ---------------------------------------------------------------------------

    def test_an_automatic_title_never_overwrites(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        titled = store.set_title("alice", sid, "Auto", only_if_untitled=True)
        assert titled is not None and titled.title == "Auto"
        assert store.set_title("alice", sid, "Again", only_if_untitled=True) is None
        assert store.get_session("alice", sid).title == "Auto"
        assert store.set_title("alice", sid, "Asked", only_if_untitled=False).title == "Asked"
        for only in (True, False):
            with pytest.raises(NotFound):
                store.set_title("bob", sid, "Mine", only_if_untitled=only)

    # -- search ---------------------------------------------------------------------------

    def test_search_finds_only_the_owners_messages(self, store: StoreHarness) -> None:
        mine = store.create_session("alice", backend="echo", title="Trips").id
        theirs = store.create_session("bob", backend="echo").id
        old = _ask(store, mine, "A café in Lisbon")
        _answer(store, mine, old, "Try the pastéis near the river")
        store.add_user_message("bob", theirs, content="Lisbon café secrets")
        newer = _ask(store, mine, "Which café opens early in Lisbon?")
        hits = store.search("alice", parse_query("lisbon CAFE"), limit=10, offset=0)
        assert {hit.message.id for hit in hits} == {old.id, newer.id}
        assert all(hit.title == "Trips" for hit in hits)
        assert store.search("bob", parse_query("pasteis"), limit=10, offset=0) == []
        assert [h.message.id for h in store.search("alice", parse_query("past"), limit=10,
                                                     offset=0)] == [old.id + 1]  # fmt: skip
        assert store.search("alice", parse_query("!!!"), limit=10, offset=0) == []

    def test_search_follows_edits_and_deletes(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo").id
        q = _ask(store, sid, "zebra crossing")
        failed = store.add_reply("alice", sid, reply_to=q.id, content="", status="error")
        store.replace_reply("alice", sid, failed.id, content="giraffe", status="complete")
        assert [h.message.id for h in store.search(
            "alice", parse_query("giraffe"), limit=5, offset=0)] == [failed.id]  # fmt: skip
        store.delete_message("alice", sid, q.id)
        assert store.search("alice", parse_query("zebra"), limit=5, offset=0) == []
        assert store.search("alice", parse_query("giraffe"), limit=5, offset=0) == []
        gone = store.create_session("alice", backend="echo").id
        _ask(store, gone, "okapi")
        store.delete_session("alice", gone)
        assert store.search("alice", parse_query("okapi"), limit=5, offset=0) == []

    def test_shares_and_search_take_any_string(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo", title="t\x00").id
        copy = [{"role": "user", "content": "zebra\x00crossing \U0010fffd0"}]
        share = store.create_share("alice", sid, "share\x00", copy)
        assert store.get_share("share\x00") == share
        assert share.messages == copy and share.title == "t\x00"
        with pytest.raises(NotFound):
            store.get_share("share")
        message = _ask(store, sid, "zebra\x00crossing")
        hits = store.search("alice", parse_query("crossing zeb"), limit=5, offset=0)
        assert [hit.message for hit in hits] == [message]

    # -- import ---------------------------------------------------------------------------

    def test_import_keeps_the_tree_and_the_leaf(self, store: StoreHarness) -> None:
        when = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

        def message(key: str, parent: str | None, role: str, text: str) -> ImportedMessage:
            return ImportedMessage(
                key=key, parent_key=parent, role=role, content=text,  # type: ignore[arg-type]
                status="complete", created_at=when, backend=None, model="gpt-4o",
                usage={"input_tokens": 3} if role == "assistant" else None,
            )  # fmt: skip

        imported = ImportedSession(
            title="Imported",
            backend=None,
            model=None,
            system_prompt=None,
            created_at=when,
            messages=(
                message("u1", None, "user", "hello"),
                message("a1", "u1", "assistant", "hi"),
                message("a2", "u1", "assistant", "hey"),
                message("u2", "a1", "user", "more"),
            ),
            leaf_key="a2",
        )
        (session,) = store.import_sessions("alice", [imported], backend="echo")
        assert (session.title, session.message_count, session.backend) == ("Imported", 4, "echo")
        assert session.created_at == when
        page = store.list_messages("alice", session.id, limit=10)
        assert [m.content for m in page.messages] == ["hello", "hey"]
        assert page.messages[1].usage == {"input_tokens": 3}
        assert page.messages[1].reply_to == page.messages[0].id
        assert page.siblings[page.messages[1].id] == [page.messages[1].id - 1,
                                                      page.messages[1].id]  # fmt: skip
        assert [h.message.content for h in store.search(
            "alice", parse_query("more"), limit=5, offset=0)] == ["more"]  # fmt: skip

    def test_an_import_past_the_session_limit_imports_nothing(self, store: StoreHarness) -> None:
        store.create_session("alice", backend="echo")
        empty = ImportedSession(
            title=None, backend=None, model=None, system_prompt=None,
            created_at=datetime(2024, 3, 1, tzinfo=UTC), messages=(), leaf_key=None,
        )  # fmt: skip
        with pytest.raises(TooManySessions):
            store.import_sessions("alice", [empty, empty], backend="echo", limit=2)
        assert len(store.list_sessions("alice", limit=10).sessions) == 1

    # -- shares ---------------------------------------------------------------------------

    def test_shares_are_frozen_listed_and_revoked(self, store: StoreHarness) -> None:
        sid = store.create_session("alice", backend="echo", title="Shared").id
        copy = [{"role": "user", "content": "hi"}]
        share = store.create_share("alice", sid, "share-one", copy)
        assert (share.id, share.title, share.messages) == ("share-one", "Shared", copy)
        store.rename_session("alice", sid, "Renamed")
        assert store.get_share("share-one").title == "Shared"
        assert [s.id for s in store.list_shares("alice", sid)] == ["share-one"]
        with pytest.raises(NotFound):
            store.create_share("bob", sid, "share-two", copy)
        with pytest.raises(NotFound):
            store.list_shares("bob", sid)
        with pytest.raises(NotFound):
            store.delete_share("bob", sid, "share-one")
        store.delete_share("alice", sid, "share-one")
        with pytest.raises(NotFound):
            store.get_share("share-one")
        store.create_share("alice", sid, "share-three", copy)
        store.delete_session("alice", sid)
        with pytest.raises(NotFound):
            store.get_share("share-three")
