"""Live replies, end to end: streaming, cancel, one generation per session, every socket in
sync, resume after a disconnect, duplicate ids. The recording backend streams slowly enough
that each race is decided by the test, not by the machine's speed."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from chatbot.backends import Backend, ChatRequest, Usage
from chatbot.settings import BackendConfig
from tests.backends import FlakyBackend, RecordingBackend, read_log
from tests.conftest import LiveServer, ServerFactory, make_token, recv_json, wait_for

ALICE = make_token("alice")
CHUNKS = 20
FULL = "".join(f"w{n} " for n in range(CHUNKS))


class ProgressBackend(RecordingBackend):
    """A recording backend that also logs ``took <message> <n>`` once the server has taken
    its n-th chunk: the stream only goes on when the server asks for the next one."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        last = request.messages[-1].content
        taken = 0
        async with contextlib.aclosing(super().stream(request)) as chunks:
            async for chunk in chunks:
                yield chunk
                taken += 1
                self._write(f"took {last} {taken}")


@pytest.fixture
def log(tmp_path: Path) -> str:
    return str(tmp_path / "backend.log")


def recording_server(
    start_server: ServerFactory,
    log: str,
    delay: float = 0.05,
    backend_type: type[Backend] = RecordingBackend,
    **overrides: Any,
) -> LiveServer:
    settings = start_server.settings(
        backends={
            "rec": BackendConfig("rec", "recorder", {"log": log, "delay": delay, "chunks": CHUNKS})
        },
        default_backend="rec",
        **overrides,
    )
    return start_server(settings, backend_types={"recorder": backend_type})


@pytest.fixture
def server(start_server: ServerFactory, log: str) -> LiveServer:
    return recording_server(start_server, log)


def frames_until_reply(ws: ClientConnection) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every delta frame, then the final frame (a reply or an error)."""
    deltas = []
    while True:
        frame = recv_json(ws)
        if frame.get("type") != "delta":
            return deltas, frame
        deltas.append(frame)


def stored(server: LiveServer, session_id: str) -> list[tuple[str, str, str]]:
    with server.http(ALICE) as http:
        messages = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
    return [(m["role"], m["content"], m["status"]) for m in messages]


def wait_until_generating(server: LiveServer, session_id: str) -> None:
    """Return once the session's reply has produced text (seen by a streaming watcher)."""
    with server.ws(ALICE, path=f"/ws/chat/?session_id={session_id}&stream=1") as watcher:
        assert recv_json(watcher)["type"] == "delta"


def test_streamed_deltas_add_up_to_the_final_text(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "go", "stream": True, "id": "s1"}))
        deltas, final = frames_until_reply(ws)
    assert len(deltas) == CHUNKS
    assert all(d == {"type": "delta", "delta": d["delta"], "session_id": session_id,
                     "reply_to": "s1"} for d in deltas)  # fmt: skip
    assert "".join(d["delta"] for d in deltas) == final["message"] == FULL
    assert final["type"] == "message"
    assert final["status"] == "complete"
    assert stored(server, session_id)[-1] == ("assistant", FULL, "complete")


def test_a_client_that_never_asks_never_sees_a_delta(server: LiveServer) -> None:
    with server.ws(ALICE) as plain:
        session_id = recv_json(plain)["session_id"]
        with server.ws(ALICE, session_id=session_id) as streaming:
            streaming.send('{"type": "ping"}')
            assert recv_json(streaming) == {"type": "pong"}
            streaming.send(json.dumps({"message": "go", "stream": True}))
            deltas, _ = frames_until_reply(streaming)
            assert len(deltas) == CHUNKS
        # The plain socket's very next frame is the reply itself, in the original format.
        assert recv_json(plain) == {"message": FULL, "session_id": session_id}


def test_connection_level_stream_opt_in(server: LiveServer) -> None:
    with server.ws(ALICE) as sender:
        session_id = recv_json(sender)["session_id"]
        with server.ws(ALICE, path=f"/ws/chat/?session_id={session_id}&stream=1") as watcher:
            watcher.send('{"type": "ping"}')
            assert recv_json(watcher) == {"type": "pong"}
            sender.send(json.dumps({"message": "go"}))
            deltas, final = frames_until_reply(watcher)
        assert "".join(d["delta"] for d in deltas) == FULL
        assert final == {"message": FULL, "session_id": session_id}
        assert recv_json(sender) == final


def test_cancel_stops_the_backend_and_keeps_the_partial_text(server: LiveServer, log: str) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "long", "stream": True, "id": "c1"}))
        received = [recv_json(ws) for _ in range(3)]
        assert [f["type"] for f in received] == ["delta"] * 3
        ws.send('{"type": "cancel"}')
        deltas, final = frames_until_reply(ws)
    partial = "".join(f["delta"] for f in received + deltas)
    assert final["status"] == "cancelled"
    assert final["reply_to"] == "c1"
    assert final["message"] == partial
    assert 3 <= len(partial.split()) < CHUNKS
    assert stored(server, session_id) == [
        ("user", "long", "complete"),
        ("assistant", partial, "cancelled"),
    ]
    wait_for(
        lambda: any(line.startswith("closed long") for line in read_log(log)),
        "the backend to log that its stream was closed",
    )
    assert read_log(log) == ["start long", f"closed long after {len(partial.split())}"]


def test_cancel_from_a_plain_client_says_cancelled(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "long"}))
        wait_until_generating(server, session_id)
        ws.send('{"type": "cancel"}')
        final = recv_json(ws)
    assert set(final) == {"message", "session_id", "status"}
    assert final["status"] == "cancelled"
    assert final["session_id"] == session_id
    assert 0 < len(final["message"]) < len(FULL)


def test_cancel_with_nothing_running_is_ignored(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        recv_json(ws)
        ws.send('{"type": "cancel"}')
        ws.send('{"type": "ping"}')
        assert recv_json(ws) == {"type": "pong"}


def test_messages_wait_their_turn_and_are_answered_in_order(server: LiveServer, log: str) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        for n in range(3):
            ws.send(json.dumps({"message": f"q{n}", "id": f"q{n}"}))
        replies = [recv_json(ws) for _ in range(3)]
    assert [r["reply_to"] for r in replies] == ["q0", "q1", "q2"]
    assert read_log(log) == ["start q0", "start q1", "start q2"]
    assert stored(server, session_id) == [
        ("user", "q0", "complete"), ("assistant", FULL, "complete"),
        ("user", "q1", "complete"), ("assistant", FULL, "complete"),
        ("user", "q2", "complete"), ("assistant", FULL, "complete"),
    ]  # fmt: skip


def test_past_the_queue_bound_is_busy(start_server: ServerFactory, log: str) -> None:
    server = recording_server(start_server, log, session_queue_size=1)
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "a", "id": "a"}))
        wait_until_generating(server, session_id)
        ws.send(json.dumps({"message": "b", "id": "b"}))  # waits
        ws.send(json.dumps({"message": "c", "id": "c"}))  # one too many
        busy = recv_json(ws)
        assert busy["type"] == "error"
        assert busy["reply_to"] == "c"
        assert busy["error"]["code"] == "busy"
        assert busy["error"]["retryable"] is True
        assert [recv_json(ws)["reply_to"] for _ in range(2)] == ["a", "b"]
    assert read_log(log) == ["start a", "start b"]


def test_one_generation_per_session_across_sockets(server: LiveServer, log: str) -> None:
    with server.ws(ALICE) as first:
        session_id = recv_json(first)["session_id"]
        with server.ws(ALICE, session_id=session_id) as second:
            second.send('{"type": "ping"}')
            recv_json(second)
            first.send(json.dumps({"message": "one", "id": "1"}))
            second.send(json.dumps({"message": "two", "id": "2"}))
            from_first = [recv_json(first)["reply_to"] for _ in range(2)]
            from_second = [recv_json(second)["reply_to"] for _ in range(2)]
    assert from_first == from_second == ["1", "2"]
    assert read_log(log) == ["start one", "start two"]


def test_two_sockets_receive_every_frame(server: LiveServer) -> None:
    with server.ws(ALICE) as first:
        session_id = recv_json(first)["session_id"]
        with server.ws(ALICE, path=f"/ws/chat/?session_id={session_id}&stream=1") as second:
            second.send('{"type": "ping"}')
            recv_json(second)
            first.send(json.dumps({"message": "both", "stream": True, "id": "b"}))
            one = frames_until_reply(first)
            two = frames_until_reply(second)
    assert [d["delta"] for d in one[0]] == [d["delta"] for d in two[0]]
    assert len(one[0]) == CHUNKS
    assert one[1]["message"] == two[1]["message"] == FULL


def test_disconnect_does_not_cancel_and_reconnect_gets_the_rest(
    start_server: ServerFactory, log: str
) -> None:
    server = recording_server(start_server, log, backend_type=ProgressBackend)
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "resume me", "stream": True, "id": "r"}))
        before = [recv_json(ws)["delta"] for _ in range(4)]
    # The reply goes on without anyone listening: the server takes a chunk this socket
    # never saw.
    wait_for(
        lambda: f"took resume me {len(before) + 1}" in read_log(log),
        "the server to take a chunk after the socket closed",
    )
    with server.ws(ALICE, path=f"/ws/chat/?session_id={session_id}&stream=1") as ws:
        deltas, final = frames_until_reply(ws)
    # The first frame holds everything generated while away (and before), in one delta.
    assert deltas[0]["delta"].startswith("".join(before))
    assert len(deltas[0]["delta"]) > len("".join(before))
    assert "".join(d["delta"] for d in deltas) == final["message"] == FULL
    assert final == {"message": FULL, "session_id": session_id}
    assert stored(server, session_id) == [
        ("user", "resume me", "complete"),
        ("assistant", FULL, "complete"),
    ]
    assert [line for line in read_log(log) if not line.startswith("took ")] == ["start resume me"]
    assert f"took resume me {CHUNKS}" in read_log(log)


def test_reconnect_without_streaming_gets_just_the_reply(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "later"}))
        wait_until_generating(server, session_id)
    with server.ws(ALICE, session_id=session_id) as ws:
        assert recv_json(ws) == {"message": FULL, "session_id": session_id}


def test_a_stored_id_is_not_run_again(server: LiveServer, log: str) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "once", "id": "same"}))
        first = recv_json(ws)
    with server.ws(ALICE, session_id=session_id) as ws:
        ws.send(json.dumps({"message": "once", "id": "same"}))
        again = recv_json(ws)
    assert again == first
    assert read_log(log) == ["start once"]
    assert stored(server, session_id) == [
        ("user", "once", "complete"),
        ("assistant", FULL, "complete"),
    ]


def test_an_in_progress_id_is_not_run_again(server: LiveServer, log: str) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "slow", "id": "dup", "stream": True}))
        recv_json(ws)
    # Retry after a dropped connection, while the first attempt is still generating.
    with server.ws(ALICE, session_id=session_id) as ws:
        ws.send(json.dumps({"message": "slow", "id": "dup", "stream": True}))
        deltas, final = frames_until_reply(ws)
    assert "".join(d["delta"] for d in deltas) == final["message"] == FULL
    assert final["reply_to"] == "dup"
    assert read_log(log) == ["start slow"]
    assert len(stored(server, session_id)) == 2


def test_the_same_id_from_two_sockets_at_once_runs_once(server: LiveServer, log: str) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(server.ws(ALICE, session_id=session_id)) for _ in range(2)]
        barrier = threading.Barrier(2)
        frame = json.dumps({"message": "race", "id": "race"})

        def send(ws: ClientConnection) -> None:
            barrier.wait()
            ws.send(frame)

        threads = [threading.Thread(target=send, args=(ws,)) for ws in sockets]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        replies = [recv_json(ws) for ws in sockets]
    assert [r["message"] for r in replies] == [FULL, FULL]
    assert read_log(log) == ["start race"]
    assert stored(server, session_id) == [
        ("user", "race", "complete"),
        ("assistant", FULL, "complete"),
    ]


def test_backend_failure_mid_stream(start_server: ServerFactory) -> None:
    settings = start_server.settings(
        backends={"flaky": BackendConfig("flaky", "flaky")}, default_backend="flaky"
    )
    server = start_server(settings, backend_types={"flaky": FlakyBackend})
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "fail-late", "stream": True, "id": "x"}))
        deltas, error = frames_until_reply(ws)
        assert [d["delta"] for d in deltas] == ["partial "]
        assert error["type"] == "error"
        assert error["reply_to"] == "x"
        assert error["error"]["code"] == "backend_error"
        assert error["error"]["retryable"] is False
        ws.send(json.dumps({"message": "next", "stream": True}))
        deltas, final = frames_until_reply(ws)
        assert "".join(d["delta"] for d in deltas) == final["message"]
        assert final["status"] == "complete"
    assert stored(server, session_id) == [
        ("user", "fail-late", "complete"),
        ("assistant", "partial ", "error"),
        ("user", "next", "complete"),
        ("assistant", "partial answer to next with flaky-1", "complete"),
    ]


def test_resending_the_id_being_streamed_repeats_no_text(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": "slow", "id": "same", "stream": True}))
        first = [recv_json(ws) for _ in range(3)]
        ws.send(json.dumps({"message": "slow", "id": "same", "stream": True}))
        deltas, final = frames_until_reply(ws)
    assert "".join(d["delta"] for d in first + deltas) == final["message"] == FULL


def test_starting_to_stream_mid_reply_catches_up_first(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "slow", "id": "one"}))
        wait_until_generating(server, session_id)  # this socket has seen none of it
        ws.send(json.dumps({"message": "next", "id": "two", "stream": True}))
        deltas, final = frames_until_reply(ws)
    assert final["reply_to"] == "one"
    assert deltas[0]["delta"].startswith("w0 ")  # the catch-up starts at the beginning
    assert "".join(d["delta"] for d in deltas) == final["message"] == FULL


def test_a_cancel_right_after_the_message_is_not_lost(server: LiveServer, log: str) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "stop at once", "id": "x"}))
        ws.send('{"type": "cancel"}')
        final = recv_json(ws)
    assert final["status"] == "cancelled"
    assert (final["backend"], final["model"]) == ("rec", "recorder")
    assert len(final["message"]) < len(FULL)
    assert stored(server, session_id)[-1] == ("assistant", final["message"], "cancelled")
