"""The chat page when its connection drops mid-reply: through a proxy that cuts it while
the server goes on, and by the server going away and coming back on the same port. A banner
says it is reconnecting, and the reply is finished, answered once."""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, WebSocket, expect

from chatbot.settings import BackendConfig
from tests.browser import ConsoleLog, open_chat, screenshot, send_message, wait_for_replies
from tests.conftest import LiveServer, ServerFactory, bearer, make_token
from tests.processes import ServeProcess

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.browser"]

ALICE = make_token("alice")
LONG = " ".join(f"w{n}" for n in range(30))


class CuttableProxy:
    """A loopback TCP proxy to ``port`` whose open connections can be cut, as a network
    drop would, while it goes on accepting new ones."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.cuts = 0
        threading.Thread(target=self.accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every connection open now, without a close frame: a network failure."""
        with self.lock:
            dropped, self.open = self.open, []
            self.cuts += 1
        for connection in dropped:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def proxied(start_server: ServerFactory) -> Iterator[tuple[LiveServer, CuttableProxy]]:
    """A server with a slow echo backend, and a proxy in front of it."""
    backends = {"slow": BackendConfig("slow", "echo", {"delay": 0.1})}
    server = start_server(backends=backends, default_backend="slow")
    proxy = CuttableProxy(server.port)
    yield server, proxy
    proxy.close()


def test_a_dropped_connection_picks_up_the_reply_in_progress(
    proxied: tuple[LiveServer, CuttableProxy], page: Page
) -> None:
    server, proxy = proxied
    sockets: list[WebSocket] = []
    page.on("websocket", lambda ws: sockets.append(ws))
    open_chat(page, proxy.url, ALICE)
    send_message(page, LONG)
    log = page.get_by_role("log")
    expect(log).to_contain_text("Echo: w0 w1")
    # The server goes on generating; the page reconnects (?stream=1) and is sent the text so
    # far, then the rest.
    assert log.get_attribute("aria-busy") == "true", "the reply ended before the cut"
    proxy.cut()
    wait_for_replies(page, 1)
    expect(log).to_contain_text(f"Echo: {LONG}")
    expect(page.get_by_text("reconnecting")).to_be_hidden()
    assert len(sockets) >= 2, "the page never opened a new socket"
    shown = log.inner_text()
    assert shown.count("Echo:") == 1, shown
    assert shown.count("w0 w1") == 2, shown  # the message, and its reply once
    with httpx.Client(base_url=server.url, headers=bearer(ALICE)) as api:
        (session,) = api.get("/api/sessions").json()["sessions"]
        stored = api.get(f"/api/sessions/{session['session_id']}/messages").json()
    assert [(m["role"], m["content"], m["status"]) for m in stored["messages"]] == [
        ("user", LONG, "complete"),
        ("assistant", f"Echo: {LONG}", "complete"),
    ]


def slow_serve(tmp_path: Path, port: int | None = None) -> ServeProcess:
    """``chatbot serve`` with a slow echo backend, on ``port`` when given; every start in
    ``tmp_path`` shares the database, the data directory and the secret."""
    config = tmp_path / "chatbot.toml"
    config.write_text('[backends.slow]\ntype = "echo"\ndelay = 0.1\n')
    return ServeProcess(tmp_path, port=port, CHATBOT_CONFIG=str(config))


def test_restart_mid_reply_reconnects_and_finishes(
    tmp_path: Path, page: Page, console: ConsoleLog
) -> None:
    # While the server is down, Chromium itself logs each refused connection attempt.
    console.allow(r"ERR_CONNECTION_REFUSED|WebSocket connection to .* failed")
    first = slow_serve(tmp_path).__enter__()
    try:
        open_chat(page, first.url, ALICE)
        send_message(page, LONG)
        log = page.get_by_role("log")
        expect(log).to_contain_text("Echo: w0 w1")
        banner = page.get_by_text("reconnecting")
        expect(banner).to_be_hidden()
        # A crash: the reply dies with the process; the user's message was already stored.
        assert log.get_attribute("aria-busy") == "true", "the reply ended before the kill"
        first.signal(signal.SIGKILL)
        first.wait()
        expect(banner).to_be_visible()
        screenshot(page, "reconnect-banner")
        # What is written while the server is away waits for it.
        send_message(page, "written while down")
    finally:
        first.stop()
    with slow_serve(tmp_path, port=first.port) as again:
        expect(banner).to_be_hidden()
        wait_for_replies(page, 2)
        expect(log).to_contain_text(f"Echo: {LONG}")
        expect(log).to_contain_text("Echo: written while down")
        with httpx.Client(base_url=again.url, headers=bearer(ALICE)) as api:
            (session,) = api.get("/api/sessions").json()["sessions"]
            stored = api.get(f"/api/sessions/{session['session_id']}/messages").json()
    # Sent again with its id, each message was answered once, and stored once.
    rows = [(m["role"], m["content"], m["status"]) for m in stored["messages"]]
    assert sorted(rows) == [
        ("assistant", f"Echo: {LONG}", "complete"),
        ("assistant", "Echo: written while down", "complete"),
        ("user", LONG, "complete"),
        ("user", "written while down", "complete"),
    ]
    assert all("client_id" in m for m in stored["messages"] if m["role"] == "user")
    # The page shows each reply once.
    shown = log.inner_text()
    assert shown.count(f"Echo: {LONG}") == 1
    assert shown.count("Echo: written while down") == 1


def test_sigterm_mid_reply_lets_it_finish_then_reconnects(
    tmp_path: Path, page: Page, console: ConsoleLog
) -> None:
    console.allow(r"ERR_CONNECTION_REFUSED|WebSocket connection to .* failed")
    first = slow_serve(tmp_path).__enter__()
    try:
        open_chat(page, first.url, ALICE)
        send_message(page, LONG)
        log = page.get_by_role("log")
        expect(log).to_contain_text("Echo: w0 w1")
        # A clean stop: the reply in flight gets the shutdown grace to finish, then the
        # socket closes with 1001 and the page waits for the server to come back.
        first.signal(signal.SIGTERM)
        first.wait()
        expect(log).to_contain_text(f"Echo: {LONG}")
        expect(page.get_by_text("reconnecting")).to_be_visible()
    finally:
        first.stop()
    with slow_serve(tmp_path, port=first.port):
        expect(page.get_by_text("reconnecting")).to_be_hidden()
        send_message(page, "after the restart")
        wait_for_replies(page, 2)
        expect(log).to_contain_text("Echo: after the restart")
    assert log.inner_text().count(f"Echo: {LONG}") == 1


def test_stop_while_reconnecting_cancels_once_back(
    tmp_path: Path, page: Page, console: ConsoleLog
) -> None:
    console.allow(r"ERR_CONNECTION_REFUSED|WebSocket connection to .* failed")
    first = slow_serve(tmp_path).__enter__()
    try:
        open_chat(page, first.url, ALICE)
        send_message(page, LONG)
        log = page.get_by_role("log")
        expect(log).to_contain_text("Echo: w0 w1")
        first.signal(signal.SIGKILL)
        first.wait()
        expect(page.get_by_text("reconnecting")).to_be_visible()
        # The user gives up on the reply while the server is away.
        page.get_by_role("button", name="Stop").click()
    finally:
        first.stop()
    with slow_serve(tmp_path, port=first.port) as again:
        expect(page.get_by_text("reconnecting")).to_be_hidden()
        expect(log).to_have_attribute("aria-busy", "false")
        expect(log).to_contain_text("cancelled")
        expect(page.get_by_role("button", name="Stop")).to_be_hidden()
        with httpx.Client(base_url=again.url, headers=bearer(ALICE)) as api:
            (session,) = api.get("/api/sessions").json()["sessions"]
            stored = api.get(f"/api/sessions/{session['session_id']}/messages").json()
    (user, reply) = stored["messages"]
    assert (user["content"], reply["role"], reply["status"]) == (LONG, "assistant", "cancelled")
    assert reply["content"] != f"Echo: {LONG}"
    assert f"Echo: {LONG}" not in log.inner_text()
