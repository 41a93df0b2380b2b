"""The chat socket, end to end: a real server, the ``websockets`` client, a SQLite file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.backends import FlakyBackend, StoreProbeBackend
from tests.conftest import (
    LiveServer,
    ServerFactory,
    expect_close,
    make_token,
    recv_json,
    wait_for,
)

ALICE = make_token("alice")


def open_new(server: LiveServer, token: str = ALICE, **kwargs: object) -> tuple[object, str]:
    ws = server.ws(token, **kwargs)  # type: ignore[arg-type]
    first = recv_json(ws)
    return ws, first["session_id"]


def test_new_session_frame_is_exactly_the_original_one(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        raw = ws.recv(timeout=10)
        assert isinstance(raw, str)
        session_id = json.loads(raw)["session_id"]
        assert raw == '{"session_id": "%s"}' % session_id
        assert len(session_id) >= 22


def test_reply_is_byte_for_byte_the_original_format(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "Hello AI!", "session_id": session_id}))
        raw = ws.recv(timeout=10)
        assert raw == '{"message": "Echo: Hello AI!", "session_id": "%s"}' % session_id


def test_path_without_trailing_slash(server: LiveServer) -> None:
    with server.ws(ALICE, path="/ws/chat") as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "hi"}))
        assert recv_json(ws) == {"message": "Echo: hi", "session_id": session_id}


def test_continuing_a_session_sends_nothing_on_open(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "one", "session_id": session_id}))
        recv_json(ws)
    with server.ws(ALICE, session_id=session_id) as ws:
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.5)
        ws.send(json.dumps({"message": "two", "session_id": session_id}))
        assert recv_json(ws) == {"message": "Echo: two", "session_id": session_id}
    with server.http(ALICE) as http:
        messages = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "one"),
        ("assistant", "Echo: one"),
        ("user", "two"),
        ("assistant", "Echo: two"),
    ]


def test_unknown_and_foreign_sessions_close_4404_alike(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        alice_session = recv_json(ws)["session_id"]
    bob = make_token("bob")
    with server.ws(bob, session_id=alice_session) as ws:
        foreign = expect_close(ws)
    with server.ws(bob, session_id="no-such-session-id-at-all") as ws:
        missing = expect_close(ws)
    assert foreign == missing == (4404, "session not found")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('"hello"', "invalid_message"),
        ("{}", "invalid_message"),
        ('{"message": 42}', "invalid_message"),
        ('{"message": ""}', "invalid_message"),
        ('{"message": "   \\n "}', "invalid_message"),
        ('{"message": "%s"}' % ("x" * 41), "message_too_long"),
        ('{"message": "hi", "session_id": "someone-elses"}', "session_mismatch"),
        ('{"message": "hi", "session_id": 7}', "invalid_message"),
        ('{"message": "hi", "id": 7}', "invalid_message"),
        ('{"message": "hi", "id": ""}', "invalid_message"),
        ('{"message": "hi", "stream": "yes"}', "invalid_message"),
        ('{"type": "dance"}', "invalid_message"),
        ("[" * 100_000, "invalid_json"),
    ],
)
def test_bad_frames_get_an_error_frame_and_the_socket_stays_usable(
    start_server: ServerFactory, frame: str, code: str
) -> None:
    server = start_server(max_message_chars=40)
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(frame)
        error = recv_json(ws)
        assert error["type"] == "error"
        assert error["session_id"] == session_id
        assert error["error"]["code"] == code
        assert error["error"]["retryable"] is False
        assert error["error"]["message"]
        ws.send(json.dumps({"message": "still there?"}))
        assert recv_json(ws) == {"message": "Echo: still there?", "session_id": session_id}


def test_error_frame_carries_reply_to(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": "", "id": "m-1"}))
        error = recv_json(ws)
        assert error["reply_to"] == "m-1"
        assert error["error"]["code"] == "invalid_message"


def test_ping_pong(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        recv_json(ws)
        ws.send('{"type": "ping"}')
        assert recv_json(ws) == {"type": "pong"}


def test_extended_reply_frames_are_opt_in_by_id(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "plain"}))
        assert set(recv_json(ws)) == {"message", "session_id"}
        ws.send(json.dumps({"message": "tagged", "id": "c-1"}))
        reply = recv_json(ws)
    assert reply["type"] == "message"
    assert reply["message"] == "Echo: tagged"
    assert reply["session_id"] == session_id
    assert reply["reply_to"] == "c-1"
    assert reply["status"] == "complete"
    assert reply["backend"] == "echo"
    assert reply["model"] == "echo"
    assert reply["usage"] == {"input_tokens": 4, "output_tokens": 2}
    assert reply["created_at"].endswith("Z")
    with server.http(ALICE) as http:
        stored = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
    assert stored[-1]["id"] == reply["message_id"]


def test_extended_reply_frames_by_subprotocol(server: LiveServer) -> None:
    with server.ws(subprotocols=["chatbot.v1", "bearer." + ALICE]) as ws:
        assert ws.subprotocol == "chatbot.v1"
        recv_json(ws)
        ws.send(json.dumps({"message": "hi"}))
        reply = recv_json(ws)
        assert reply["type"] == "message"
        assert isinstance(reply["message_id"], int)


def test_frame_over_the_limit_closes_1009(start_server: ServerFactory) -> None:
    # The application's own limit holds even when the server's is larger (a mounted app).
    server = start_server(max_frame_bytes=2000)
    with server.ws(ALICE) as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": "x" * 2100}))
        assert expect_close(ws)[0] == 1009


def test_frame_over_the_server_limit_closes_1009(start_server: ServerFactory) -> None:
    server = start_server(ws_max_size=4096)
    with server.ws(ALICE) as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": "x" * 5000}))
        assert expect_close(ws)[0] == 1009


def test_binary_frame_closes_1003(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        recv_json(ws)
        ws.send(b'{"message": "hi"}')
        assert expect_close(ws)[0] == 1003


def test_every_socket_on_a_session_gets_the_reply(server: LiveServer) -> None:
    with server.ws(ALICE) as first:
        session_id = recv_json(first)["session_id"]
        with server.ws(ALICE, session_id=session_id) as second:
            second.send('{"type": "ping"}')
            assert recv_json(second) == {"type": "pong"}  # subscribed by now
            first.send(json.dumps({"message": "to both"}))
            expected = {"message": "Echo: to both", "session_id": session_id}
            assert recv_json(first) == expected
            assert recv_json(second) == expected


def test_deleting_a_session_closes_its_sockets_4404(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        with server.http(ALICE) as http:
            assert http.delete(f"/api/sessions/{session_id}").status_code == 204
        assert expect_close(ws) == (4404, "session not found")


def test_user_message_is_stored_before_the_backend_runs(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    settings = start_server.settings(
        backends={"probe": _config("probe", "probe", path=str(db))}, default_backend="probe"
    )
    server = start_server(settings, backend_types={"probe": StoreProbeBackend})
    with server.ws(ALICE) as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": "is it there?"}))
        assert recv_json(ws)["message"] == "stored=1"


def test_reply_is_stored_before_its_frame_is_sent(server: LiveServer, tmp_path: Path) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        for n in range(5):
            ws.send(json.dumps({"message": f"m{n}"}))
            reply = recv_json(ws)
            # Read the file with another connection the moment the frame arrives.
            with sqlite3.connect(tmp_path / "chat.db") as db:
                rows = db.execute(
                    "SELECT content, status FROM messages WHERE session_id = ? "
                    "AND role = 'assistant' ORDER BY id DESC LIMIT 1",
                    (session_id,),
                ).fetchall()
            assert rows == [(reply["message"], "complete")]


def _config(name: str, type_: str, **options: object) -> object:
    from chatbot.settings import BackendConfig

    return BackendConfig(name=name, type=type_, options=options)


@pytest.fixture
def flaky(start_server: ServerFactory) -> LiveServer:
    settings = start_server.settings(
        backends={"flaky": _config("flaky", "flaky")}, default_backend="flaky"
    )
    return start_server(settings, backend_types={"flaky": FlakyBackend})


def test_backend_failure_is_an_error_frame_and_the_session_goes_on(flaky: LiveServer) -> None:
    with flaky.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "fail", "id": "a"}))
        error = recv_json(ws)
        assert error == {
            "type": "error",
            "error": {
                "code": "backend_unavailable",
                "message": "the upstream answered 503",
                "retryable": True,
            },
            "session_id": session_id,
            "reply_to": "a",
        }
        ws.send(json.dumps({"message": "fail-late", "id": "b"}))
        error = recv_json(ws)
        assert error["error"]["code"] == "backend_error"
        assert error["error"]["retryable"] is False
        assert "partial reply" in error["error"]["message"]
        ws.send(json.dumps({"message": "hello"}))
        assert recv_json(ws)["message"] == "partial answer to hello with flaky-1"
    with flaky.http(ALICE) as http:
        messages = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
    assert [(m["role"], m["content"], m["status"]) for m in messages] == [
        ("user", "fail", "complete"),
        ("assistant", "", "error"),
        ("user", "fail-late", "complete"),
        ("assistant", "partial ", "error"),
        ("user", "hello", "complete"),
        ("assistant", "partial answer to hello with flaky-1", "complete"),
    ]
    assert messages[-1]["usage"] == {"input_tokens": 3, "output_tokens": 4}


def test_unexpected_backend_exception_leaks_nothing(
    flaky: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    from chatbot.redact import RedactSecrets

    # The log as its reader sees it: through the filter that `chatbot serve` puts on the
    # handler every record reaches.
    caplog.handler.addFilter(RedactSecrets())
    with flaky.ws(ALICE) as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": "crash"}))
        error = recv_json(ws)
        assert error["error"]["code"] == "backend_error"
        assert "sk-do-not-leak" not in json.dumps(error)
        assert "Traceback" not in json.dumps(error)
        ws.send(json.dumps({"message": "after"}))
        assert recv_json(ws)["message"].startswith("partial answer to after")
    # The operator learns what failed, with its traceback, and not the secret in it.
    [record] = [r for r in caplog.records if r.getMessage() == "backend 'flaky' failed"]
    assert record.levelname == "ERROR"
    assert "ValueError: an unexpected bug with a secret [redacted]" in caplog.text
    assert "sk-do-not-leak" not in caplog.text


def test_restart_keeps_history(start_server: ServerFactory) -> None:
    first = start_server()
    with first.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "remember me"}))
        recv_json(ws)
    first.stop()
    second = start_server()
    with second.http(ALICE) as http:
        session = http.get(f"/api/sessions/{session_id}").json()
        messages = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
    assert session["message_count"] == 2
    assert [m["content"] for m in messages] == ["remember me", "Echo: remember me"]
    with second.ws(ALICE, session_id=session_id) as ws:
        ws.send(json.dumps({"message": "still here"}))
        assert recv_json(ws) == {"message": "Echo: still here", "session_id": session_id}


def test_closed_socket_does_not_lose_the_reply(server: LiveServer) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "bye"}))
    with server.http(ALICE) as http:

        def stored() -> list[str]:
            messages = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
            return [m["content"] for m in messages] if len(messages) >= 2 else []

        assert wait_for(stored, "the reply to be stored", 10) == ["bye", "Echo: bye"]


def test_unpaired_surrogates_are_refused_and_the_socket_keeps_answering(
    server: LiveServer,
) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send('{"message": "", "id": "\\ud800"}')
        error = recv_json(ws)
        assert error["error"]["code"] == "invalid_message"
        assert "reply_to" not in error
        ws.send('{"message": "hi \\ud800", "id": "x"}')
        error = recv_json(ws)
        assert (error["error"]["code"], error["reply_to"]) == ("invalid_message", "x")
        ws.send('{"message": "ok", "id": "\\udfff"}')
        assert recv_json(ws)["error"]["code"] == "invalid_message"
        ws.send('{"type": "ping"}')
        assert recv_json(ws) == {"type": "pong"}
        ws.send(json.dumps({"message": "fine"}))
        assert recv_json(ws) == {"message": "Echo: fine", "session_id": session_id}


def test_a_fast_backend_does_not_overrun_a_streaming_client(server: LiveServer) -> None:
    words = " ".join(f"w{n}" for n in range(3000))
    with server.ws(ALICE) as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": words, "stream": True}))
        text = ""
        while (frame := recv_json(ws))["type"] == "delta":
            text += frame["delta"]
    assert frame["type"] == "message"
    assert text == frame["message"] == f"Echo: {words}"


def test_a_failed_reply_is_answered_again_when_its_id_is_resent(flaky: LiveServer) -> None:
    with flaky.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "fail-once", "id": "r"}))
        error = recv_json(ws)
        assert (error["error"]["code"], error["error"]["retryable"]) == (
            "backend_unavailable", True,
        )  # fmt: skip
        ws.send(json.dumps({"message": "fail-once", "id": "r"}))
        reply = recv_json(ws)
    assert reply["status"] == "complete"
    assert reply["message"] == "partial answer to fail-once with flaky-1"
    with flaky.http(ALICE) as http:
        messages = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert messages[1]["id"] == reply["message_id"]
