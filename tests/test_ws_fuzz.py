"""The chat socket under generated bad input.

One server serves the whole module. Every test throws generated input at it: JSON values of
any shape as whole frames, messages whose every field has a random type, strings up to the
frame limit, nesting far beyond the parser's recursion limit, text frames that are not
UTF-8, binary frames, and control frames at the wrong time (written byte by byte on a raw
socket, since a well-behaved client library refuses to send them). The properties:

- a bad frame gets the answer the protocol gives it (an error frame, or the close code of
  the protocol document), and never a close ``1011`` or an ``internal_error``;
- right after it, the same socket still answers a valid message correctly, or, where the
  protocol closes the socket, a new socket on the same session does;
- the server logs no traceback.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import hypothesis.core
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.vendor import pretty
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.conftest import (
    GENEROUS_LIMITS,
    LiveServer,
    ServerFactory,
    expect_close,
    make_token,
    recv_json,
    wait_until_idle,
)

# Importing schemathesis (its pytest plugin does it at start-up) replaces Hypothesis'
# printer of failing examples with one that prints nothing, for the whole test run; put
# the original back so that a failure here says which input failed.
hypothesis.core.RepresentationPrinter = pretty.RepresentationPrinter  # type: ignore[attr-defined]

ALICE = make_token("alice")
MAX_MESSAGE_CHARS = 300
MAX_FRAME_BYTES = 1_048_576
MAX_CLIENT_ID_CHARS = 128
#: The error codes a bad frame may get (the quotas are set too high to be reached here).
ERROR_CODES = {"invalid_json", "invalid_message", "message_too_long", "session_mismatch", "busy"}

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

# --- the server and its log -----------------------------------------------------------------


class Recorder(logging.Handler):
    """Keeps every record the server logs, whichever logger it comes through."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._seen: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) not in self._seen:
            self._seen.add(id(record))
            self.records.append(record)


#: uvicorn's own record for a text frame that is not UTF-8: it logs the decoding error with
#: its traceback (``logger.exception``) before it closes the socket with 1007. Not ours.
UVICORN_INVALID_UTF8 = "Invalid UTF-8 sequence received from client."


def troubling(records: list[logging.LogRecord], *, invalid_utf8_sent: bool) -> list[str]:
    """The records that show a failure: a traceback, an error, a warning of our own."""
    found = []
    for record in records:
        message = record.getMessage()
        if invalid_utf8_sent and record.name == "uvicorn.error" and message == UVICORN_INVALID_UTF8:
            continue
        if (
            record.exc_info
            or "Traceback" in message
            or record.levelno >= logging.ERROR
            or (record.name.startswith("chatbot") and record.levelno >= logging.WARNING)
        ):
            found.append(f"{record.name} {record.levelname}: {message}")
    return found


@dataclass
class Fuzzed:
    server: LiveServer
    log: Recorder
    #: The session the sockets of the current example open on.
    session_id: str = ""

    def new_session(self) -> str:
        """A new session for each example, so that nothing one example leaves behind (a
        reply still being generated) reaches the sockets of the next."""
        with self.server.ws(ALICE) as ws:
            self.session_id = recv_json(ws)["session_id"]
        return self.session_id


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    factory = ServerFactory(tmp_path_factory.mktemp("ws-fuzz"), [])
    server = factory(
        max_message_chars=MAX_MESSAGE_CHARS, max_frame_bytes=MAX_FRAME_BYTES, **GENEROUS_LIMITS
    )
    recorder = Recorder()
    # uvicorn's loggers do not propagate to the root logger; ours do, unless configured.
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.access", "chatbot")]
    for logger in loggers:
        logger.addHandler(recorder)
    try:
        yield Fuzzed(server, recorder)
    finally:
        for logger in loggers:
            logger.removeHandler(recorder)
        server.stop()


@pytest.fixture
def target(fuzzed: Fuzzed, request: pytest.FixtureRequest) -> Iterator[Fuzzed]:
    """The server, with a session; after the test, its log must hold no failure."""
    fuzzed.new_session()
    first = len(fuzzed.log.records)
    yield fuzzed
    wait_until_idle(fuzzed.server)  # what the last socket logs as it winds down
    invalid_utf8 = getattr(request.function, "sends_invalid_utf8", False)
    assert troubling(fuzzed.log.records[first:], invalid_utf8_sent=invalid_utf8) == []


def sends_invalid_utf8(test: Any) -> Any:
    """Mark a test whose frames are not UTF-8 (uvicorn logs each one, see above)."""
    test.sends_invalid_utf8 = True
    return test


def test_the_recorder_hears_the_server_s_loggers(fuzzed: Fuzzed) -> None:
    """The property "no traceback in the log" can fail: a record on any of the loggers the
    server writes to is seen, and an exception or an error is reported."""
    first = len(fuzzed.log.records)
    for name in ("chatbot.websocket", "uvicorn.error", "asyncio"):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger(name).exception("a failure")
    found = troubling(fuzzed.log.records[first:], invalid_utf8_sent=False)
    del fuzzed.log.records[first:]
    assert len(found) == 3, found


# --- talking to it ------------------------------------------------------------------------


def open_socket(target: Fuzzed) -> ClientConnection:
    return target.server.ws(ALICE, session_id=target.session_id)


def check_frame(frame: dict[str, Any], session_id: str) -> None:
    """What every frame the server sends must satisfy."""
    assert frame.get("session_id") == session_id or frame == {"type": "pong"}, frame
    if frame.get("type") == "error":
        assert frame["error"]["code"] in ERROR_CODES, frame
        assert isinstance(frame["error"]["message"], str)
        assert frame["error"]["message"]


def receive(ws: ClientConnection, session_id: str) -> dict[str, Any]:
    try:
        frame = recv_json(ws)
    except ConnectionClosed as exc:
        if exc.rcvd is None and exc.sent is not None and exc.sent.code == 1009:
            raise AssertionError(
                "the server sent a frame larger than the frame limit, which this client "
                f"(like the server) enforces: {exc.sent.reason}"
            ) from None
        raise AssertionError(f"the server closed the socket: {exc.rcvd}") from None
    check_frame(frame, session_id)
    return frame


def probe(ws: ClientConnection, session_id: str) -> list[dict[str, Any]]:
    """Send a valid message and read until its reply, which must be right; the frames that
    came before it (answers to what was sent earlier) are returned."""
    probe_id = f"probe-{uuid.uuid4()}"
    text = f"are you there {probe_id[-6:]}?"
    ws.send(json.dumps({"message": text, "id": probe_id}))
    before: list[dict[str, Any]] = []
    deltas = ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        frame = receive(ws, session_id)
        if frame.get("reply_to") != probe_id:
            before.append(frame)
            continue
        if frame.get("type") == "delta":
            deltas += frame["delta"]
            continue
        assert frame["type"] == "message", frame
        assert frame["message"] == f"Echo: {text}"
        assert frame["status"] == "complete"
        assert deltas in ("", frame["message"])
        return before
    raise AssertionError("no reply to a valid message")


def probe_new_socket(target: Fuzzed) -> None:
    with open_socket(target) as ws:
        probe(ws, target.session_id)


def assert_closed_with(ws: ClientConnection, code: int) -> None:
    received, _ = expect_close(ws)
    assert received != 1011
    assert received == code


# --- the raw socket ---------------------------------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class RawSocket:
    """A WebSocket client that writes whatever frame it is told to, valid or not."""

    def __init__(self, server: LiveServer, session_id: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /ws/chat/?session_id={session_id} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {ALICE}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head

    def __enter__(self) -> RawSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the TCP connection")
        self.buffer += chunk

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send_frame(
        self, opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True
    ) -> None:
        first = (0x80 if fin else 0) | (rsv << 4) | opcode
        mask_bit = 0x80 if masked else 0
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", first, mask_bit | size)
        elif size < 65536:
            header = struct.pack("!BBH", first, mask_bit | 126, size)
        else:
            header = struct.pack("!BBQ", first, mask_bit | 127, size)
        if masked:
            mask = os.urandom(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            header += mask
        self.sock.sendall(header + payload)

    def send_text(self, frame: dict[str, Any]) -> None:
        self.send_frame(OP_TEXT, json.dumps(frame).encode())

    def recv_frame(self) -> tuple[int, bytes]:
        first, second = self._read(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._read(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._read(8))
        assert not second & 0x80, "a server must not mask its frames"
        return first & 0x0F, self._read(size)

    def recv_json(self) -> dict[str, Any]:
        while True:
            opcode, payload = self.recv_frame()
            if opcode == OP_TEXT:
                data = json.loads(payload)
                assert isinstance(data, dict)
                return data
            assert opcode in (OP_PING, OP_PONG), (opcode, payload)

    def expect_close(self) -> tuple[int, bytes]:
        """Read until the server's close frame; its code and raw reason."""
        while True:
            try:
                opcode, payload = self.recv_frame()
            except EOFError:
                raise AssertionError("the connection dropped without a close frame") from None
            if opcode == OP_CLOSE:
                assert len(payload) >= 2, payload
                (code,) = struct.unpack("!H", payload[:2])
                return code, payload[2:]

    def probe(self, session_id: str) -> None:
        probe_id = f"probe-{uuid.uuid4()}"
        self.send_text({"message": "still there?", "id": probe_id})
        while True:
            frame = self.recv_json()
            check_frame(frame, session_id)
            if frame.get("reply_to") == probe_id and frame.get("type") == "message":
                assert frame["message"] == "Echo: still there?"
                return


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


# --- generated input --------------------------------------------------------------------------

LONE_SURROGATES = st.sampled_from(["\ud800", "a\udfffb", "\udbff"])
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(" \t\n\r\u00a0\u2003", max_size=5),  # blank, Unicode blanks included
    st.text(min_size=MAX_MESSAGE_CHARS - 2, max_size=MAX_MESSAGE_CHARS + 2),
    LONE_SURROGATES,
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


def random_frame(session_id: str) -> st.SearchStrategy[dict[str, Any]]:
    """A message whose every field may be missing, right, or of any type."""
    return st.fixed_dictionaries(
        {},
        optional={
            "message": st.one_of(TEXT, JSON_VALUES),
            "session_id": st.one_of(
                st.just(session_id), st.none(), TEXT, st.just(session_id + " "), JSON_VALUES
            ),
            "id": st.one_of(
                st.text(min_size=1, max_size=6),
                st.text(min_size=MAX_CLIENT_ID_CHARS, max_size=MAX_CLIENT_ID_CHARS + 1),
                st.just(""),
                LONE_SURROGATES,
                JSON_VALUES,
            ),
            "stream": st.one_of(st.booleans(), JSON_VALUES),
            "type": st.one_of(st.sampled_from(["message", "ping", "cancel"]), JSON_VALUES),
        },
    )


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_client_id(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_ID_CHARS and _is_utf8(value)


def violations(data: dict[str, Any], session_id: str) -> set[str]:
    """The error codes the protocol gives a message; empty for a valid message.

    The protocol does not say which of several problems is reported, so any of them is.
    """
    found = set()
    content = data.get("message")
    if not isinstance(content, str) or not content.strip() or not _is_utf8(content):
        found.add("invalid_message")
    elif len(content) > MAX_MESSAGE_CHARS:
        found.add("message_too_long")
    claimed = data.get("session_id")
    if claimed is not None and not isinstance(claimed, str):
        found.add("invalid_message")
    elif claimed is not None and claimed != session_id:
        found.add("session_mismatch")
    client_id = data.get("id")
    if client_id is not None and not _is_client_id(client_id):
        found.add("invalid_message")
    if not isinstance(data.get("stream", False), bool):
        found.add("invalid_message")
    return found


# --- the tests ------------------------------------------------------------------------------


@FUZZ
@given(value=JSON_VALUES)
def test_any_json_value_as_a_frame(target: Fuzzed, value: Any) -> None:
    assume(not isinstance(value, dict))
    target.new_session()
    with open_socket(target) as ws:
        ws.send(json.dumps(value))
        answer = receive(ws, target.session_id)
        assert answer["type"] == "error"
        assert answer["error"] == {
            "code": "invalid_message",
            "message": "a frame must be a JSON object",
            "retryable": False,
        }
        assert probe(ws, target.session_id) == []


@FUZZ
@given(data=st.data())
def test_messages_with_a_random_type_for_every_field(target: Fuzzed, data: st.DataObject) -> None:
    session_id = target.new_session()
    frame = data.draw(random_frame(session_id))
    kind = frame.get("type", "message")
    client_id = frame.get("id")
    with open_socket(target) as ws:
        ws.send(json.dumps(frame))
        answers = probe(ws, session_id)
    errors = [a for a in answers if a.get("type") == "error"]
    replies = [a for a in answers if a.get("type", "message") == "message" and "message" in a]
    if kind == "ping":
        assert answers == [{"type": "pong"}]
        return
    if kind == "cancel":
        assert answers == []
        return
    echoed = isinstance(client_id, str) and _is_utf8(client_id)
    expected = violations(frame, session_id) if kind == "message" else {"invalid_message"}
    if expected:
        assert replies == []
        assert len(errors) == 1, answers
        (error,) = errors
        assert error["error"]["code"] in expected, (frame, error)
        assert error["error"]["retryable"] is False
        if client_id is not None and _is_client_id(client_id):
            assert error.get("reply_to") == client_id
        else:
            # An id that is itself invalid may be echoed, or not; a lone surrogate cannot be.
            assert error.get("reply_to") in ((None, client_id) if echoed else (None,))
        assert set(error) <= {"type", "error", "session_id", "reply_to"}
        return
    # A valid message: its reply.
    assert errors == []
    assert len(replies) == 1, answers
    (reply,) = replies
    content = frame["message"]
    if client_id is not None:
        assert reply["reply_to"] == client_id
    assert reply["message"] == f"Echo: {content}"
    streamed = "".join(a["delta"] for a in answers if a.get("type") == "delta")
    assert streamed in ("", reply["message"])
    if client_id is None and "stream" not in frame:
        # Nothing in the frame asked for the additions: the original document's frame.
        assert reply == {"message": f"Echo: {content}", "session_id": session_id}


def _padded(field_name: str, size: int, fill: str) -> str:
    """A frame of exactly ``size`` UTF-8 bytes (or a few more) holding one huge field."""
    base = {"message": "hi", field_name: ""}
    empty = json.dumps(base, ensure_ascii=False).encode()
    room = max(0, size - len(empty))
    per_char = len(fill.encode())
    base[field_name] = fill * (room // per_char) + "x" * (room % per_char)
    return json.dumps(base, ensure_ascii=False)


@FUZZ
@given(
    field_name=st.sampled_from(["message", "id", "session_id", "type", "stream", "padding"]),
    size=st.one_of(
        st.integers(min_value=MAX_FRAME_BYTES - 8, max_value=MAX_FRAME_BYTES + 8),
        st.integers(min_value=1, max_value=MAX_FRAME_BYTES + 100_000),
    ),
    fill=st.sampled_from(["x", "é", "€", "😀"]),
)
def test_huge_strings_up_to_the_frame_limit(
    target: Fuzzed, field_name: str, size: int, fill: str
) -> None:
    session_id = target.new_session()
    text = _padded(field_name, size, fill)
    with open_socket(target) as ws:
        ws.send(text)
        if len(text.encode()) > MAX_FRAME_BYTES:
            assert_closed_with(ws, 1009)
            probe_new_socket(target)
            return
        answers = probe(ws, session_id)
    frame = json.loads(text)
    # Any "type" but the three the protocol names is refused; "padding" is ignored.
    expected = {"invalid_message"} if field_name == "type" else violations(frame, session_id)
    if expected:
        assert len(answers) == 1, answers
        assert answers[0]["type"] == "error"
        assert answers[0]["error"]["code"] in expected
    else:
        (reply,) = answers
        assert reply["message"] == f"Echo: {frame['message']}"


@FUZZ
@given(
    depth=st.one_of(
        st.integers(min_value=1, max_value=400),
        st.integers(min_value=5_000, max_value=150_000),
    ),
    where=st.sampled_from(["frame", "message", "id", "session_id", "stream", "type", "extra"]),
    brackets=st.sampled_from(["[]", "{}"]),
    balanced=st.booleans(),
)
def test_deeply_nested_json(
    target: Fuzzed, depth: int, where: str, brackets: str, balanced: bool
) -> None:
    if brackets == "{}":
        nested = '{"a":' * depth + "1" + "}" * depth if balanced else '{"a":' * depth
    else:
        nested = "[" * depth + "]" * depth if balanced else "[" * depth
    text = nested if where == "frame" else '{"message": "hi", "%s": %s}' % (where, nested)
    deep = depth > 1_000 or not balanced
    target.new_session()
    with open_socket(target) as ws:
        ws.send(text)
        answers = probe(ws, target.session_id)
    codes = [a["error"]["code"] for a in answers if a.get("type") == "error"]
    if deep:
        assert codes == ["invalid_json"], answers
    elif where in ("frame", "message", "id", "session_id", "stream", "type"):
        assert codes == ["invalid_message"], answers
    else:
        assert codes == [], answers


INVALID_UTF8 = st.sampled_from(
    [
        b"\xff",
        b"\xfe",
        b"\x80",
        b"\xc0\x80",  # overlong NUL
        b"\xed\xa0\x80",  # an encoded surrogate
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        b"\xe2\x82",  # truncated
    ]
)


@sends_invalid_utf8
@FUZZ
@given(
    bad=INVALID_UTF8,
    cut=st.integers(min_value=0, max_value=30),
    fragmented=st.booleans(),
)
def test_text_that_is_not_utf8_closes_1007(
    target: Fuzzed, bad: bytes, cut: int, fragmented: bool
) -> None:
    valid = json.dumps({"message": "hello there, how are you"}).encode()
    cut = min(cut, len(valid))
    payload = valid[:cut] + bad + valid[cut:]
    target.new_session()
    with RawSocket(target.server, target.session_id) as raw:
        if fragmented:
            middle = len(payload) // 2
            raw.send_frame(OP_TEXT, payload[:middle], fin=False)
            raw.send_frame(OP_CONT, payload[middle:])
        else:
            raw.send_frame(OP_TEXT, payload)
        code, _ = raw.expect_close()
    assert code == 1007
    probe_new_socket(target)


@FUZZ
@given(payload=st.binary(max_size=300) | st.just(b'{"message": "hi"}'))
def test_binary_frames_close_1003(target: Fuzzed, payload: bytes) -> None:
    target.new_session()
    with open_socket(target) as ws:
        ws.send(payload)
        assert_closed_with(ws, 1003)
    probe_new_socket(target)


def _is_valid_close_code(code: int) -> bool:
    # RFC 6455 7.4 and the IANA registry: what an endpoint may send in a close frame.
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


@FUZZ
@given(size=st.integers(min_value=126, max_value=4096))
def test_a_ping_longer_than_125_bytes_closes_1002(target: Fuzzed, size: int) -> None:
    target.new_session()
    with RawSocket(target.server, target.session_id) as raw:
        raw.send_frame(OP_PING, os.urandom(size))
        code, _ = raw.expect_close()
    assert code == 1002
    probe_new_socket(target)


@FUZZ
@given(payload=st.binary(max_size=125), opcode=st.sampled_from([OP_PING, OP_PONG]))
def test_pings_and_unsolicited_pongs_leave_the_socket_usable(
    target: Fuzzed, payload: bytes, opcode: int
) -> None:
    target.new_session()
    with RawSocket(target.server, target.session_id) as raw:
        raw.send_frame(opcode, payload)
        if opcode == OP_PING:
            assert raw.recv_frame() == (OP_PONG, payload)
        raw.probe(target.session_id)


@FUZZ
@given(code=st.integers(min_value=0, max_value=65535).filter(lambda c: not _is_valid_close_code(c)))
def test_a_close_frame_with_an_invalid_code_is_a_protocol_error(target: Fuzzed, code: int) -> None:
    target.new_session()
    with RawSocket(target.server, target.session_id) as raw:
        raw.send_frame(OP_CLOSE, close_payload(code))
        received, _ = raw.expect_close()
    assert received == 1002
    probe_new_socket(target)


@FUZZ
@given(
    code=st.integers(min_value=0, max_value=65535).filter(_is_valid_close_code),
    bad=INVALID_UTF8,
    prefix=st.text(max_size=20).map(str.encode),
)
def test_a_close_reason_that_is_not_utf8_closes_1007(
    target: Fuzzed, code: int, bad: bytes, prefix: bytes
) -> None:
    reason = (prefix + bad)[:123]
    assume(not _decodes(reason))
    target.new_session()
    with RawSocket(target.server, target.session_id) as raw:
        raw.send_frame(OP_CLOSE, close_payload(code, reason))
        received, _ = raw.expect_close()
    assert received == 1007
    probe_new_socket(target)


def _decodes(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@FUZZ
@given(code=st.integers(min_value=0, max_value=65535).filter(_is_valid_close_code))
def test_a_valid_close_is_answered_and_the_session_goes_on(target: Fuzzed, code: int) -> None:
    target.new_session()
    with RawSocket(target.server, target.session_id) as raw:
        raw.send_frame(OP_CLOSE, close_payload(code, b"bye"))
        received, _ = raw.expect_close()
    # RFC 6455 5.5.1: the answer typically echoes the code it received.
    assert received in (code, 1000)
    probe_new_socket(target)


#: Frames no client may send, each with the close code RFC 6455 gives it.
PROTOCOL_ERRORS: dict[str, list[tuple[int, bytes, dict[str, Any]]]] = {
    "continuation without a start": [(OP_CONT, b'"}', {})],
    "text frame inside a fragmented message": [
        (OP_TEXT, b'{"message": ', {"fin": False}),
        (OP_TEXT, b'"hi"}', {}),
    ],
    "fragmented ping": [(OP_PING, b"abc", {"fin": False})],
    "fragmented close": [(OP_CLOSE, close_payload(1000), {"fin": False})],
    "close frame of one byte": [(OP_CLOSE, b"\x03", {})],
    "reserved bits set": [(OP_TEXT, b'{"message": "hi"}', {"rsv": 0b100})],
    "unmasked client frame": [(OP_TEXT, b'{"message": "hi"}', {"masked": False})],
    **{
        f"reserved opcode {opcode:#x}": [(opcode, b"abc", {})]
        for opcode in (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)
    },
}


@pytest.mark.parametrize("frames", PROTOCOL_ERRORS.values(), ids=PROTOCOL_ERRORS.keys())
def test_frames_no_client_may_send_close_1002(
    target: Fuzzed, frames: list[tuple[int, bytes, dict[str, Any]]]
) -> None:
    with RawSocket(target.server, target.session_id) as raw:
        for opcode, payload, flags in frames:
            raw.send_frame(opcode, payload, **flags)
        code, _ = raw.expect_close()
    assert code == 1002
    probe_new_socket(target)


def test_control_frames_inside_a_fragmented_message_are_allowed(target: Fuzzed) -> None:
    with RawSocket(target.server, target.session_id) as raw:
        raw.send_frame(OP_TEXT, b'{"message": "in ', fin=False)
        raw.send_frame(OP_PING, b"mid-message")
        assert raw.recv_frame() == (OP_PONG, b"mid-message")
        raw.send_frame(OP_CONT, b"pieces", fin=False)
        raw.send_frame(OP_PONG, b"unsolicited")
        raw.send_frame(OP_CONT, b'"}')
        assert raw.recv_json() == {"message": "Echo: in pieces", "session_id": target.session_id}
        raw.probe(target.session_id)


def test_a_close_in_the_middle_of_a_fragmented_message(target: Fuzzed) -> None:
    with RawSocket(target.server, target.session_id) as raw:
        raw.send_frame(OP_TEXT, b'{"message": "never fin', fin=False)
        raw.send_frame(OP_CLOSE, close_payload(1000))
        code, _ = raw.expect_close()
    # RFC 6455 allows control frames between fragments; websockets refuses a close there.
    assert code in (1000, 1002)
    probe_new_socket(target)


def test_a_socket_dropped_mid_frame_leaves_the_session_usable(target: Fuzzed) -> None:
    with RawSocket(target.server, target.session_id) as raw:
        raw.sock.sendall(b"\x81\xfe\x10\x00" + os.urandom(4) + b"only part of it")
    probe_new_socket(target)
