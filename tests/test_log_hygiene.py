"""What ``chatbot serve`` logs: a client's misbehaviour at the frame level is a line, never a
stack trace (any client could otherwise fill the error log with them), and every record, of
any logger, passes the redaction filter once."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot.redact import redact
from tests.conftest import make_token
from tests.processes import ServeProcess


def test_invalid_utf8_is_one_warning_line_without_a_traceback(tmp_path: Path) -> None:
    with ServeProcess(tmp_path) as server:
        port = server.port
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            key = base64.b64encode(os.urandom(16)).decode()
            sock.sendall(
                f"GET /ws/chat/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {make_token()}\r\n\r\n"
                .encode()
            )  # fmt: skip
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            assert received.startswith(b"HTTP/1.1 101 ")
            payload, mask = b"\xff\xfe not utf-8", os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            sock.sendall(struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked)
            # Read until the server's close frame (1007) arrives.
            while b"\x88\x02\x03\xef" not in received:
                chunk = sock.recv(65536)
                assert chunk, "the server dropped the connection without a close frame"
                received += chunk
        output = server.stop()
    assert "Invalid UTF-8 sequence received from client." in output
    assert "Traceback" not in output
    assert "ERROR" not in output


# Every record, whichever logger sends it ------------------------------------------------

JWT = make_token("in-a-log-line")
OPENAI_KEY = "sk-proj-Abc123_def456-GHI789jkl012MNO345pqr678STU901vwx"
ANTHROPIC_KEY = "sk-ant-api03-Abc123_def456-GHI789jkl012MNO345pqr678STU901vwx-AA"
#: Loggers outside ``chatbot``: a plugin's own package, the SDKs and their HTTP client.
FOREIGN = ("chatbot_anthropic", "anthropic._base_client", "httpx", "asyncio", "some.plugin")

# Configures logging from the JSON in argv[1] (or as `chatbot serve` does when it is
# "serve", and with CHATBOT_LOG_FORMAT=json when it is "serve-json"), then logs what a
# plugin, an SDK or the server may: credentials in the message, in its arguments and in an
# exception's text.
LOGGING_SCRIPT = f"""
import json, logging, logging.config, sys
if sys.argv[1] in ("serve", "serve-json"):
    import uvicorn.config
    from chatbot.logs import use_json
    from chatbot.redact import server_log_config
    config = server_log_config(uvicorn.config.LOGGING_CONFIG)
    if sys.argv[1] == "serve-json":
        config = use_json(config)
else:
    config = json.loads(sys.argv[1])
logging.config.dictConfig(config)
for name in {FOREIGN!r} + ("chatbot.backends.openai",):
    logging.getLogger(name).warning(
        "%s: upstream said: token {JWT}, Authorization: Bearer xyz, key %s",
        name, {OPENAI_KEY!r},
    )
try:
    raise RuntimeError("the SDK failed with {ANTHROPIC_KEY}")
except RuntimeError:
    logging.getLogger("some.plugin").exception("a plugin failed")
logging.getLogger("uvicorn.error").info("one line of uvicorn's")
logging.getLogger("chatbot").info("one line of chatbot's")
"""


def log_with(config: str) -> str:
    """What a process that configured logging with ``config`` and logged the lines of
    ``LOGGING_SCRIPT`` printed, stdout and stderr together."""
    result = subprocess.run(
        [sys.executable, "-c", LOGGING_SCRIPT, config],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return result.stdout + result.stderr


def assert_all_redacted_once(output: str) -> None:
    for name in (*FOREIGN, "chatbot.backends.openai"):
        line = (
            f"{name}: upstream said: token [redacted], Authorization: Bearer [redacted], "
            "key [redacted]"
        )
        assert output.count(line) == 1, (name, output)
    assert output.count("a plugin failed") == 1
    assert "RuntimeError: the SDK failed with [redacted]" in output
    assert output.count("one line of uvicorn's") == 1
    assert output.count("one line of chatbot's") == 1
    for secret in (JWT.split(".")[1], JWT.split(".")[2], OPENAI_KEY, ANTHROPIC_KEY, "xyz"):
        assert secret not in output


def test_chatbot_serve_passes_every_logger_through_the_filter_once() -> None:
    assert_all_redacted_once(log_with("serve"))


def test_json_logs_pass_every_logger_through_the_filter_once() -> None:
    output = log_with("serve-json")
    assert_all_redacted_once(output)
    records = [json.loads(line) for line in output.splitlines()]
    [failure] = [r for r in records if r["message"] == "a plugin failed"]
    assert (failure["logger"], failure["level"]) == ("some.plugin", "ERROR")
    assert failure["exception"].startswith("Traceback (most recent call last):")
    assert failure["exception"].endswith("RuntimeError: the SDK failed with [redacted]")


def test_the_documented_log_config_passes_every_logger_through_the_filter_once() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "security.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in docs.split("```json\n")[1:]]
    [block] = [b for b in blocks if '"chatbot.redact.RedactSecrets"' in b]
    assert_all_redacted_once(log_with(block))


@pytest.mark.parametrize(
    "key",
    [
        OPENAI_KEY,
        ANTHROPIC_KEY,
        "sk-" + "a1B2c3D4e5" * 5,  # OpenAI's first shape: sk- and 48 letters and digits
        "sk-svcacct-Abc123_def456-GHI789",
        "sk-do-not-leak",
    ],
)
def test_vendor_api_keys_are_redacted(key: str) -> None:
    assert redact(f"Incorrect API key provided: {key}.") == (
        "Incorrect API key provided: [redacted]."
    )
    assert redact(f"key={key}") == "key=[redacted]"
    assert redact(f'{{"api_key": "{key}"}}') == '{"api_key": "[redacted]"}'


@pytest.mark.parametrize(
    "text",
    ["a task-force of risk-free desk-lamps", "sk-short", "ask-me-anything-today", "use sk-"],
)
def test_words_that_merely_contain_sk_are_kept(text: str) -> None:
    assert redact(text) == text
