"""The chat page when its server goes away mid-reply and comes back on the same port: a
banner says it is reconnecting, and the reply is finished, answered once."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.browser import ConsoleLog, open_chat, screenshot, send_message, wait_for_replies
from tests.conftest import bearer, make_token
from tests.processes import ServeProcess

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.browser"]

ALICE = make_token("alice")
LONG = " ".join(f"w{n}" for n in range(30))


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
        first.signal(signal.SIGKILL)
        first.wait()
        expect(banner).to_be_visible()
        screenshot(page, "reconnect-banner")
    finally:
        first.stop()
    with slow_serve(tmp_path, port=first.port) as again:
        expect(banner).to_be_hidden()
        wait_for_replies(page, 1)
        expect(log).to_contain_text(f"Echo: {LONG}")
        with httpx.Client(base_url=again.url, headers=bearer(ALICE)) as api:
            (session,) = api.get("/api/sessions").json()["sessions"]
            stored = api.get(f"/api/sessions/{session['session_id']}/messages").json()
    # Sent again with its id, the message was answered once, and not stored twice.
    assert [(m["role"], m["content"], m["status"]) for m in stored["messages"]] == [
        ("user", LONG, "complete"),
        ("assistant", f"Echo: {LONG}", "complete"),
    ]
    assert "client_id" in stored["messages"][0]
    # The page shows the reply once.
    assert log.inner_text().count(f"Echo: {LONG}") == 1


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
