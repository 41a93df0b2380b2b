"""Clients that stop reading: dropped within ``CHATBOT_SEND_TIMEOUT``, their socket slot
freed, their replies stored all the same.

The slow client is websockets' sans-I/O client protocol over a socket the test owns, with a
small receive buffer: it completes the handshake, asks for replies far larger than the
socket buffers hold, and then reads nothing, as a stalled or malicious client would."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.sync.client import connect
from websockets.uri import parse_uri

from tests.conftest import ServerFactory, bearer, make_token, wait_for
from tests.processes import ServeProcess

ALICE = make_token("alice")
#: Two ways to ask for more than the socket buffers hold (the kernel's alone may take 4 MB
#: of a connection): many long replies, so that once the buffers are full the server has
#: another frame to send; or one reply, after which it has nothing more to send.
ASKS = {
    "eight replies of 900 kB": [f"{n} " + "y" * 899_998 for n in range(8)],
    "one reply of 6 MB": ["y" * 6_000_000],
}
SEND_TIMEOUT = 1.0
#: However slow the machine, a client that stopped reading is dropped well before this.
DEADLINE = 60.0
SETTINGS: dict[str, Any] = {
    "send_timeout": SEND_TIMEOUT,
    "max_sockets_per_user": 1,
    "max_message_chars": 6_000_000,
    "max_frame_bytes": 8 * 1024 * 1024,
    "session_queue_size": 8,
    "web_ui": False,
}


class SlowClient:
    """A chat client that reads from its socket only when the test says so."""

    def __init__(self, port: int, token: str, *, receive_buffer: int = 4096) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connecting, so that the TCP window is small from the start.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.protocol = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/ws/chat/"), max_size=None)
        request = self.protocol.connect()
        request.headers["Authorization"] = f"Bearer {token}"
        self.protocol.send_request(request)
        self._flush()
        self.events: list[Request | Response | Frame] = []
        response = self._next_event()
        assert isinstance(response, Response) and response.status_code == 101, response

    def _flush(self) -> None:
        self.sock.sendall(b"".join(self.protocol.data_to_send()))

    def _next_event(self) -> Request | Response | Frame:
        while not self.events:
            data = self.sock.recv(65536)
            if data:
                self.protocol.receive_data(data)
            else:
                self.protocol.receive_eof()
            self.events.extend(self.protocol.events_received())
            assert data or self.events, "the server closed the connection"
        return self.events.pop(0)

    def send(self, frame: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(frame).encode())
        self._flush()

    def receive(self) -> dict[str, Any]:
        event = self._next_event()
        assert isinstance(event, Frame) and event.opcode is Opcode.TEXT, event
        frame = json.loads(bytes(event.data))
        assert isinstance(frame, dict)
        return frame

    def read_to_the_end(self, timeout: float) -> OSError | None:
        """Read until the connection ends: how it ended, ``None`` for an orderly end of
        stream. Fails when it is still open after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                if not self.sock.recv(1 << 20):
                    return None
            except TimeoutError:
                raise AssertionError("the connection is still open") from None
            except OSError as exc:
                return exc

    def close(self) -> None:
        self.sock.close()


def stop_reading(port: int, messages: list[str]) -> tuple[SlowClient, str]:
    """Open a socket, send ``messages``, and read none of the replies."""
    client = SlowClient(port, ALICE)
    session_id = client.receive()["session_id"]
    assert isinstance(session_id, str)
    for message in messages:
        client.send({"message": message})
    return client, session_id


def assert_stored(base_url: str, session_id: str, messages: list[str]) -> None:
    """Generation went on without the socket: every reply is stored, complete."""
    wait_for(
        lambda: len(assistant_messages(base_url, session_id)) == len(messages),
        "the replies to be stored",
        DEADLINE,
    )
    stored = assistant_messages(base_url, session_id)
    assert stored == [("complete", f"Echo: {message}") for message in messages]


def slot_is_free(ws_url: str) -> bool:
    """Whether alice, allowed one socket, can open one now: her first socket is gone."""
    with connect(ws_url, additional_headers=bearer(ALICE), open_timeout=10) as ws:
        try:
            frame = json.loads(ws.recv(timeout=10))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "dropped without a close frame"
            assert (exc.rcvd.code, exc.rcvd.reason) == (4429, "too many connections")
            return False
    assert set(frame) == {"session_id"}
    return True


def assistant_messages(base_url: str, session_id: str) -> list[tuple[str, str]]:
    with httpx.Client(base_url=base_url, headers=bearer(ALICE), timeout=10) as http:
        page = http.get(f"/api/sessions/{session_id}/messages", params={"limit": 100})
    assert page.status_code == 200
    messages = page.json()["messages"]
    return [(m["status"], m["content"]) for m in messages if m["role"] == "assistant"]


def serve(tmp_path: Path, command: Callable[[int], list[str]] | None = None) -> ServeProcess:
    """A server process with :data:`SETTINGS`, set as an operator would: in its environment."""
    process = ServeProcess(tmp_path, command)
    for name, value in SETTINGS.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        process.env[f"CHATBOT_{name.upper()}"] = text
    return process


SERVERS = {
    "chatbot serve": None,
    "uvicorn --ws chatbot.transport:WebSocketProtocol": lambda port: [
        "-m", "uvicorn", "--factory", "chatbot.app:create_app", "--port", str(port),
        "--ws", "chatbot.transport:WebSocketProtocol", "--log-level", "warning",
    ],
}  # fmt: skip


@pytest.mark.parametrize("messages", ASKS.values(), ids=ASKS.keys())
@pytest.mark.parametrize("command", SERVERS.values(), ids=SERVERS.keys())
def test_a_client_that_stops_reading_is_reset_and_its_slot_freed(
    tmp_path: Path, command: Callable[[int], list[str]] | None, messages: list[str]
) -> None:
    with serve(tmp_path, command) as server:
        client, session_id = stop_reading(server.port, messages)
        try:
            # Alice may have one socket: she gets it back once the server dropped the first.
            wait_for(lambda: slot_is_free(server.ws_url), "the socket slot to be freed", DEADLINE)
            # The server reset the connection: what the client finally reads ends in a
            # reset, long before the megabytes of replies, and no close frame could come.
            ended = client.read_to_the_end(timeout=DEADLINE)
            assert isinstance(ended, ConnectionResetError), ended
        finally:
            client.close()
        assert_stored(server.url, session_id, messages)
        log = server.stop()
    if command is None:
        # chatbot serve logs chatbot's records; plain uvicorn leaves that to the operator.
        assert "took no frame for 1 s; resetting its connection" in log
    assert ALICE not in log


def test_under_any_asgi_server_the_slot_of_a_client_that_stops_reading_is_freed(
    start_server: ServerFactory,
) -> None:
    # A plain uvicorn server offers no reset, nor a way to wait for the client to take the
    # last frame: the endpoint still gives up on the client once a frame waited
    # SEND_TIMEOUT seconds for room, which needs another frame after the buffers filled.
    server = start_server(**SETTINGS)
    messages = ASKS["eight replies of 900 kB"]
    client, session_id = stop_reading(server.port, messages)
    try:
        wait_for(
            lambda: slot_is_free(server.ws_url + "/ws/chat/"),
            "the socket slot to be freed",
            DEADLINE,
        )
    finally:
        client.close()
    assert_stored(server.url, session_id, messages)


def test_a_client_that_reads_gets_every_frame_within_a_short_send_timeout(
    tmp_path: Path,
) -> None:
    # Each frame waits until the client has taken it; one that reads is never dropped, even
    # with replies of 900 kB and a send timeout of one second.
    with serve(tmp_path) as server:
        with connect(
            server.ws_url, additional_headers=bearer(ALICE), max_size=None, open_timeout=10
        ) as ws:
            json.loads(ws.recv(timeout=10))
            messages = [*ASKS["eight replies of 900 kB"], *ASKS["one reply of 6 MB"]]
            replies = []
            for message in messages:
                ws.send(json.dumps({"message": message, "stream": True}))
                while "delta" in (frame := json.loads(ws.recv(timeout=DEADLINE))):
                    pass
                replies.append(frame["message"])
        assert replies == [f"Echo: {message}" for message in messages]
        log = server.stop()
    assert "took no frame" not in log
