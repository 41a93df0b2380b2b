"""Edits, regenerations and branch frames over the chat socket, end to end: a real server,
the ``websockets`` client, and the HTTP API to read what was stored.

Every socket on a session receives every reply; only a socket that opted in to
conversation events (``?conversation_events=1``, or a message that used ``parent_id`` or
``regenerate``) receives branch frames, and a client of the original document sees nothing
new at all.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from chatbot.backends import Backend, ChatRequest, Usage
from chatbot.settings import BackendConfig
from tests.conftest import (
    GENEROUS_LIMITS,
    LiveServer,
    ServerFactory,
    bearer,
    expect_close,
    make_token,
    recv_json,
)
from tests.processes import ServeProcess

ALICE = make_token("alice")
#: A reply of 31 words: seconds long from a slow echo, time enough to act while it streams.
LONG = " ".join(f"w{n}" for n in range(30))


class ContextBackend(Backend):
    """Writes the turns of each request it gets, as one JSON line ``[[role, content], ...]``,
    to the file ``log``, and answers ``Re <n>: <last message>``: its ``n``-th request, so
    that two replies to one message differ."""

    models: ClassVar[tuple[str, ...]] = ("context",)

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        self.log = str(options["log"])

    def _record(self, request: ChatRequest) -> int:
        """Log the request; how many the log holds now."""
        with open(self.log, "a+", encoding="utf-8") as handle:
            handle.write(json.dumps([[m.role, m.content] for m in request.messages]) + "\n")
            handle.seek(0)
            return len(handle.readlines())

    async def stream(self, request: ChatRequest) -> Any:
        count = self._record(request)
        yield f"Re {count}: {request.messages[-1].content}"
        yield Usage(input_tokens=1, output_tokens=2)


def requests_seen(log: Path) -> list[list[list[str]]]:
    """The turns of every request the context backend got, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


def echo_server(start_server: ServerFactory, delay: float = 0.0) -> LiveServer:
    """A server whose echo backend waits ``delay`` seconds between words."""
    backends = {"echo": BackendConfig("echo", "echo", {"delay": delay})}
    return start_server(backends=backends, default_backend="echo", **GENEROUS_LIMITS)


def context_server(start_server: ServerFactory, log: Path) -> LiveServer:
    settings = start_server.settings(
        backends={"context": BackendConfig("context", "context", {"log": str(log)})},
        default_backend="context",
        **GENEROUS_LIMITS,
    )
    return start_server(settings, backend_types={"context": ContextBackend})


def new_session(server: LiveServer) -> str:
    """A session made over HTTP, with a title of its own: no automatic title (and no title
    frame) comes to interleave with the frames a test expects."""
    with server.http(ALICE) as http:
        response = http.post("/api/sessions", json={"title": "branches"})
    assert response.status_code == 201
    session_id: str = response.json()["session_id"]
    return session_id


@contextlib.contextmanager
def open_socket(server: LiveServer, session_id: str, query: str = "") -> Iterator[ClientConnection]:
    """A socket on the session, subscribed to its events once this has entered."""
    path = f"/ws/chat/?session_id={session_id}" + (f"&{query}" if query else "")
    with server.ws(ALICE, path=path) as ws:
        quiet(ws)
        yield ws


def send(ws: ClientConnection, **frame: Any) -> None:
    ws.send(json.dumps(frame))


def quiet(ws: ClientConnection) -> None:
    """Nothing is waiting for this socket: the server answers a ping with the next frame,
    and frames leave in the order they were queued."""
    send(ws, type="ping")
    assert recv_json(ws) == {"type": "pong"}


def receive(ws: ClientConnection, count: int) -> list[dict[str, Any]]:
    return [recv_json(ws) for _ in range(count)]


def stream_until_reply(ws: ClientConnection) -> tuple[str, dict[str, Any]]:
    """Read delta frames up to the reply frame: their text joined, and the reply frame."""
    text = ""
    while (frame := recv_json(ws)).get("type") == "delta":
        text += frame["delta"]
    return text, frame


def history(
    server: LiveServer, session_id: str, leaf_id: int | None = None
) -> list[dict[str, Any]]:
    """The current branch (or the one ending at ``leaf_id``), root to leaf."""
    query = "limit=100" + (f"&leaf_id={leaf_id}" if leaf_id is not None else "")
    with server.http(ALICE) as http:
        response = http.get(f"/api/sessions/{session_id}/messages?{query}")
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def session_of(server: LiveServer, session_id: str) -> dict[str, Any]:
    with server.http(ALICE) as http:
        body: dict[str, Any] = http.get(f"/api/sessions/{session_id}").json()
    return body


def turns(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


def branch_frame(leaf_id: int, session_id: str) -> dict[str, Any]:
    return {"type": "branch", "leaf_id": leaf_id, "session_id": session_id}


def reply_frame(
    stored: dict[str, Any], session_id: str, reply_to: str | None = None
) -> dict[str, Any]:
    """The extended reply frame of a reply as the HTTP API lists it."""
    frame = {
        "type": "message",
        "message": stored["content"],
        "session_id": session_id,
        "message_id": stored["id"],
        "status": stored["status"],
        "created_at": stored["created_at"],
        "backend": stored["backend"],
        "model": stored["model"],
    }
    if reply_to is not None:
        frame["reply_to"] = reply_to
    if "usage" in stored:
        frame["usage"] = stored["usage"]
    return frame


def chat(ws: ClientConnection, *texts: str) -> None:
    """Send plain messages one at a time, each answered before the next."""
    for text in texts:
        send(ws, message=text)
        assert recv_json(ws)["message"] == f"Echo: {text}"


# Edit ---------------------------------------------------------------------------------------


def test_an_edit_is_a_sibling_and_every_events_socket_gets_its_branch_before_the_reply(
    start_server: ServerFactory,
) -> None:
    server = echo_server(start_server)
    session_id = new_session(server)
    with (
        open_socket(server, session_id) as editor,
        open_socket(server, session_id, "conversation_events=1") as events,
        open_socket(server, session_id) as plain,
    ):
        chat(editor, "first", "second")
        u1, a1, u2, a2 = history(server, session_id)
        # The events socket saw those replies; the plain one too, in the original format.
        assert receive(events, 2) == [reply_frame(a1, session_id), reply_frame(a2, session_id)]
        assert receive(plain, 2) == [
            {"message": "Echo: first", "session_id": session_id},
            {"message": "Echo: second", "session_id": session_id},
        ]

        send(editor, message="second, edited", parent_id=a1["id"], id="e1")
        from_editor, from_events = receive(editor, 2), receive(events, 2)
        from_plain = recv_json(plain)
        # The plain client keeps talking: it continues the edited branch.
        send(plain, message="and then?")
        assert recv_json(plain) == {"message": "Echo: and then?", "session_id": session_id}
        after_editor, after_events = recv_json(editor), recv_json(events)
        for ws in (editor, events, plain):
            quiet(ws)

    u1b, a1b, edited, answer, then, then_answer = history(server, session_id)
    assert (u1b, a1b) == (u1, a1)
    assert turns([edited, answer, then, then_answer]) == [
        ("user", "second, edited"),
        ("assistant", "Echo: second, edited"),
        ("user", "and then?"),
        ("assistant", "Echo: and then?"),
    ]
    # Stored as a sibling of the message it edits, and answered.
    assert edited["parent_id"] == a1["id"]
    assert edited["siblings"] == [u2["id"], edited["id"]]
    assert edited["client_id"] == "e1"
    assert (answer["parent_id"], answer["in_reply_to"]) == (edited["id"], edited["id"])
    assert then["parent_id"] == answer["id"]
    expected = [branch_frame(edited["id"], session_id), reply_frame(answer, session_id, "e1")]
    assert from_editor == expected
    assert from_events == expected
    assert from_plain == {"message": "Echo: second, edited", "session_id": session_id}
    # Appending to the current branch sends no branch frame, only the reply.
    assert after_editor == after_events == reply_frame(then_answer, session_id)
    # The old branch is kept, and the session's leaf is the newest message.
    u2_now = {**u2, "siblings": [u2["id"], edited["id"]]}
    assert history(server, session_id, leaf_id=a2["id"]) == [u1, a1, u2_now, a2]
    session = session_of(server, session_id)
    assert (session["leaf_id"], session["message_count"]) == (then_answer["id"], 8)


def test_a_plain_socket_never_gets_branch_or_title_frames(start_server: ServerFactory) -> None:
    server = echo_server(start_server)
    session_id = new_session(server)
    with (
        open_socket(server, session_id) as editor,
        open_socket(server, session_id, "conversation_events=1") as events,
        open_socket(server, session_id) as plain,
    ):
        chat(editor, "first")
        _, a1 = history(server, session_id)
        receive(events, 1), receive(plain, 1)
        send(editor, message="first, edited", parent_id=None)
        receive(editor, 2), receive(events, 2)
        assert recv_json(plain) == {"message": "Echo: first, edited", "session_id": session_id}
        with server.http(ALICE) as http:
            assert (
                http.patch(f"/api/sessions/{session_id}", json={"leaf_id": a1["id"]}).status_code
                == 200
            )
            assert (
                http.patch(f"/api/sessions/{session_id}", json={"title": "renamed"}).status_code
                == 200
            )
        assert receive(events, 2) == [
            branch_frame(a1["id"], session_id),
            {"type": "title", "title": "renamed", "session_id": session_id},
        ]
        quiet(plain)


def test_the_backend_sees_only_the_path_to_the_message_it_answers(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    log = tmp_path / "requests.jsonl"
    server = context_server(start_server, log)
    session_id = new_session(server)
    with open_socket(server, session_id) as ws:
        for text in ("one", "two", "three"):
            send(ws, message=text)
            recv_json(ws)
        _, a1, _, a2, _, _ = history(server, session_id)
        for frame in (
            {"message": "two, edited", "parent_id": a1["id"]},
            {"message": "after the edit"},
            {"message": "a new start", "parent_id": None},
            {"message": "back on the first branch", "parent_id": a2["id"]},
            {"type": "regenerate", "message_id": a1["id"]},
            {"message": "next"},
        ):
            send(ws, **frame)
            receive(ws, 1 if frame.keys() == {"message"} else 2)  # with a branch frame
        quiet(ws)

    one = [["user", "one"], ["assistant", "Re 1: one"]]
    two = [["user", "two"], ["assistant", "Re 2: two"]]
    assert requests_seen(log) == [
        [["user", "one"]],
        [*one, ["user", "two"]],
        [*one, *two, ["user", "three"]],
        [*one, ["user", "two, edited"]],
        [
            *one,
            ["user", "two, edited"],
            ["assistant", "Re 4: two, edited"],
            ["user", "after the edit"],
        ],
        [["user", "a new start"]],
        [*one, *two, ["user", "back on the first branch"]],
        [["user", "one"]],
        [["user", "one"], ["assistant", "Re 8: one"], ["user", "next"]],
    ]
    assert turns(history(server, session_id)) == [
        ("user", "one"), ("assistant", "Re 8: one"), ("user", "next"), ("assistant", "Re 9: next"),
    ]  # fmt: skip


def test_an_edit_after_the_newest_message_continues_the_branch_without_a_branch_frame(
    start_server: ServerFactory,
) -> None:
    server = echo_server(start_server)
    session_id = new_session(server)
    with (
        open_socket(server, session_id) as ws,
        open_socket(server, session_id, "conversation_events=1") as events,
    ):
        chat(ws, "first")
        recv_json(events)
        _, leaf = history(server, session_id)
        send(ws, message="more", parent_id=leaf["id"], id="m")
        reply = recv_json(ws)
        assert recv_json(events) == reply
        quiet(ws), quiet(events)
    _, _, more, answer = history(server, session_id)
    assert more["parent_id"] == leaf["id"]
    assert reply == reply_frame(answer, session_id, "m")


@pytest.mark.parametrize(
    ("parent", "message"),
    [
        ("missing", "parent_id is not a message of this session"),
        ("other session", "parent_id is not a message of this session"),
        ("text", "parent_id must be a message id (an integer)"),
    ],
)
def test_an_edit_of_an_unknown_message_is_refused_and_nothing_is_stored(
    start_server: ServerFactory, parent: str, message: str
) -> None:
    server = echo_server(start_server)
    other = new_session(server)
    with open_socket(server, other) as ws:
        chat(ws, "elsewhere")
    other_id = history(server, other)[0]["id"]
    session_id = new_session(server)
    with open_socket(server, session_id) as ws:
        chat(ws, "first")
        before = history(server, session_id)
        parent_id = {"missing": 10**9, "other session": other_id, "text": str(other_id)}[parent]
        send(ws, message="edited", parent_id=parent_id, id="bad")
        assert recv_json(ws) == {
            "type": "error",
            "error": {"code": "invalid_message", "message": message, "retryable": False},
            "session_id": session_id,
            "reply_to": "bad",
        }
        quiet(ws)
    assert history(server, session_id) == before
    assert session_of(server, session_id)["message_count"] == 2


# Regenerate ---------------------------------------------------------------------------------


def test_regenerate_adds_a_sibling_reply_and_keeps_the_old_one(
    start_server: ServerFactory,
) -> None:
    server = echo_server(start_server)
    session_id = new_session(server)
    with (
        open_socket(server, session_id) as asker,
        open_socket(server, session_id, "conversation_events=1") as events,
        open_socket(server, session_id) as plain,
    ):
        chat(asker, "first", "second")
        u1, a1, u2, a2 = history(server, session_id)
        receive(events, 2), receive(plain, 2)

        send(asker, type="regenerate", message_id=a1["id"], id="r1")
        from_asker, from_events = receive(asker, 2), receive(events, 2)
        from_plain = recv_json(plain)
        current = history(server, session_id)
        # Without message_id: the newest reply of the current branch.
        send(asker, type="regenerate")
        again_asker, again_events = receive(asker, 2), receive(events, 2)
        again_plain = recv_json(plain)
        for ws in (asker, events, plain):
            quiet(ws)

    question, regenerated = current
    assert question == {**u1, "siblings": [u1["id"]]}
    assert turns(current) == [("user", "first"), ("assistant", "Echo: first")]
    assert regenerated["parent_id"] == regenerated["in_reply_to"] == u1["id"]
    assert regenerated["id"] > a2["id"]
    assert regenerated["siblings"] == [a1["id"], regenerated["id"]]
    expected = [branch_frame(u1["id"], session_id), reply_frame(regenerated, session_id, "r1")]
    assert from_asker == from_events == expected
    assert from_plain == {"message": "Echo: first", "session_id": session_id}

    question, newest = history(server, session_id)
    assert newest["siblings"] == [a1["id"], regenerated["id"], newest["id"]]
    assert newest["in_reply_to"] == u1["id"]
    expected = [branch_frame(u1["id"], session_id), reply_frame(newest, session_id)]
    assert again_asker == again_events == expected
    assert again_plain == {"message": "Echo: first", "session_id": session_id}
    # The old replies are kept, each the end of its own branch.
    old = history(server, session_id, leaf_id=a2["id"])
    assert [m["id"] for m in old] == [u1["id"], a1["id"], u2["id"], a2["id"]]
    assert old[1]["siblings"] == newest["siblings"]
    assert [m["id"] for m in history(server, session_id, leaf_id=regenerated["id"])] == [
        u1["id"], regenerated["id"],
    ]  # fmt: skip
    session = session_of(server, session_id)
    assert (session["leaf_id"], session["message_count"]) == (newest["id"], 6)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("user message", "message_id must name a reply"),
        ("other session", "message_id is not a message of this session"),
        ("missing", "message_id is not a message of this session"),
        ("text", "message_id must be a message id (an integer)"),
        ("zero", "message_id must be a message id (an integer)"),
    ],
)
def test_regenerating_what_is_no_reply_of_the_session_is_refused_and_nothing_is_stored(
    start_server: ServerFactory, target: str, message: str
) -> None:
    server = echo_server(start_server)
    other = new_session(server)
    with open_socket(server, other) as ws:
        chat(ws, "elsewhere")
    other_reply = history(server, other)[1]["id"]
    session_id = new_session(server)
    with (
        open_socket(server, session_id) as ws,
        open_socket(server, session_id, "conversation_events=1") as events,
    ):
        chat(ws, "first")
        recv_json(events)
        before = history(server, session_id)
        message_id = {
            "user message": before[0]["id"],
            "other session": other_reply,
            "missing": 10**9,
            "text": str(before[1]["id"]),
            "zero": 0,
        }[target]
        send(ws, type="regenerate", message_id=message_id, id="bad")
        error = {
            "type": "error",
            "error": {"code": "invalid_message", "message": message, "retryable": False},
            "session_id": session_id,
            "reply_to": "bad",
        }
        assert recv_json(ws) == error
        quiet(ws)
        if target not in ("text", "zero"):
            # Found wrong once the session's worker looked: every socket on it is told.
            assert recv_json(events) == error
        quiet(events)
    assert history(server, session_id) == before
    session = session_of(server, session_id)
    assert (session["leaf_id"], session["message_count"]) == (before[1]["id"], 2)


def test_regenerating_in_an_empty_session_is_refused(start_server: ServerFactory) -> None:
    server = echo_server(start_server)
    session_id = new_session(server)
    with open_socket(server, session_id) as ws:
        send(ws, type="regenerate", id="r")
        assert recv_json(ws) == {
            "type": "error",
            "error": {
                "code": "invalid_message",
                "message": "there is no reply to regenerate",
                "retryable": False,
            },
            "session_id": session_id,
            "reply_to": "r",
        }
        quiet(ws)
    assert session_of(server, session_id)["message_count"] == 0


# Idempotent ids -----------------------------------------------------------------------------


def test_an_edit_sent_twice_with_its_id_is_stored_and_answered_once(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    log = tmp_path / "requests.jsonl"
    server = context_server(start_server, log)
    session_id = new_session(server)
    with open_socket(server, session_id) as ws:
        send(ws, message="first")
        recv_json(ws)
        frame = {"message": "first, edited", "parent_id": None, "id": "e"}
        send(ws, **frame)
        first = receive(ws, 2)
        send(ws, **frame)
        second = recv_json(ws)
        quiet(ws)
    root, answer = history(server, session_id)
    assert first == [branch_frame(root["id"], session_id), reply_frame(answer, session_id, "e")]
    # Answered before: the stored reply again, and the branch did not change.
    assert second == reply_frame(answer, session_id, "e")
    assert session_of(server, session_id)["message_count"] == 4
    assert len(requests_seen(log)) == 2


def test_an_edit_sent_on_two_sockets_while_it_streams_is_answered_once(
    start_server: ServerFactory,
) -> None:
    server = echo_server(start_server, delay=0.2)
    session_id = new_session(server)
    with open_socket(server, session_id) as first, open_socket(server, session_id) as second:
        send(first, message="hi")
        recv_json(first), recv_json(second)
        edit = {"message": "hi there, said again", "parent_id": None, "id": "e"}
        send(first, **edit, stream=True)
        assert recv_json(first)["type"] == "branch"
        first_delta = recv_json(first)
        assert first_delta["type"] == "delta"
        # The same message from another socket, while the first is being answered.
        send(second, **edit)
        text, reply = stream_until_reply(first)
        from_second = recv_json(second)
        quiet(first), quiet(second)
    messages = history(server, session_id)
    assert turns(messages) == [
        ("user", "hi there, said again"),
        ("assistant", "Echo: hi there, said again"),
    ]
    assert first_delta["delta"] + text == reply["message"]
    assert reply == from_second == reply_frame(messages[1], session_id, "e")
    assert session_of(server, session_id)["message_count"] == 4


def test_a_regeneration_sent_again_with_its_id_answers_only_the_asking_socket(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    log = tmp_path / "requests.jsonl"
    server = context_server(start_server, log)
    session_id = new_session(server)
    with (
        open_socket(server, session_id) as first,
        open_socket(server, session_id, "conversation_events=1") as second,
    ):
        send(first, message="question")
        recv_json(first), recv_json(second)
        send(first, type="regenerate", id="r")
        assert [f["type"] for f in receive(first, 2)] == ["branch", "message"]
        assert [f["type"] for f in receive(second, 2)] == ["branch", "message"]
        send(second, type="regenerate", id="r")
        from_second = recv_json(second)
        quiet(first)  # nothing for the socket that did not ask
        send(first, type="regenerate", id="r")
        from_first = recv_json(first)
        quiet(first), quiet(second)
    _, regenerated = history(server, session_id)
    assert len(regenerated["siblings"]) == 2
    assert from_first == from_second == reply_frame(regenerated, session_id, "r")
    assert len(requests_seen(log)) == 2  # the question, then one regeneration
    assert session_of(server, session_id)["message_count"] == 3


# Cancel, queue, fan-out ---------------------------------------------------------------------


def long_question_cancelled(ws: ClientConnection, session_id: str) -> None:
    """Ask ``LONG`` and cancel its reply at its first words: a question whose regeneration
    takes seconds, without waiting seconds for its first answer."""
    send(ws, message=LONG, id="q", stream=True)
    assert recv_json(ws)["type"] == "delta"
    send(ws, type="cancel")
    _, reply = stream_until_reply(ws)
    assert reply["status"] == "cancelled"


@pytest.mark.parametrize("kind", ["edit", "regenerate"])
def test_a_cancel_stores_the_reply_cancelled_and_the_session_goes_on(
    start_server: ServerFactory, kind: str
) -> None:
    server = echo_server(start_server, delay=0.2)
    session_id = new_session(server)
    with open_socket(server, session_id) as ws:
        long_question_cancelled(ws, session_id)
        question, _ = history(server, session_id)
        if kind == "edit":
            send(ws, message=LONG + " again", parent_id=None, id="x", stream=True)
        else:
            send(ws, type="regenerate", id="x", stream=True)
        branch = recv_json(ws)
        first = recv_json(ws)
        assert first["type"] == "delta"
        send(ws, type="cancel")
        text, cancelled = stream_until_reply(ws)
        send(ws, message="still there?")
        _, after = stream_until_reply(ws)  # this socket asked for deltas: it gets them
        quiet(ws)
    messages = history(server, session_id)
    asked, stored, more, answer = messages
    if kind == "edit":
        assert asked["content"] == LONG + " again"
        assert asked["siblings"] == [question["id"], asked["id"]]
    else:
        assert asked == question
        assert len(stored["siblings"]) == 2
    assert branch == branch_frame(asked["id"], session_id)
    partial = first["delta"] + text
    assert 0 < len(partial) < len(f"Echo: {asked['content']}")
    assert (stored["status"], stored["content"]) == ("cancelled", partial)
    assert cancelled == reply_frame(stored, session_id, "x")
    assert turns([more, answer]) == [("user", "still there?"), ("assistant", "Echo: still there?")]
    assert (more["parent_id"], answer["status"]) == (stored["id"], "complete")
    assert after == reply_frame(answer, session_id)


def test_an_edit_queued_behind_a_streaming_reply_is_answered_after_it(
    start_server: ServerFactory,
) -> None:
    server = echo_server(start_server, delay=0.05)
    session_id = new_session(server)
    with open_socket(server, session_id) as ws:
        send(ws, message=LONG, id="long", stream=True)
        send(ws, message="edited", parent_id=None, id="edit")
        frames = []
        while len([f for f in frames if f["type"] == "message"]) < 2:
            frames.append(recv_json(ws))
        quiet(ws)
    edited, answer = history(server, session_id)
    first_reply = next(f for f in frames if f["type"] == "message")
    question, first_answer = history(server, session_id, leaf_id=first_reply["message_id"])
    assert turns([question, first_answer, edited, answer]) == [
        ("user", LONG),
        ("assistant", f"Echo: {LONG}"),
        ("user", "edited"),
        ("assistant", "Echo: edited"),
    ]
    assert edited["siblings"] == [question["id"], edited["id"]]
    # The first reply ends before anything of the edit; the edit's branch frame comes first.
    others = [f for f in frames if f["type"] != "delta"]
    assert others == [
        reply_frame(first_answer, session_id, "long"),
        branch_frame(edited["id"], session_id),
        reply_frame(answer, session_id, "edit"),
    ]
    cut = frames.index(others[0])
    assert "".join(f["delta"] for f in frames[:cut]) == f"Echo: {LONG}"
    assert {f.get("reply_to") for f in frames[:cut]} == {"long"}
    rest = [f for f in frames[cut:] if f["type"] == "delta"]
    assert "".join(f["delta"] for f in rest) == "Echo: edited"
    assert {f["reply_to"] for f in rest} == {"edit"}


def test_a_socket_opened_mid_regeneration_gets_the_text_so_far_then_the_rest(
    start_server: ServerFactory,
) -> None:
    server = echo_server(start_server, delay=0.1)
    session_id = new_session(server)
    with open_socket(server, session_id) as asker:
        long_question_cancelled(asker, session_id)
        send(asker, type="regenerate", id="r", stream=True)
        assert recv_json(asker)["type"] == "branch"
        seen = [recv_json(asker), recv_json(asker)]
        # No ping first: the text so far is the first frame this socket gets.
        with server.ws(ALICE, path=f"/ws/chat/?session_id={session_id}&stream=1") as late:
            caught_up = recv_json(late)
            late_text, late_reply = stream_until_reply(late)
            quiet(late)
        text, reply = stream_until_reply(asker)
    assert [f["type"] for f in seen] == ["delta", "delta"]
    assert "".join(f["delta"] for f in seen) + text == f"Echo: {LONG}"
    regenerated = history(server, session_id)[1]
    assert reply == reply_frame(regenerated, session_id, "r")
    # The text so far, as one delta, then the deltas that follow: they add up to the reply.
    assert caught_up["type"] == "delta"
    assert caught_up["reply_to"] == "r"
    assert len(caught_up["delta"]) >= len("".join(f["delta"] for f in seen))
    assert caught_up["delta"] + late_text == f"Echo: {LONG}"
    # A client of the original document: no branch frame, the reply frame as it was.
    assert late_reply == {"message": f"Echo: {LONG}", "session_id": session_id}


# Branch switches and deletes over HTTP --------------------------------------------------------


def test_switching_and_deleting_send_a_branch_frame_only_when_the_branch_changes(
    start_server: ServerFactory,
) -> None:
    server = echo_server(start_server)
    session_id = new_session(server)
    with (
        open_socket(server, session_id) as ws,
        open_socket(server, session_id, "conversation_events=1") as events,
        open_socket(server, session_id) as plain,
        server.http(ALICE) as http,
    ):
        chat(ws, "first", "second")
        receive(events, 2), receive(plain, 2)
        u1, a1, u2, a2 = history(server, session_id)
        send(ws, message="second, edited", parent_id=a1["id"])
        receive(ws, 2), receive(events, 2), recv_json(plain)
        edited, answer = history(server, session_id)[2:]

        def patch(leaf_id: int) -> dict[str, Any]:
            response = http.patch(f"/api/sessions/{session_id}", json={"leaf_id": leaf_id})
            assert response.status_code == 200
            body: dict[str, Any] = response.json()
            return body

        # To the first branch: through u2, down to its newest descendant.
        assert patch(u2["id"])["leaf_id"] == a2["id"]
        assert recv_json(events) == branch_frame(a2["id"], session_id)
        # Messages of the current branch: it stays current, and nobody is told.
        assert patch(a2["id"])["leaf_id"] == a2["id"]
        assert patch(u2["id"])["leaf_id"] == a2["id"]
        quiet(events)
        # Through u1, the newest child at each step: the edited branch.
        assert patch(u1["id"])["leaf_id"] == answer["id"]
        assert recv_json(events) == branch_frame(answer["id"], session_id)
        assert patch(u2["id"])["leaf_id"] == a2["id"]
        assert recv_json(events) == branch_frame(a2["id"], session_id)
        # Deleting off the current branch moves nothing.
        assert http.delete(f"/api/sessions/{session_id}/messages/{answer['id']}").status_code == 204
        quiet(events)
        # Deleting what the current branch runs through moves it to the newest sibling left.
        assert patch(edited["id"])["leaf_id"] == edited["id"]
        assert recv_json(events) == branch_frame(edited["id"], session_id)
        assert http.delete(f"/api/sessions/{session_id}/messages/{edited['id']}").status_code == 204
        assert recv_json(events) == branch_frame(a2["id"], session_id)
        # Deleting the leaf: the branch now ends at its parent.
        assert http.delete(f"/api/sessions/{session_id}/messages/{a2['id']}").status_code == 204
        assert recv_json(events) == branch_frame(u2["id"], session_id)
        quiet(events), quiet(plain)
        # The socket that edited gets them too: it opted in by using parent_id.
        assert receive(ws, 6) == [
            branch_frame(a2["id"], session_id),
            branch_frame(answer["id"], session_id),
            branch_frame(a2["id"], session_id),
            branch_frame(edited["id"], session_id),
            branch_frame(a2["id"], session_id),
            branch_frame(u2["id"], session_id),
        ]
        quiet(ws)
    assert [m["id"] for m in history(server, session_id)] == [u1["id"], a1["id"], u2["id"]]
    assert session_of(server, session_id)["message_count"] == 3


# Shutdown -----------------------------------------------------------------------------------


class SlowServe(ServeProcess):
    """``chatbot serve`` with an echo backend ``delay`` seconds a word and its own grace."""

    def __init__(self, tmp_path: Path, *, delay: float, grace: float) -> None:
        (tmp_path / "chatbot.toml").write_text(
            f'default_backend = "echo"\n[backends.echo]\ntype = "echo"\ndelay = {delay}\n'
        )
        super().__init__(
            tmp_path,
            CHATBOT_CONFIG=str(tmp_path / "chatbot.toml"),
            CHATBOT_SHUTDOWN_GRACE=str(grace),
        )
        self.db = tmp_path / "chat.db"

    def new_session(self) -> str:
        response = httpx.post(
            f"{self.url}/api/sessions", json={"title": "branches"}, headers=bearer(ALICE)
        )
        assert response.status_code == 201
        session_id: str = response.json()["session_id"]
        return session_id

    def ws(self, session_id: str) -> ClientConnection:
        return connect(
            f"{self.ws_url}?session_id={session_id}", additional_headers=bearer(ALICE),
            open_timeout=10,
        )  # fmt: skip

    def rows(self) -> list[tuple[Any, ...]]:
        """Every message: id, role, content, status, client id, parent id."""
        with contextlib.closing(sqlite3.connect(self.db)) as db:
            return db.execute(
                "SELECT id, role, content, status, client_id, parent_id FROM messages ORDER BY id"
            ).fetchall()


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[list[SlowServe]]:
    """The servers a test starts, stopped at its end whatever happens."""
    started: list[SlowServe] = []
    yield started
    for server in started:
        server.stop()


def serve(started: list[SlowServe], tmp_path: Path, **kwargs: Any) -> SlowServe:
    server = SlowServe(tmp_path, **kwargs)
    started.append(server)
    server.__enter__()
    return server


def in_flight(kind: str, reply_id: int) -> dict[str, Any]:
    """An edit of the first message, or a regeneration of its reply, that streams."""
    if kind == "edit":
        return {"message": LONG + " again", "parent_id": None, "id": "x", "stream": True}
    return {"type": "regenerate", "message_id": reply_id, "id": "x", "stream": True}


@pytest.mark.parametrize("kind", ["edit", "regenerate"])
def test_sigterm_lets_an_edit_or_a_regeneration_in_flight_finish(
    serving: list[SlowServe], tmp_path: Path, kind: str
) -> None:
    server = serve(serving, tmp_path, delay=0.05, grace=20)
    session_id = server.new_session()
    with server.ws(session_id) as ws:
        send(ws, message=LONG)
        assert recv_json(ws) == {"message": f"Echo: {LONG}", "session_id": session_id}
        send(ws, **in_flight(kind, 2))
        branch = recv_json(ws)
        deltas = receive(ws, 3)
        server.signal(signal.SIGTERM)
        text, reply = stream_until_reply(ws)
        assert expect_close(ws) == (1001, "server shutting down")
    assert server.wait() in (0, -signal.SIGTERM)
    asked = LONG + " again" if kind == "edit" else LONG
    assert "".join(d["delta"] for d in deltas) + text == f"Echo: {asked}"
    assert (reply["message"], reply["status"], reply["reply_to"]) == (
        f"Echo: {asked}", "complete", "x",
    )  # fmt: skip
    first = [
        (1, "user", LONG, "complete", None, None),
        (2, "assistant", f"Echo: {LONG}", "complete", None, 1),
    ]
    if kind == "edit":
        assert branch == branch_frame(3, session_id)
        assert server.rows() == [
            *first,
            (3, "user", asked, "complete", "x", None),
            (4, "assistant", f"Echo: {asked}", "complete", None, 3),
        ]
    else:
        assert branch == branch_frame(1, session_id)
        assert server.rows() == [*first, (3, "assistant", f"Echo: {asked}", "complete", "x", 1)]


@pytest.mark.parametrize("kind", ["edit", "regenerate"])
def test_sigterm_past_the_grace_stores_it_cancelled_and_keeps_the_queued_edit_in_its_place(
    serving: list[SlowServe], tmp_path: Path, kind: str
) -> None:
    server = serve(serving, tmp_path, delay=0.2, grace=0.5)
    session_id = server.new_session()
    with server.ws(session_id) as ws:
        long_question_cancelled(ws, session_id)
        send(ws, **in_flight(kind, 2))
        # Queued behind it: an edit that follows the first reply, and a regeneration of it.
        send(ws, message="queued edit", parent_id=2, id="qe")
        send(ws, type="regenerate", message_id=2, id="qr")
        # The pong comes once the frames before it were read (and queued): then stop.
        send(ws, type="ping")
        frames: list[dict[str, Any]] = []
        while {"type": "pong"} not in frames or frames[-1]["type"] != "delta":
            frames.append(recv_json(ws))
        frames.remove({"type": "pong"})
        assert frames[0]["type"] == "branch"
        deltas = frames[1:]
        server.signal(signal.SIGTERM)
        text, cancelled = stream_until_reply(ws)
        after = receive(ws, 3)
        assert expect_close(ws) == (1001, "server shutting down")
    assert server.wait() in (0, -signal.SIGTERM)
    partial = "".join(d["delta"] for d in deltas) + text
    assert (cancelled["message"], cancelled["status"]) == (partial, "cancelled")
    first = [
        (1, "user", LONG, "complete", "q", None),
        (2, "assistant", "Echo: ", "cancelled", None, 1),
    ]
    if kind == "edit":
        flight = [
            (3, "user", LONG + " again", "complete", "x", None),
            (4, "assistant", partial, "cancelled", None, 3),
        ]
    else:
        flight = [(3, "assistant", partial, "cancelled", "x", 1)]
    queued_id = len(first) + len(flight) + 1
    # The queued edit is kept where it was sent (after message 2), not at the leaf; the
    # regeneration has nothing to keep.
    assert server.rows() == [
        *first, *flight, (queued_id, "user", "queued edit", "complete", "qe", 2),
    ]  # fmt: skip
    assert after == [
        branch_frame(queued_id, session_id),
        {
            "type": "error",
            "error": {
                "code": "backend_unavailable",
                "message": "the server is shutting down; the message was stored but not "
                "answered, send it again with the same id to get the reply",
                "retryable": True,
            },
            "session_id": session_id,
            "reply_to": "qe",
        },
        {
            "type": "error",
            "error": {
                "code": "backend_unavailable",
                "message": "the server is shutting down; no reply was generated, send the "
                "regeneration again",
                "retryable": True,
            },
            "session_id": session_id,
            "reply_to": "qr",
        },
    ]
    # After a restart, both sent again with their ids are answered once, in their place.
    again = serve(serving, tmp_path, delay=0.0, grace=5)
    with again.ws(session_id) as ws:
        send(ws, message="queued edit", parent_id=2, id="qe")
        assert recv_json(ws)["message"] == "Echo: queued edit"
        send(ws, type="regenerate", message_id=2, id="qr")
        assert recv_json(ws) == branch_frame(1, session_id)
        assert recv_json(ws)["message"] == f"Echo: {LONG}"
    assert again.rows()[queued_id - 1 :] == [
        (queued_id, "user", "queued edit", "complete", "qe", 2),
        (queued_id + 1, "assistant", "Echo: queued edit", "complete", None, queued_id),
        (queued_id + 2, "assistant", f"Echo: {LONG}", "complete", "qr", 1),
    ]


def test_deleting_the_question_of_a_reply_in_progress_stores_no_orphan(
    start_server: ServerFactory,
) -> None:
    server = echo_server(start_server, delay=0.2)
    session_id = new_session(server)
    with open_socket(server, session_id) as ws:
        chat(ws, "kept")
        send(ws, message=LONG, id="doomed", stream=True)
        assert recv_json(ws)["type"] == "delta"
        doomed = history(server, session_id)[-1]
        assert (doomed["role"], doomed["content"]) == ("user", LONG)
        with server.http(ALICE) as http:
            response = http.delete(f"/api/sessions/{session_id}/messages/{doomed['id']}")
        assert response.status_code == 204
        while (frame := recv_json(ws)).get("type") == "delta":
            pass
        # The reply had nothing left to hang from: the socket is told, not closed.
        assert frame == {
            "type": "error",
            "error": {
                "code": "invalid_message",
                "message": "the message this reply answers was deleted; the reply was not stored",
                "retryable": False,
            },
            "session_id": session_id,
            "reply_to": "doomed",
        }
        send(ws, message="after")
        assert recv_json(ws)["type"] == "delta"
        _, reply = stream_until_reply(ws)
        assert reply["message"] == "Echo: after"
    assert turns(history(server, session_id)) == [
        ("user", "kept"), ("assistant", "Echo: kept"),
        ("user", "after"), ("assistant", "Echo: after"),
    ]  # fmt: skip
    assert session_of(server, session_id)["message_count"] == 4
