"""Two users, every route: the second can neither read, search, export, branch, change,
delete, share, continue, cancel nor even detect the first one's sessions, messages and
shares.

User B tries every HTTP route and every way into the chat socket with the id of user A's
session, and the same with a random id that names no session; with A's message and share
ids on B's own session, and the same with ids that name nothing. The two answers must be
the same byte for byte (status, body, headers but the date; close code and reason; frames),
so nothing tells B that the id exists. After all of B's attempts, A's session, its whole
tree of messages and its shares are exactly what they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from chatbot.settings import BackendConfig
from tests.conftest import (
    GENEROUS_LIMITS,
    LiveServer,
    ServerFactory,
    expect_close,
    make_token,
    recv_json,
    wait_for,
)

ALICE = make_token("alice")
BOB = make_token("bob")
#: Seconds between two words of the echo backend's reply: a reply of n words takes n/20 s.
DELAY = 0.05


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    factory = ServerFactory(tmp_path_factory.mktemp("authz"), [])
    settings = factory.settings(
        backends={"echo": BackendConfig("echo", "echo", {"delay": DELAY})},
        default_backend="echo",
        **GENEROUS_LIMITS,
    )
    live = factory(settings)
    yield live
    live.stop()


@dataclasses.dataclass
class AliceSession:
    session_id: str
    #: The client ids of her messages, and the stored ids of all her messages (the whole
    #: tree, in id order) and of her replies.
    client_ids: list[str]
    message_ids: list[int]
    reply_ids: list[int]
    #: The newest message of the branch that is not current: the reply to her question as
    #: she first asked it, before she edited it.
    other_leaf: int
    #: Her session's shared links.
    share_ids: list[str]
    #: A word that only her messages hold.
    word: str
    #: What A herself sends during a test (each must be answered in full, uncancelled).
    sent_by_alice: list[str] = dataclasses.field(default_factory=list)


def missing_id() -> str:
    """An id shaped like the server's (22 URL-safe characters) that names no session."""
    return secrets.token_urlsafe(16)


#: A message id that names no message (the tests store far fewer).
MISSING_MESSAGE_ID = 999_999_999_999


def _reply(ws: ClientConnection) -> dict[str, Any]:
    """The next reply frame, past the branch and title frames an edit brings."""
    while (frame := recv_json(ws)).get("type") in ("branch", "title"):
        pass
    return frame


def new_alice_session(server: LiveServer) -> AliceSession:
    """A's session: two questions answered, the second one edited (so the tree has two
    branches), a title, and a shared link."""
    client_ids = [f"a-{secrets.token_hex(4)}", f"a-{secrets.token_hex(4)}"]
    word = f"zebra{secrets.token_hex(4)}"
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        replies = []
        for n, client_id in enumerate(client_ids):
            ws.send(json.dumps({"message": f"secret plan {n} {word}", "id": client_id}))
            replies.append(recv_json(ws))
            assert replies[-1]["reply_to"] == client_id
        edit = {"message": f"secret plan 1 {word}, revised", "parent_id": replies[0]["message_id"]}
        ws.send(json.dumps(edit))
        assert _reply(ws)["message"] == f"Echo: {edit['message']}"
    with server.http(ALICE) as http:
        assert http.patch(f"/api/sessions/{session_id}", json={"title": "Plans"}).is_success
        share = http.post(f"/api/sessions/{session_id}/shares")
        assert share.status_code == 201
        tree = http.get(f"/api/sessions/{session_id}/export").json()["messages"]
    assert len(tree) == 6
    return AliceSession(
        session_id,
        client_ids,
        message_ids=[m["id"] for m in tree],
        reply_ids=[m["id"] for m in tree if m["role"] == "assistant"],
        other_leaf=replies[1]["message_id"],
        share_ids=[share.json()["share_id"]],
        word=word,
    )


def snapshot(server: LiveServer, session_id: str) -> tuple[Any, ...]:
    """Everything A can see of her session (with A's own token): the session, its current
    branch, its place in her list, its whole tree and its shares."""
    with server.http(ALICE) as http:
        session = http.get(f"/api/sessions/{session_id}")
        messages = http.get(f"/api/sessions/{session_id}/messages", params={"limit": 100})
        listed = http.get("/api/sessions", params={"limit": 100})
        export = http.get(f"/api/sessions/{session_id}/export")
        shares = http.get(f"/api/sessions/{session_id}/shares")
    assert session.status_code == messages.status_code == export.status_code == 200
    assert shares.status_code == 200
    mine = [s for s in listed.json()["sessions"] if s["session_id"] == session_id]
    return session.json(), messages.json(), mine, export.json()["messages"], shares.json()


def answer(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """What a client can observe of a response, but its date and its request id (each
    request's own)."""
    headers = sorted(
        (k, v) for k, v in response.headers.items() if k.lower() not in ("date", "x-request-id")
    )
    return response.status_code, response.content, headers


@pytest.fixture
def alice(server: LiveServer) -> Iterator[AliceSession]:
    """A's session; after the test, it must be exactly as it was before, but for what A
    herself sent meanwhile, answered in full."""
    session = new_alice_session(server)
    before = snapshot(server, session.session_id)
    yield session
    after = snapshot(server, session.session_id)
    if not session.sent_by_alice:
        assert after == before
        return
    (old, old_page, _, old_tree, old_shares) = before
    (new, new_page, listed, new_tree, new_shares) = after
    kept = len(old_page["messages"])
    assert new_page["messages"][:kept] == old_page["messages"]
    assert new_tree[: len(old_tree)] == old_tree
    assert new_shares == old_shares
    added = [(m["role"], m["content"], m["status"]) for m in new_page["messages"][kept:]]
    assert added == [
        pair
        for text in session.sent_by_alice
        for pair in (("user", text, "complete"), ("assistant", f"Echo: {text}", "complete"))
    ]
    # What A's own messages change: the activity, the count, the leaf, and the automatic
    # title after A's first reply.
    changed = ("updated_at", "message_count", "leaf_id", "title")
    unchanged = {k: v for k, v in old.items() if k not in changed}
    assert new["leaf_id"] == new_page["messages"][-1]["id"]
    assert {k: new[k] for k in unchanged} == unchanged
    assert new["message_count"] == old["message_count"] + len(added)
    assert listed == [new]


def bob_session_ids(server: LiveServer, **params: Any) -> list[str]:
    ids: list[str] = []
    with server.http(BOB) as http:
        cursor = params.pop("cursor", None)
        while True:
            query = {"limit": 100, **params, **({"cursor": cursor} if cursor else {})}
            response = http.get("/api/sessions", params=query)
            assert response.status_code == 200, response.text
            page = response.json()
            ids += [s["session_id"] for s in page["sessions"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return ids


# --- HTTP -----------------------------------------------------------------------------------


def http_attempts(alice: AliceSession) -> list[tuple[str, str, dict[str, Any]]]:
    """Every request on a session id that B can make, ``{id}`` standing for the id."""
    first, last, other = alice.message_ids[0], alice.message_ids[-1], alice.other_leaf
    session = "/api/sessions/{id}"
    messages = "/api/sessions/{id}/messages"
    export = "/api/sessions/{id}/export"
    shares = "/api/sessions/{id}/shares"
    share = f"{shares}/{alice.share_ids[0]}"
    return [
        ("GET", session, {}),
        ("HEAD", session, {}),
        ("PATCH", session, {"json": {"title": "mine now"}}),
        ("PATCH", session, {"json": {"title": None}}),
        ("PATCH", session, {"json": {}}),
        ("PATCH", session, {"json": {"title": 5}}),
        ("PATCH", session, {"content": b"{not json"}),
        # Branch: switch A's session to her other branch, or to any of her messages.
        ("PATCH", session, {"json": {"leaf_id": other}}),
        ("PATCH", session, {"json": {"leaf_id": first}}),
        ("PATCH", session, {"json": {"leaf_id": other, "title": "mine now"}}),
        ("PATCH", session, {"json": {"leaf_id": 0}}),
        ("PATCH", session, {"json": {"leaf_id": "1"}}),
        ("PUT", session, {"json": {"title": "mine now"}}),
        ("POST", session, {"json": {}}),
        ("DELETE", session, {}),
        ("GET", messages, {}),
        ("HEAD", messages, {}),
        ("GET", messages, {"params": {"limit": 1}}),
        ("GET", messages, {"params": {"before": last}}),
        ("GET", messages, {"params": {"before": last + 1}}),
        ("GET", messages, {"params": {"after": 0}}),
        ("GET", messages, {"params": {"after": first}}),
        ("GET", messages, {"params": {"before": first, "after": last}}),
        ("GET", messages, {"params": {"limit": 0}}),
        ("GET", messages, {"params": {"leaf_id": other}}),
        ("GET", messages, {"params": {"leaf_id": first, "limit": 1}}),
        ("GET", messages, {"params": {"leaf_id": "x"}}),
        ("DELETE", messages, {}),
        # Delete a message: her first (all the tree is below it), each branch's leaf, none.
        *[("DELETE", f"{messages}/{m}", {}) for m in (first, other, last, MISSING_MESSAGE_ID)],
        ("DELETE", f"{messages}/not-an-id", {}),
        ("GET", f"{messages}/{first}", {}),
        ("POST", "/api/sessions/{id}/title", {}),
        ("POST", "/api/sessions/{id}/title", {"json": {"title": "mine now"}}),
        ("GET", "/api/sessions/{id}/title", {}),
        ("GET", export, {}),
        ("HEAD", export, {}),
        ("GET", export, {"params": {"format": "json"}}),
        ("GET", export, {"params": {"format": "markdown"}}),
        ("GET", export, {"params": {"format": "pdf"}}),
        ("POST", export, {}),
        ("POST", shares, {}),
        ("POST", shares, {"json": {}}),
        ("POST", shares, {"content": b"[1]"}),
        ("GET", shares, {}),
        ("HEAD", shares, {}),
        ("DELETE", shares, {}),
        ("DELETE", share, {}),
        ("DELETE", f"{shares}/{secrets.token_urlsafe(24)}", {}),
        ("DELETE", f"{shares}/{'x' * 100}", {}),
        ("GET", share, {}),
    ]


def test_every_http_route_answers_for_a_foreign_session_as_for_a_missing_one(
    server: LiveServer, alice: AliceSession
) -> None:
    with server.http(BOB) as http:
        for method, template, kwargs in http_attempts(alice):
            foreign = http.request(method, template.format(id=alice.session_id), **kwargs)
            missing = http.request(method, template.format(id=missing_id()), **kwargs)
            assert answer(foreign) == answer(missing), (method, template, kwargs)
            assert foreign.status_code in (400, 404, 405, 422), (method, template, kwargs)
    # And nothing B did reached A's session (the fixture compares it with before).


def test_a_deleted_session_answers_as_a_missing_one(server: LiveServer) -> None:
    deleted = new_alice_session(server)
    with server.http(ALICE) as http:
        assert http.delete(f"/api/sessions/{deleted.session_id}").status_code == 204
    for token in (ALICE, BOB, None):
        with server.http(token) as http:
            if token is not None:
                for method, template, kwargs in http_attempts(deleted):
                    gone = http.request(method, template.format(id=deleted.session_id), **kwargs)
                    missing = http.request(method, template.format(id=missing_id()), **kwargs)
                    assert answer(gone) == answer(missing), (method, template, kwargs)
            # Its shared link went with it.
            shared = http.get(f"/api/shares/{deleted.share_ids[0]}")
            never = http.get(f"/api/shares/{secrets.token_urlsafe(24)}")
            assert answer(shared) == answer(never)
            assert shared.status_code == 404


def test_b_never_lists_a_s_sessions(server: LiveServer, alice: AliceSession) -> None:
    # A has more sessions than fit on a page, so her list has a cursor to give away.
    others = [new_alice_session(server).session_id for _ in range(2)]
    alice_ids = {alice.session_id, *others}
    with server.http(ALICE) as http:
        page = http.get("/api/sessions", params={"limit": 1}).json()
    alice_cursor = page["next_cursor"]
    assert alice_cursor is not None
    with server.http(BOB) as http:
        created = http.post("/api/sessions", json={"title": "Bob's"})
    assert created.status_code == 201
    bob_id = created.json()["session_id"]
    assert bob_id not in alice_ids

    for listed in (
        bob_session_ids(server),
        bob_session_ids(server, limit=1),
        bob_session_ids(server, cursor=alice_cursor),
    ):
        assert not alice_ids & set(listed)
    assert bob_id in bob_session_ids(server)
    with server.http(ALICE) as http:
        listed = [s["session_id"] for s in http.get("/api/sessions?limit=100").json()["sessions"]]
        assert http.get(f"/api/sessions/{bob_id}").status_code == 404
    assert bob_id not in listed


def test_b_cannot_create_a_session_with_a_s_id(server: LiveServer, alice: AliceSession) -> None:
    with server.http(BOB) as http:
        response = http.post("/api/sessions", json={"session_id": alice.session_id})
        assert response.status_code == 422
        assert alice.session_id not in response.text
        assert alice.session_id not in bob_session_ids(server)


def test_b_sees_the_same_backends_and_nothing_of_a(server: LiveServer, alice: AliceSession) -> None:
    with server.http(ALICE) as a, server.http(BOB) as b:
        assert answer(b.get("/api/backends")) == answer(a.get("/api/backends"))


def test_b_s_own_messages_do_not_page_into_a_s(server: LiveServer, alice: AliceSession) -> None:
    """Message ids are global: A's ids used as cursors on B's own session page through B's
    messages only."""
    with server.ws(BOB) as ws:
        bob_id = recv_json(ws)["session_id"]
        for n in range(2):
            ws.send(json.dumps({"message": f"bob {n}"}))
            recv_json(ws)
    url = f"/api/sessions/{bob_id}/messages"
    with server.http(BOB) as http:
        own = {m["id"] for m in http.get(url, params={"limit": 100}).json()["messages"]}
        for message_id in alice.message_ids:
            for name in ("before", "after"):
                page = http.get(url, params={name: message_id, "limit": 100}).json()
                assert {m["id"] for m in page["messages"]} <= own
    assert not own & set(alice.message_ids)


def bob_session(server: LiveServer, *messages: str) -> str:
    """A new session of B's, with ``messages`` answered in it."""
    with server.ws(BOB) as ws:
        session_id = str(recv_json(ws)["session_id"])
        for message in messages:
            ws.send(json.dumps({"message": message}))
            recv_json(ws)
    return session_id


def bob_snapshot(server: LiveServer, session_id: str) -> tuple[Any, ...]:
    """Everything B can see of his session: the session, its tree, its shares."""
    with server.http(BOB) as http:
        session = http.get(f"/api/sessions/{session_id}")
        export = http.get(f"/api/sessions/{session_id}/export")
        shares = http.get(f"/api/sessions/{session_id}/shares")
    assert session.status_code == export.status_code == shares.status_code == 200
    return session.json(), export.json()["messages"], shares.json()


def test_a_s_message_and_share_ids_on_b_s_session_answer_as_missing_ones(
    server: LiveServer, alice: AliceSession
) -> None:
    """Message and share ids are global: on B's own session, each of A's answers exactly as
    an id that names nothing, and neither reaches A's session nor changes B's."""
    bob_id = bob_session(server, "bob's own", "and another")
    with server.http(BOB) as http:
        assert http.post(f"/api/sessions/{bob_id}/shares").status_code == 201
    before = bob_snapshot(server, bob_id)
    session = f"/api/sessions/{bob_id}"

    def attempts(message_id: int, share_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [
            ("PATCH", session, {"json": {"leaf_id": message_id}}),
            ("PATCH", session, {"json": {"leaf_id": message_id, "title": "stolen"}}),
            ("GET", f"{session}/messages", {"params": {"leaf_id": message_id}}),
            ("DELETE", f"{session}/messages/{message_id}", {}),
            ("DELETE", f"{session}/shares/{share_id}", {}),
        ]

    missing_share = secrets.token_urlsafe(24)
    with server.http(BOB) as http:
        for message_id, share_id in zip(
            alice.message_ids, alice.share_ids * len(alice.message_ids), strict=True
        ):
            foreign = attempts(message_id, share_id)
            for (method, url, kwargs), (_, missing_url, _) in zip(
                foreign, attempts(MISSING_MESSAGE_ID, missing_share), strict=True
            ):
                theirs = http.request(method, url, **kwargs)
                nobody_s = http.request(method, missing_url, **kwargs)
                assert answer(theirs) == answer(nobody_s), (method, url, kwargs)
                assert theirs.status_code == 404, (method, url, theirs.text)
    assert bob_snapshot(server, bob_id) == before


def test_b_s_search_finds_nothing_of_a_s(server: LiveServer, alice: AliceSession) -> None:
    """Search runs over the caller's messages only: A's exact words find nothing of hers
    for B, exactly as words that nobody wrote, and B's own messages with the same words
    are all B finds."""
    bob_id = bob_session(server, "bob's secret plan")
    exact = [alice.word, f"secret plan 0 {alice.word}", f'"secret plan 1 {alice.word}"']
    with server.http(ALICE) as http:
        for q in exact:
            found = http.get("/api/search", params={"q": q}).json()["results"]
            assert {r["session_id"] for r in found} == {alice.session_id}, q
    with server.http(BOB) as http:
        for q in exact:
            theirs = http.get("/api/search", params={"q": q, "limit": 100})
            nobody_s = http.get("/api/search", params={"q": f"zebra{secrets.token_hex(4)}"})
            assert answer(theirs) == answer(nobody_s), q
            assert theirs.json() == {"results": [], "next_cursor": None}
        bob_ids = set(bob_session_ids(server))
        cursor = None
        found = []
        while True:
            query = {"q": "secret plan", "limit": 1, **({"cursor": cursor} if cursor else {})}
            page = http.get("/api/search", params=query).json()
            found += page["results"]
            if (cursor := page["next_cursor"]) is None:
                break
    assert bob_id in {r["session_id"] for r in found}
    assert {r["session_id"] for r in found} <= bob_ids
    assert not {r["message_id"] for r in found} & set(alice.message_ids)


# --- the socket -------------------------------------------------------------------------------


def close_of(
    server: LiveServer, token: str | None, session_id: str, path: str, **kwargs: Any
) -> tuple[Any, ...]:
    """What B observes opening a socket on ``session_id``: the upgrade (but its date, its
    request id and the key-dependent accept header), the frames before the close, the
    close."""
    with server.ws(token, session_id=session_id, path=path, **kwargs) as ws:
        assert ws.response is not None
        headers = sorted(
            (k.lower(), v)
            for k, v in ws.response.headers.raw_items()
            if k.lower() not in ("date", "x-request-id", "sec-websocket-accept")
        )
        frames: list[str | bytes] = []
        try:
            while True:
                frames.append(ws.recv(timeout=10))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "the connection dropped without a close frame"
            close = (exc.rcvd.code, exc.rcvd.reason)
        return ws.response.status_code, headers, ws.subprotocol, frames, close


@pytest.mark.parametrize("path", ["/ws/chat/", "/ws/chat"])
@pytest.mark.parametrize("how", ["header", "subprotocol", "subprotocol+stream"])
def test_b_cannot_open_a_socket_on_a_s_session(
    server: LiveServer, alice: AliceSession, path: str, how: str
) -> None:
    kwargs: dict[str, Any] = {}
    token: str | None = BOB
    if how.startswith("subprotocol"):
        kwargs["subprotocols"] = ["chatbot.v1", "bearer." + BOB]
        token = None

    def attempt(session_id: str) -> tuple[Any, ...]:
        url_id = session_id + ("&stream=1" if how.endswith("stream") else "")
        return close_of(server, token, url_id, path, **kwargs)

    foreign = attempt(alice.session_id)
    assert foreign == attempt(missing_id())
    assert foreign[-2:] == ([], (4404, "session not found"))


def _frames_until_quiet(ws: ClientConnection, quiet: float = 0.3) -> list[dict[str, Any]]:
    frames = []
    while True:
        try:
            frames.append(recv_json(ws, timeout=quiet))
        except TimeoutError:
            return frames


def test_b_s_socket_cannot_speak_into_a_s_session(server: LiveServer, alice: AliceSession) -> None:
    with server.ws(BOB) as ws:
        bob_id = recv_json(ws)["session_id"]

        def attempt(session_id: str, **extra: Any) -> list[dict[str, Any]]:
            ws.send(json.dumps({"message": "let me in", "session_id": session_id, **extra}))
            return _frames_until_quiet(ws)

        for extra in ({}, {"id": "b-1"}, {"stream": True}, {"type": "message"}):
            foreign = attempt(alice.session_id, **extra)
            assert foreign == attempt(missing_id(), **extra)
            assert [f["error"]["code"] for f in foreign] == ["session_mismatch"]
            assert all(f["session_id"] == bob_id for f in foreign)
            assert alice.session_id not in json.dumps(foreign)
        for kind in ("cancel", "ping"):
            foreign = attempt(alice.session_id, type=kind)
            assert foreign == attempt(missing_id(), type=kind)


def test_b_cannot_branch_from_a_s_messages_over_b_s_own_socket(
    server: LiveServer, alice: AliceSession
) -> None:
    """An edit whose parent_id, or a regeneration whose message_id, is one of A's messages
    fails on B's socket exactly as one whose id names nothing, and stores nothing: not in
    B's session, not in A's."""
    bob_id = bob_session(server, "bob's question")
    before = bob_snapshot(server, bob_id)
    with server.ws(BOB, session_id=bob_id) as ws:

        def attempt(frame: dict[str, Any]) -> list[dict[str, Any]]:
            ws.send(json.dumps(frame))
            return _frames_until_quiet(ws)

        def edit(parent_id: int) -> dict[str, Any]:
            return {"message": "grafted onto A's", "parent_id": parent_id, "id": "b-edit"}

        def regenerate(message_id: int) -> dict[str, Any]:
            return {"type": "regenerate", "message_id": message_id, "id": "b-regenerate"}

        for make, ids, text in [
            (edit, alice.message_ids, "parent_id is not a message of this session"),
            (regenerate, alice.reply_ids, "message_id is not a message of this session"),
        ]:
            for message_id in ids:
                foreign = attempt(make(message_id))
                assert foreign == attempt(make(MISSING_MESSAGE_ID)), make(message_id)
                assert foreign == [
                    {
                        "type": "error",
                        "error": {"code": "invalid_message", "message": text, "retryable": False},
                        "session_id": bob_id,
                        "reply_to": make(message_id)["id"],
                    }
                ]
    assert bob_snapshot(server, bob_id) == before
    for token in (ALICE, BOB):
        with server.http(token) as http:
            found = http.get("/api/search", params={"q": "grafted"}).json()
        assert found == {"results": [], "next_cursor": None}


def test_b_cannot_cancel_a_s_reply(server: LiveServer, alice: AliceSession) -> None:
    words = " ".join(f"w{n}" for n in range(30))  # about 1.5 s of reply
    replies: list[dict[str, Any]] = []

    with server.ws(ALICE, session_id=alice.session_id) as a, server.ws(BOB) as b:
        bob_id = recv_json(b)["session_id"]

        def alice_reads() -> None:
            while not replies or replies[-1].get("type") == "delta":
                replies.append(recv_json(a, timeout=15))

        a.send(json.dumps({"message": words, "id": "slow", "stream": True}))
        alice.sent_by_alice.append(words)
        reader = threading.Thread(target=alice_reads)
        reader.start()
        # Wait until A's reply is being generated, then let B try to stop it.
        wait_for(lambda: replies, "the first frame of A's reply", 10)
        assert replies[0]["type"] == "delta"
        b.send(json.dumps({"type": "cancel"}))
        b.send(json.dumps({"type": "cancel", "session_id": alice.session_id}))
        b.send(json.dumps({"type": "cancel", "id": "slow"}))
        for path in ("/ws/chat/", "/ws/chat"):
            with server.ws(BOB, session_id=alice.session_id, path=path) as intruder:
                with contextlib.suppress(ConnectionClosed):  # closed before it could be sent
                    intruder.send(json.dumps({"type": "cancel"}))
                assert expect_close(intruder) == (4404, "session not found")
        reader.join(timeout=15)
        assert not reader.is_alive()
        # B's own socket heard nothing of A's reply.
        assert _frames_until_quiet(b) == []
        b.send(json.dumps({"message": "mine"}))
        assert recv_json(b) == {"message": "Echo: mine", "session_id": bob_id}

    final = replies[-1]
    assert final["type"] == "message"
    assert final["status"] == "complete"
    assert final["message"] == f"Echo: {words}"
    assert "".join(f["delta"] for f in replies[:-1]) == final["message"]
    with server.http(ALICE) as http:
        stored = http.get(f"/api/sessions/{alice.session_id}/messages").json()["messages"]
    assert (stored[-1]["content"], stored[-1]["status"]) == (f"Echo: {words}", "complete")


def test_a_s_client_id_on_b_s_session_runs_b_s_message(
    server: LiveServer, alice: AliceSession
) -> None:
    with server.ws(BOB) as b:
        bob_id = recv_json(b)["session_id"]
        for client_id in alice.client_ids:
            b.send(json.dumps({"message": "my own question", "id": client_id}))
            reply = recv_json(b)
            assert reply["type"] == "message"
            assert reply["message"] == "Echo: my own question"
            assert reply["reply_to"] == client_id
            assert reply["session_id"] == bob_id
            assert "secret plan" not in json.dumps(reply)


def test_a_s_client_id_on_b_s_session_while_a_s_reply_is_generating(
    server: LiveServer, alice: AliceSession
) -> None:
    words = " ".join(f"v{n}" for n in range(20))
    with server.ws(ALICE, session_id=alice.session_id) as a, server.ws(BOB) as b:
        bob_id = recv_json(b)["session_id"]
        a.send(json.dumps({"message": words, "id": "in-flight", "stream": True}))
        alice.sent_by_alice.append(words)
        assert recv_json(a)["type"] == "delta"
        b.send(json.dumps({"message": "mine", "id": "in-flight", "stream": True}))
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1]["type"] == "delta":
            frames.append(recv_json(b))
        assert frames[-1]["message"] == "Echo: mine"
        assert all(f["session_id"] == bob_id for f in frames)
        assert "".join(f["delta"] for f in frames[:-1]) == "Echo: mine"
        while (frame := recv_json(a))["type"] == "delta":
            pass
        assert (frame["message"], frame["status"]) == (f"Echo: {words}", "complete")
