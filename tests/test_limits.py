"""Abuse limits: body size, messages per minute, sockets and sessions per user, idle sockets,
clients that stop reading. Each limit counts per user, across all of that user's sockets."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from chatbot.backends import Backend, ChatRequest, Usage
from chatbot.errors import ConfigError
from chatbot.limits import RateLimiter
from chatbot.runtime import Runtime
from chatbot.settings import BackendConfig, Settings
from tests.conftest import (
    LiveServer,
    ServerFactory,
    bearer,
    expect_close,
    make_token,
    recv_json,
    wait_for,
)

ALICE = make_token("alice")
BOB = make_token("bob")


def runtime(server: LiveServer) -> Runtime:
    """The live objects of the app a test server runs (the server runs in this process)."""
    app = server.server.config.app
    assert isinstance(app, Starlette)
    found = app.state.chatbot
    assert isinstance(found, Runtime)
    return found


def messages_of(server: LiveServer, token: str, session_id: str) -> list[str]:
    with server.http(token) as http:
        page = http.get(f"/api/sessions/{session_id}/messages").json()
    return [m["content"] for m in page["messages"]]


# The sliding window, without a server ------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_limiter_slides_and_says_when_to_retry() -> None:
    clock = FakeClock()
    limiter = RateLimiter(3, 60, clock=clock)
    for _ in range(3):
        assert limiter.hit("alice").allowed
        clock.now += 10
    # Three in the last 60 s (at 1000, 1010, 1020); the first leaves the window at 1060.
    refused = limiter.hit("alice")
    assert (refused.allowed, refused.retry_after, refused.refused) == (False, 30, 1)
    assert limiter.hit("alice").refused == 2
    assert limiter.hit("bob").allowed  # another key has its own window
    clock.now = 1060.0
    assert limiter.hit("alice").allowed  # the oldest left the window
    assert not limiter.hit("alice").allowed
    assert limiter.hit("alice").refused == 2  # the count restarted with the allowed one


def test_rate_limiter_retry_after_is_a_whole_number_of_seconds_at_least_one() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, 60, clock=clock)
    limiter.hit("alice")
    clock.now += 59.999
    decision = limiter.hit("alice")
    assert decision.retry_after == 1
    assert isinstance(decision.retry_after, int)


def test_rate_limiter_forgets_idle_keys() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, 60, clock=clock)
    for n in range(100):
        limiter.hit(f"user-{n}")
    assert len(limiter) == 100
    clock.now += 61
    limiter.hit("alice")
    assert len(limiter) == 1


# Settings ----------------------------------------------------------------------------------


def test_limit_settings_have_safe_defaults_and_are_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    defaults = Settings.from_env(environ={}, env_file=None)
    assert defaults.allowed_origins == ()
    assert defaults.max_body_bytes == 262_144
    assert defaults.rate_limit_per_minute == 30
    assert defaults.flood_tolerance == 10
    assert defaults.max_sockets_per_user == 10
    assert defaults.max_sessions_per_user == 1000
    assert defaults.idle_timeout == 300
    assert defaults.max_pending_bytes == 1_048_576
    settings = Settings.from_env(
        environ={
            "CHATBOT_ALLOWED_ORIGINS": " https://chat.example.com, http://localhost:5173 ,",
            "CHATBOT_MAX_BODY_BYTES": "1000",
            "CHATBOT_RATE_LIMIT_PER_MINUTE": "5",
            "CHATBOT_FLOOD_TOLERANCE": "0",
            "CHATBOT_MAX_SOCKETS_PER_USER": "2",
            "CHATBOT_MAX_SESSIONS_PER_USER": "3",
            "CHATBOT_IDLE_TIMEOUT": "2.5",
            "CHATBOT_MAX_PENDING_BYTES": "4096",
        },
        env_file=None,
    )
    assert settings.allowed_origins == ("https://chat.example.com", "http://localhost:5173")
    assert (settings.max_body_bytes, settings.rate_limit_per_minute) == (1000, 5)
    assert (settings.flood_tolerance, settings.max_sockets_per_user) == (0, 2)
    assert (settings.max_sessions_per_user, settings.idle_timeout) == (3, 2.5)
    assert settings.max_pending_bytes == 4096


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("MAX_BODY_BYTES", "0"),
        ("RATE_LIMIT_PER_MINUTE", "0"),
        ("FLOOD_TOLERANCE", "-1"),
        ("MAX_SOCKETS_PER_USER", "0"),
        ("MAX_SESSIONS_PER_USER", "-5"),
        ("IDLE_TIMEOUT", "0"),
        ("IDLE_TIMEOUT", "inf"),
        ("IDLE_TIMEOUT", "nan"),
        ("MAX_PENDING_BYTES", "0"),
        ("ALLOWED_ORIGINS", "chat.example.com"),
        ("ALLOWED_ORIGINS", "https://chat.example.com/app"),
        ("MAX_BODY_BYTES", "lots"),
    ],
)
def test_a_bad_limit_names_its_variable(
    name: str, raw: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=f"CHATBOT_{name}"):
        Settings.from_env(environ={f"CHATBOT_{name}": raw}, env_file=None)


# HTTP request bodies ---------------------------------------------------------------------


def raw_http(
    server: LiveServer, head: str, body_parts: list[bytes]
) -> tuple[int, dict[str, str], Any]:
    """Send a request head and some body bytes on a plain socket, then read the response
    without ever finishing the body: a server that waits for the whole body never answers."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode("latin-1"))
        for part in body_parts:
            sock.sendall(part)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"the server closed without answering: {received!r}"
            received += chunk
        head_bytes, _, rest = received.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
        }
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk
            rest += chunk
    return status, headers, json.loads(rest[:length])


def test_a_body_over_the_limit_is_413_by_its_content_length_before_it_is_sent(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_body_bytes=1000)
    head = (
        "POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {ALICE}\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000000000\r\n\r\n"
    )
    status, headers, body = raw_http(server, head, [])
    assert status == 413
    assert headers["connection"] == "close"
    assert body == {
        "error": {"code": "body_too_large", "message": "the request body is larger than 1000 bytes"}
    }


def test_a_chunked_body_over_the_limit_is_413_without_reading_the_rest(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_body_bytes=1000)
    head = (
        "POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {ALICE}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b'{"title": "' + b"x" * 590
    # 1,202 bytes sent, and the body is never finished (no last chunk).
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 2
    status, _, body = raw_http(server, head, parts)
    assert status == 413
    assert body["error"]["code"] == "body_too_large"
    with server.http(ALICE) as http:
        assert http.get("/api/sessions").json()["sessions"] == []


def test_a_body_within_the_limit_is_accepted_and_a_larger_one_refused(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_body_bytes=1000)
    with server.http(ALICE) as http:
        ok = http.post("/api/sessions", json={"title": "t" * 150})
        assert ok.status_code == 201
        refused = http.post("/api/sessions", json={"system_prompt": "p" * 2000})
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == "body_too_large"

        def chunks() -> Any:
            yield b'{"system_prompt": "'
            for _ in range(20):
                yield b"p" * 100
            yield b'"}'

        chunked = http.post("/api/sessions", content=chunks())
        assert chunked.status_code == 413
        assert len(http.get("/api/sessions").json()["sessions"]) == 1


# Messages per user per minute --------------------------------------------------------------


def test_messages_are_rate_limited_per_user_across_sockets(start_server: ServerFactory) -> None:
    server = start_server(rate_limit_per_minute=3, flood_tolerance=5)
    with server.ws(ALICE) as first, server.ws(ALICE) as second, server.ws(BOB) as bob:
        first_id = recv_json(first)["session_id"]
        second_id = recv_json(second)["session_id"]
        recv_json(bob)
        for text in ("one", "two"):
            first.send(json.dumps({"message": text}))
            assert recv_json(first)["message"] == f"Echo: {text}"
        second.send(json.dumps({"message": "three"}))
        assert recv_json(second)["message"] == "Echo: three"

        # The fourth message of the minute, on either socket, is refused and not stored.
        second.send(json.dumps({"message": "four", "id": "m4"}))
        error = recv_json(second)
        assert error["type"] == "error"
        assert error["session_id"] == second_id
        assert error["reply_to"] == "m4"
        assert error["error"]["code"] == "rate_limited"
        assert error["error"]["retryable"] is True
        retry_after = error["error"]["retry_after"]
        assert isinstance(retry_after, int)
        assert 1 <= retry_after <= 60
        assert error["error"]["message"]
        assert set(error["error"]) == {"code", "message", "retryable", "retry_after"}
        first.send(json.dumps({"message": "five"}))
        assert recv_json(first)["error"]["code"] == "rate_limited"

        # Another user is not affected, and pings are not messages.
        bob.send(json.dumps({"message": "hello"}))
        assert recv_json(bob)["message"] == "Echo: hello"
        first.send('{"type": "ping"}')
        assert recv_json(first) == {"type": "pong"}

    assert messages_of(server, ALICE, first_id) == ["one", "Echo: one", "two", "Echo: two"]
    assert messages_of(server, ALICE, second_id) == ["three", "Echo: three"]


def test_flooding_after_being_rate_limited_closes_4429(start_server: ServerFactory) -> None:
    server = start_server(rate_limit_per_minute=2, flood_tolerance=3)
    with server.ws(ALICE) as first, server.ws(ALICE) as second, server.ws(BOB) as bob:
        session_id = recv_json(first)["session_id"]
        recv_json(second)
        recv_json(bob)
        for n in range(2):
            first.send(json.dumps({"message": f"m{n}"}))
            recv_json(first)
        # Three refused messages are tolerated, wherever they come from...
        for ws in (first, second, first):
            ws.send(json.dumps({"message": "again"}))
            assert recv_json(ws)["error"]["code"] == "rate_limited"
        # ...the user's next one closes the socket that sent it.
        second.send(json.dumps({"message": "and again"}))
        assert expect_close(second) == (4429, "persistent flooding")
        first.send('{"type": "ping"}')
        assert recv_json(first) == {"type": "pong"}
        bob.send(json.dumps({"message": "unaffected"}))
        assert recv_json(bob)["message"] == "Echo: unaffected"
    assert messages_of(server, ALICE, session_id) == ["m0", "Echo: m0", "m1", "Echo: m1"]


# Sockets per user --------------------------------------------------------------------------


def test_sockets_per_user_are_limited(start_server: ServerFactory) -> None:
    server = start_server(max_sockets_per_user=2)
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(server.ws(ALICE))
        second = stack.enter_context(server.ws(ALICE))
        _sockets_per_user_are_limited(server, first, second)


def _sockets_per_user_are_limited(
    server: LiveServer, first: ClientConnection, second: ClientConnection
) -> None:
    limits = runtime(server).limits
    session_id = recv_json(first)["session_id"]
    recv_json(second)
    with server.ws(ALICE) as third:
        assert expect_close(third) == (4429, "too many connections")
    # Also on an existing session, and before the session is looked up or created.
    with server.ws(ALICE, session_id=session_id) as third:
        assert expect_close(third) == (4429, "too many connections")
    with server.http(ALICE) as http:
        assert len(http.get("/api/sessions").json()["sessions"]) == 2
    # Another user is not affected.
    with server.ws(BOB) as bob:
        recv_json(bob)
        bob.send('{"type": "ping"}')
        assert recv_json(bob) == {"type": "pong"}
    # Once one of alice's sockets has closed, she may open another.
    first.close()
    wait_for(lambda: limits.open_sockets().get("alice") == 1, "the closed socket to be released")
    with server.ws(ALICE, session_id=session_id) as again:
        again.send('{"type": "ping"}')
        assert recv_json(again) == {"type": "pong"}
    second.close()
    wait_for(lambda: "alice" not in limits.open_sockets(), "every socket to be released")


def test_refused_upgrades_do_not_hold_a_socket(start_server: ServerFactory) -> None:
    server = start_server(max_sockets_per_user=1)
    for _ in range(3):
        with server.ws(ALICE, session_id="no-such-session") as ws:
            assert expect_close(ws) == (4404, "session not found")
    wait_for(lambda: not runtime(server).limits.open_sockets(), "the sockets to be released")
    with server.ws(ALICE) as ws:
        assert "session_id" in recv_json(ws)


# Sessions per user -------------------------------------------------------------------------


def test_sessions_per_user_are_limited_over_http_and_the_socket(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_sessions_per_user=2)
    with server.http(ALICE) as http:
        assert http.post("/api/sessions", json={}).status_code == 201
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
    with server.http(ALICE) as http:
        refused = http.post("/api/sessions", json={"title": "one too many"})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_sessions"
        assert set(refused.json()["error"]) == {"code", "message"}
        assert "Retry-After" not in refused.headers
    # A socket without session_id would create one: refused the same way.
    with server.ws(ALICE) as ws:
        assert expect_close(ws) == (4429, "too many sessions")
    # An existing session is still usable.
    with server.ws(ALICE, session_id=session_id) as ws:
        ws.send(json.dumps({"message": "still here"}))
        assert recv_json(ws)["message"] == "Echo: still here"
    # Another user is not affected.
    with server.http(BOB) as http:
        assert http.post("/api/sessions", json={}).status_code == 201
    # Deleting one makes room for another.
    with server.http(ALICE) as http:
        assert http.delete(f"/api/sessions/{session_id}").status_code == 204
        assert http.post("/api/sessions", json={}).status_code == 201
        assert len(http.get("/api/sessions").json()["sessions"]) == 2


# Idle sockets ------------------------------------------------------------------------------


def test_an_idle_socket_is_closed_1000_idle_timeout(start_server: ServerFactory) -> None:
    server = start_server(idle_timeout=0.5)
    with server.ws(ALICE) as ws:
        recv_json(ws)
        assert expect_close(ws) == (1000, "idle timeout")


def test_every_client_frame_restarts_the_idle_timer(start_server: ServerFactory) -> None:
    idle = 1.0
    server = start_server(idle_timeout=idle, rate_limit_per_minute=100_000)
    frames = ['{"type": "ping"}', "not json", json.dumps({"message": "hi"})]
    with server.ws(ALICE) as ws:
        recv_json(ws)
        # Frames of every kind, each answered, for three times the idle timeout: the
        # socket stays open, as only a timer that every frame restarts allows.
        until = time.monotonic() + 3 * idle
        for frame in itertools.cycle(frames):
            if time.monotonic() > until:
                break
            ws.send(frame)
            recv_json(ws)
        ws.send('{"type": "ping"}')
        assert recv_json(ws) == {"type": "pong"}
        # Then silence: closed for being idle.
        assert expect_close(ws) == (1000, "idle timeout")


# Clients that stop reading -----------------------------------------------------------------


class FirehoseBackend(Backend):
    """Streams ``chunks`` pieces of ``chunk`` characters (16 KiB and 64 MiB in all by
    default), far more than a socket's buffers hold, as fast as the server takes them."""

    models: ClassVar[tuple[str, ...]] = ("firehose",)

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        piece = "x" * int(self.options.get("chunk", 16384))
        for _ in range(int(self.options.get("chunks", 4096))):
            yield piece


def test_a_client_that_stops_reading_is_closed_1008_with_its_backlog_bounded(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chatbot.websocket")
    bound = 256 * 1024
    settings = start_server.settings(
        backends={"firehose": BackendConfig(name="firehose", type="firehose")},
        default_backend="firehose",
        max_pending_bytes=bound,
    )
    server = start_server(settings, backend_types={"firehose": FirehoseBackend})
    # A small receive buffer, a client that buffers one frame before it stops reading, and
    # no compression (which would shrink the repeated text to nothing).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    with (
        connect(
            server.ws_url + "/ws/chat/",
            sock=sock,
            additional_headers=bearer(ALICE),
            max_queue=1,
            compression=None,
        ) as ws,
        server.ws(ALICE) as reader,
    ):
        recv_json(reader)
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "go", "stream": True}))
        # From here on the client reads nothing while the reply streams on and on.
        gave_up = wait_for(
            lambda: [r for r in caplog.records if "is not reading its frames" in r.message],
            "the server to give up on the client",
        )
        dropped = int(gave_up[0].message.split(", ")[1].split()[0])
        assert 0 < dropped <= bound
        # Another socket of the same user is not affected.
        reader.send('{"type": "ping"}')
        assert recv_json(reader) == {"type": "pong"}
        # Stop the endless reply (deleting the session cancels it).
        with server.http(ALICE) as http:
            assert http.delete(f"/api/sessions/{session_id}").status_code == 204
        # Once the client reads again, only what was already on its way arrives (the
        # kernel's buffers and the frame being sent), then the close: not the 64 MiB reply.
        received = 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                received += len(ws.recv(timeout=60))
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1008, "client is not reading its frames",
        )  # fmt: skip
        assert received < 16 * 1024 * 1024


def test_a_slow_but_reading_client_gets_every_delta(start_server: ServerFactory) -> None:
    # The bound drops a client that does not read, not one that reads: this one reads all.
    server = start_server(max_pending_bytes=4096)
    words = " ".join(f"w{n}" for n in range(2000))
    with server.ws(ALICE) as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": words, "stream": True}))
        text = ""
        while (frame := recv_json(ws))["type"] == "delta":
            text += frame["delta"]
    assert text == frame["message"] == f"Echo: {words}"
