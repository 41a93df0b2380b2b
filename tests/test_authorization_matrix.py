"""Two users, every route: the second can neither read, change, delete, continue, cancel
nor even detect the first one's sessions.

User B tries every HTTP route and every way into the chat socket with the id of user A's
session, and the same with a random id that names no session. The two answers must be the
same byte for byte (status, body, headers but the date; close code and reason; frames), so
nothing tells B that the id exists. After all of B's attempts, A's session and its messages
are exactly what they were.
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
    #: The client ids of her messages, and the stored ids of all her messages.
    client_ids: list[str]
    message_ids: list[int]
    #: What A herself sends during a test (each must be answered in full, uncancelled).
    sent_by_alice: list[str] = dataclasses.field(default_factory=list)


def missing_id() -> str:
    """An id shaped like the server's (22 URL-safe characters) that names no session."""
    return secrets.token_urlsafe(16)


def new_alice_session(server: LiveServer) -> AliceSession:
    client_ids = [f"a-{secrets.token_hex(4)}", f"a-{secrets.token_hex(4)}"]
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        for n, client_id in enumerate(client_ids):
            ws.send(json.dumps({"message": f"secret plan {n}", "id": client_id}))
            assert recv_json(ws)["reply_to"] == client_id
    with server.http(ALICE) as http:
        assert http.patch(f"/api/sessions/{session_id}", json={"title": "Plans"}).is_success
        page = http.get(f"/api/sessions/{session_id}/messages").json()
    return AliceSession(session_id, client_ids, [m["id"] for m in page["messages"]])


def snapshot(server: LiveServer, session_id: str) -> tuple[Any, ...]:
    """Everything A can see of her session (with A's own token)."""
    with server.http(ALICE) as http:
        session = http.get(f"/api/sessions/{session_id}")
        messages = http.get(f"/api/sessions/{session_id}/messages", params={"limit": 100})
        listed = http.get("/api/sessions", params={"limit": 100})
    assert session.status_code == messages.status_code == 200
    mine = [s for s in listed.json()["sessions"] if s["session_id"] == session_id]
    return session.json(), messages.json(), mine


def answer(response: httpx.Response) -> tuple[int, bytes, list[tuple[str, str]]]:
    """What a client can observe of a response, but its date."""
    headers = sorted((k, v) for k, v in response.headers.items() if k.lower() != "date")
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
    (old, old_page, _), (new, new_page, listed) = before, after
    kept = len(old_page["messages"])
    assert new_page["messages"][:kept] == old_page["messages"]
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
    first, last = alice.message_ids[0], alice.message_ids[-1]
    messages = "/api/sessions/{id}/messages"
    return [
        ("GET", "/api/sessions/{id}", {}),
        ("HEAD", "/api/sessions/{id}", {}),
        ("PATCH", "/api/sessions/{id}", {"json": {"title": "mine now"}}),
        ("PATCH", "/api/sessions/{id}", {"json": {"title": None}}),
        ("PATCH", "/api/sessions/{id}", {"json": {}}),
        ("PATCH", "/api/sessions/{id}", {"json": {"title": 5}}),
        ("PATCH", "/api/sessions/{id}", {"content": b"{not json"}),
        ("PUT", "/api/sessions/{id}", {"json": {"title": "mine now"}}),
        ("POST", "/api/sessions/{id}", {"json": {}}),
        ("DELETE", "/api/sessions/{id}", {}),
        ("GET", messages, {}),
        ("HEAD", messages, {}),
        ("GET", messages, {"params": {"limit": 1}}),
        ("GET", messages, {"params": {"before": last}}),
        ("GET", messages, {"params": {"before": last + 1}}),
        ("GET", messages, {"params": {"after": 0}}),
        ("GET", messages, {"params": {"after": first}}),
        ("GET", messages, {"params": {"before": first, "after": last}}),
        ("GET", messages, {"params": {"limit": 0}}),
        ("DELETE", messages, {}),
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
    for token in (ALICE, BOB):
        with server.http(token) as http:
            for method, template, kwargs in http_attempts(deleted):
                gone = http.request(method, template.format(id=deleted.session_id), **kwargs)
                missing = http.request(method, template.format(id=missing_id()), **kwargs)
                assert answer(gone) == answer(missing), (method, template, kwargs)


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


# --- the socket -------------------------------------------------------------------------------


def close_of(
    server: LiveServer, token: str | None, session_id: str, path: str, **kwargs: Any
) -> tuple[Any, ...]:
    """What B observes opening a socket on ``session_id``: the upgrade (but its date and
    the key-dependent accept header), the frames before the close, the close."""
    with server.ws(token, session_id=session_id, path=path, **kwargs) as ws:
        assert ws.response is not None
        headers = sorted(
            (k.lower(), v)
            for k, v in ws.response.headers.raw_items()
            if k.lower() not in ("date", "sec-websocket-accept")
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
