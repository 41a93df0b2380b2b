"""What ``chatbot serve`` logs when a client misbehaves at the frame level: a line, never a
stack trace (any client could otherwise fill the error log with them)."""

from __future__ import annotations

import base64
import os
import socket
import struct
from pathlib import Path

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
