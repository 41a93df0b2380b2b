"""Browser safety: the WebSocket Origin check, no token in any log line, and compressed
frames (permessage-deflate) that cannot blow up the server's memory."""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from websockets.sync.client import connect
from websockets.typing import Origin, Subprotocol

from chatbot.origins import normalize_origin, origin_allowed
from chatbot.redact import REDACTED, RedactSecrets, add_redaction, redact
from tests.conftest import (
    LiveServer,
    ServerFactory,
    bearer,
    expect_close,
    make_token,
    recv_json,
)
from tests.processes import ServeProcess

ALICE = make_token("alice")
BOB = make_token("bob")
EVIL = "https://evil.example"


# The Origin check, without a server --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://Chat.Example.com", "https://chat.example.com"),
        ("https://chat.example.com:443/", "https://chat.example.com"),
        ("http://chat.example.com:80", "http://chat.example.com"),
        ("http://localhost:5173", "http://localhost:5173"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("null", None),
        ("file://", None),
        ("chat.example.com", None),
        ("https://chat.example.com/app", None),
        ("https://user@chat.example.com", None),
        ("https://chat.example.com:99999", None),
        ("ftp://chat.example.com", None),
    ],
)
def test_normalize_origin(raw: str, expected: str | None) -> None:
    assert normalize_origin(raw) == expected


@pytest.mark.parametrize(
    ("origins", "host", "allowed", "expected"),
    [
        ([], "127.0.0.1:8000", (), True),  # not a browser
        (["http://127.0.0.1:8000"], "127.0.0.1:8000", (), True),  # same origin
        (["https://chat.example.com"], "chat.example.com", (), True),
        (["https://chat.example.com"], "chat.example.com:443", (), True),
        (["http://chat.example.com"], "chat.example.com", (), True),
        (["https://chat.example.com"], "chat.example.com:8443", (), False),
        (["http://127.0.0.1:8001"], "127.0.0.1:8000", (), False),
        (["https://evil.example"], "chat.example.com", (), False),
        (["https://evil.example"], None, (), False),
        (["null"], "127.0.0.1:8000", (), False),
        (["http://127.0.0.1:8000", "http://127.0.0.1:8000"], "127.0.0.1:8000", (), False),
        (["https://chat.example.com"], "10.0.0.5:8000", ("https://chat.example.com",), True),
        (["https://app.example.com"], "app.example.com", ("https://chat.example.com",), False),
        (["https://evil.example"], "chat.example.com", ("*",), True),
        (["null"], "chat.example.com", ("*",), True),
    ],
)
def test_origin_allowed(
    origins: list[str], host: str | None, allowed: tuple[str, ...], expected: bool
) -> None:
    assert origin_allowed(origins, host, allowed) is expected


# The Origin check, end to end --------------------------------------------------------------


def test_a_foreign_origin_is_closed_4403_before_authentication(server: LiveServer) -> None:
    with server.ws(BOB) as ws:
        bobs_session = recv_json(ws)["session_id"]
    # No token, a valid one, someone else's session: the origin is checked first of all.
    with server.ws(None, origin=EVIL) as ws:
        assert expect_close(ws) == (4403, "origin not allowed")
    with server.ws(ALICE, origin=EVIL) as ws:
        assert expect_close(ws) == (4403, "origin not allowed")
    with server.ws(ALICE, origin=EVIL, session_id=bobs_session) as ws:
        assert expect_close(ws) == (4403, "origin not allowed")
    with server.ws(subprotocols=["chatbot.v1", "bearer." + ALICE], origin=EVIL) as ws:
        assert ws.subprotocol == "chatbot.v1"
        assert expect_close(ws) == (4403, "origin not allowed")
    with server.ws(ALICE, origin="null") as ws:
        assert expect_close(ws) == (4403, "origin not allowed")
    with server.http(ALICE) as http:
        assert http.get("/api/sessions").json()["sessions"] == []  # nothing was created


def test_same_origin_and_non_browser_clients_are_allowed_by_default(server: LiveServer) -> None:
    for origin in (None, f"http://127.0.0.1:{server.port}"):
        with server.ws(ALICE, origin=origin) as ws:
            session_id = recv_json(ws)["session_id"]
            ws.send(json.dumps({"message": "hi"}))
            assert recv_json(ws) == {"message": "Echo: hi", "session_id": session_id}
    # Same host, another port: another origin.
    with server.ws(ALICE, origin=f"http://127.0.0.1:{server.port + 1}") as ws:
        assert expect_close(ws) == (4403, "origin not allowed")


def test_allowed_origins_replace_same_origin(start_server: ServerFactory) -> None:
    server = start_server(allowed_origins=("https://Chat.Example.com",))
    for origin in ("https://chat.example.com", "https://chat.example.com:443", None):
        with server.ws(ALICE, origin=origin) as ws:
            assert "session_id" in recv_json(ws)
    for origin in (f"http://127.0.0.1:{server.port}", "http://chat.example.com", EVIL):
        with server.ws(ALICE, origin=origin) as ws:
            assert expect_close(ws) == (4403, "origin not allowed")


def test_any_origin_when_configured(start_server: ServerFactory) -> None:
    server = start_server(allowed_origins=("*",))
    with server.ws(ALICE, origin=EVIL) as ws:
        assert "session_id" in recv_json(ws)


# No token in a log line --------------------------------------------------------------------


def access_record(path: str) -> logging.LogRecord:
    """A record as uvicorn's access logger makes it."""
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", path, "1.1", 401),
        None,
    )


def test_the_filter_redacts_access_and_error_records() -> None:
    token = make_token("carol")
    config = add_redaction(copy.deepcopy(uvicorn.config.LOGGING_CONFIG))
    assert config["handlers"]["access"]["filters"] == [
        "chatbot_client_faults",
        "chatbot_redact_secrets",
    ]
    assert config["handlers"]["default"]["filters"] == [
        "chatbot_client_faults",
        "chatbot_redact_secrets",
    ]

    record = access_record(f"/api/sessions?limit=5&token={token}&Access_Token=opaque")
    assert RedactSecrets().filter(record)
    line = uvicorn.logging.AccessFormatter(
        '%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False
    ).format(record)
    assert line == (
        '127.0.0.1:5000 - "GET /api/sessions?limit=5&token=[redacted]&Access_Token=[redacted] '
        'HTTP/1.1" 401 Unauthorized'
    )
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", f"/ws/chat/?jwt={token}"),
        None,
    )
    RedactSecrets().filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "WebSocket /ws/chat/?jwt=[redacted]" [accepted]'
    # Arguments that are not strings (uvicorn's trace of an ASGI scope) are rendered first.
    scope = {"headers": [(b"authorization", f"Bearer {token}".encode())], "query_string": b"a=1"}
    record = logging.LogRecord(
        "uvicorn.asgi", 5, __file__, 1, "ASGI [%d] Started scope=%s", (1, scope), None
    )
    RedactSecrets().filter(record)
    assert token not in record.getMessage()
    assert "Bearer [redacted]" in record.getMessage()
    # And a traceback that quotes one.
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        record = logging.LogRecord(
            "chatbot", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    RedactSecrets().filter(record)
    assert token not in logging.Formatter().format(record)


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abc.def-ghi",
        "Sec-WebSocket-Protocol: chatbot.v1, bearer.opaque-token",
        "GET /x?%74oken=abc HTTP/1.1",
        "GET /x?AUTH=abc;x=1 HTTP/1.1",
        "{'query_string': b'session_id=s&authorization=abc'}",
    ],
)
def test_redact_catches_credentials_in_any_shape(text: str) -> None:
    redacted = redact(text)
    assert "abc" not in redacted
    assert "opaque-token" not in redacted
    assert REDACTED in redacted


def test_redact_keeps_what_is_not_a_credential() -> None:
    line = '127.0.0.1:1 - "GET /api/sessions/abc/messages?limit=5&before=10 HTTP/1.1" 200'
    assert redact(line) == line
    assert redact("/ws/chat/?session_id=QGpUb0egXuCFS153BKM89w&stream=1").endswith("stream=1")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """``serve(CHATBOT_X="...")`` makes a server process; every one is stopped at teardown."""
    started: list[ServeProcess] = []

    def make(command: Callable[[int], list[str]] | None = None, **env: str) -> ServeProcess:
        process = ServeProcess(tmp_path, command, **env)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


@pytest.mark.parametrize("log_level", ["info", "trace"])
def test_no_token_reaches_the_log_of_chatbot_serve(
    serve: Callable[..., ServeProcess], log_level: str
) -> None:
    header_token = make_token("in-the-header")
    subprotocol_token = make_token("in-the-subprotocol")
    query_token = make_token("in-the-query")
    http_token = make_token("in-an-http-query")
    with serve(CHATBOT_LOG_LEVEL=log_level) as server:
        with connect(server.ws_url, additional_headers=bearer(header_token)) as ws:
            recv_json(ws)
            ws.send(json.dumps({"message": "hello"}))
            assert recv_json(ws)["message"] == "Echo: hello"
        offered = [Subprotocol("chatbot.v1"), Subprotocol("bearer." + subprotocol_token)]
        with connect(server.ws_url, subprotocols=offered) as ws:
            recv_json(ws)
        # A token in the query string is not read (the socket has no token), nor logged.
        with connect(f"{server.ws_url}?token={query_token}&stream=1") as ws:
            assert expect_close(ws) == (4401, "missing token")
        refused = httpx.get(f"{server.url}/api/sessions?access_token={http_token}&limit=5")
        assert refused.status_code == 401
        output = server.stop()
    # The requests were logged, with the credentials redacted...
    assert '"WebSocket /ws/chat/?token=[redacted]&stream=1"' in output
    assert '"GET /api/sessions?access_token=[redacted]&limit=5 HTTP/1.1" 401' in output
    assert '"WebSocket /ws/chat/" [accepted]' in output
    # ...and no token, nor any part of one after its header, appears anywhere.
    for token in (header_token, subprotocol_token, query_token, http_token):
        _, payload, signature = token.split(".")
        assert payload not in output
        assert signature not in output


def test_the_documented_log_config_redacts_under_uvicorn(
    serve: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    docs = (Path(__file__).parent.parent / "docs" / "security.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in docs.split("```json\n")[1:]]
    [block] = [b for b in blocks if '"chatbot.redact.RedactSecrets"' in b]
    config = tmp_path / "log.json"
    config.write_text(block, encoding="utf-8")
    token = make_token("in-the-query")

    def command(port: int) -> list[str]:
        return [
            "-m", "uvicorn", "--factory", "chatbot.app:create_app", "--port", str(port),
            "--log-config", str(config), "--ws-per-message-deflate", "false",
        ]  # fmt: skip

    with serve(command) as server:
        with connect(f"{server.ws_url}?token={token}") as ws:
            assert expect_close(ws) == (4401, "missing token")
        assert httpx.get(f"{server.url}/api/sessions?jwt={token}").status_code == 401
        output = server.stop()
    assert '"WebSocket /ws/chat/?token=[redacted]"' in output
    assert '"GET /api/sessions?jwt=[redacted] HTTP/1.1" 401' in output
    assert token.split(".")[2] not in output


# Compression -------------------------------------------------------------------------------


def deflate_bomb(size: int, window_bits: int = 12) -> bytes:
    """A permessage-deflate payload that inflates to ``size`` bytes of ``x`` (RFC 7692:
    raw deflate, flushed, without the final empty block's 4 bytes), built without ever
    holding the inflated text."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -window_bits)
    block = b"x" * (1 << 20)
    data = b"".join(compressor.compress(block) for _ in range(size // len(block)))
    data += compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def client_text_frame(payload: bytes, *, compressed: bool) -> bytes:
    """One masked, final text frame (RFC 6455 5.2), RSV1 set when ``compressed``."""
    head = bytes([0x80 | (0x40 if compressed else 0) | 0x1])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_a_compression_bomb_closes_1009_without_being_inflated(
    start_server: ServerFactory,
) -> None:
    # uvicorn's default, as when the app runs under `uvicorn --factory` or is mounted:
    # compression on, and a 1 MiB message limit.
    server = start_server(ws_max_size=1 << 20)
    bomb = deflate_bomb(10 << 20)
    assert len(bomb) < 20_000  # 10 MiB of text in a few kilobytes
    frame = client_text_frame(bomb, compressed=True)
    with server.ws(ALICE) as ws:  # the websockets client offers permessage-deflate
        assert ws.response is not None
        assert "permessage-deflate" in ws.response.headers.get("Sec-WebSocket-Extensions", "")
        recv_json(ws)
        tracemalloc.start()
        try:
            # The first message on the connection, so the server's inflater starts fresh.
            ws.socket.sendall(frame)
            closed = expect_close(ws)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert closed[0] == 1009
    # Inflating the message would have taken 10 MiB at least (20 as text); the server
    # stopped at the limit. (The peak covers this whole process, client and server.)
    assert peak < 4 << 20, f"{peak} bytes allocated while the bomb was refused"
    with server.ws(ALICE) as ws:
        ws.send(json.dumps({"message": "still fine"}))
        recv_json(ws)
        assert recv_json(ws)["message"] == "Echo: still fine"


def test_chatbot_serve_does_not_negotiate_compression(serve: Callable[..., ServeProcess]) -> None:
    with serve() as server:
        with connect(server.ws_url, additional_headers=bearer(ALICE)) as ws:
            assert ws.response is not None
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
            assert ws.protocol.extensions == []
            session_id = recv_json(ws)["session_id"]
            ws.send(json.dumps({"message": "plain"}))
            assert recv_json(ws) == {"message": "Echo: plain", "session_id": session_id}
        # A compressed frame anyway is a protocol error: nothing is inflated.
        with connect(server.ws_url, additional_headers=bearer(ALICE)) as ws:
            recv_json(ws)
            ws.socket.sendall(client_text_frame(deflate_bomb(10 << 20), compressed=True))
            assert expect_close(ws)[0] == 1002


def test_chatbot_serve_refuses_a_foreign_origin(serve: Callable[..., ServeProcess]) -> None:
    with (
        serve() as server,
        connect(server.ws_url, additional_headers=bearer(ALICE), origin=Origin(EVIL)) as ws,
    ):
        assert expect_close(ws) == (4403, "origin not allowed")
