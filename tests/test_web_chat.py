"""Chatting on the chat page in Chromium: the printed sign-in link, streamed replies, Stop
and Esc, Markdown and copy buttons, error frames, the keyboard, auto-scroll and signing in
with a pasted token."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from chatbot.settings import BackendConfig
from tests.browser import (
    ConsoleLog,
    open_chat,
    screenshot,
    send_message,
    wait_for_replies,
)
from tests.conftest import LiveServer, ServerFactory, bearer, make_token, wait_for
from tests.processes import ServeProcess

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.browser"]

ALICE = make_token("alice")
WORDS = 30
#: A reply of 31 words: about six seconds from the slow backend, time enough to stop it.
LONG = " ".join(f"w{n}" for n in range(WORDS))
LINK = re.compile(r"Chat in your browser: (http://\S+)")


def slow_server(start_server: ServerFactory, delay: float = 0.2, **overrides: Any) -> LiveServer:
    """A server whose echo backend waits ``delay`` seconds between words."""
    backends = {"slow": BackendConfig("slow", "echo", {"delay": delay})}
    return start_server(backends=backends, default_backend="slow", **overrides)


def history(server_url: str, token: str = ALICE) -> list[dict[str, Any]]:
    """Every message of the user's only session, over HTTP."""
    with httpx.Client(base_url=server_url, headers=bearer(token), timeout=10) as api:
        sessions = api.get("/api/sessions").json()["sessions"]
        assert len(sessions) == 1, sessions
        response = api.get(f"/api/sessions/{sessions[0]['session_id']}/messages?limit=100")
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def wait_while_streaming(page: Page, shown: str, not_yet: str) -> None:
    """Wait for a moment, during a reply, when the transcript is busy and the reply shows
    ``shown`` but not ``not_yet``: the reply is arriving piece by piece."""
    page.wait_for_function(
        """([shown, notYet]) => {
            const log = document.querySelector('[role=log]');
            if (!log || log.getAttribute('aria-busy') !== 'true') return false;
            const reply = log.textContent.slice(log.textContent.lastIndexOf('Echo:'));
            return reply.startsWith(shown) && !reply.includes(notYet);
        }""",
        arg=[shown, not_yet],
    )


def wait_for_link(serve: ServeProcess) -> str:
    """The sign-in link ``chatbot serve`` printed on start."""

    def printed() -> re.Match[str] | None:
        return LINK.search(serve.log.read_text(encoding="utf-8", errors="replace"))

    try:
        found: re.Match[str] = wait_for(printed, "a 'Chat in your browser: ' link", 15)
    except AssertionError as failure:
        printed_so_far = serve.log.read_text(encoding="utf-8", errors="replace")
        raise AssertionError(f"{failure}; chatbot serve printed:\n{printed_so_far}") from None
    return found.group(1)


# Signing in ---------------------------------------------------------------------------------


def test_follow_the_printed_link_chat_and_reload(tmp_path: Path, page: Page) -> None:
    (tmp_path / "chatbot.toml").write_text('[backends.slow]\ntype = "echo"\ndelay = 0.15\n')
    with ServeProcess(tmp_path, CHATBOT_CONFIG=str(tmp_path / "chatbot.toml")) as serve:
        link = wait_for_link(serve)
        assert link.startswith(f"http://127.0.0.1:{serve.port}/#token=")
        token = link.split("#token=", 1)[1]
        page.goto(link)
        textbox = page.get_by_role("textbox", name="Message")
        expect(textbox).to_be_editable()
        # The token left the address bar (and so the history) for sessionStorage.
        expect(page).not_to_have_url(re.compile("token"))
        assert token in page.evaluate("JSON.stringify(sessionStorage)")
        assert token not in page.evaluate("JSON.stringify(localStorage)")
        assert token not in page.content()
        message = "hello from the printed link, one word at a time"
        send_message(page, message)
        log = page.get_by_role("log")
        wait_while_streaming(page, "Echo: hello", "at a time")
        wait_for_replies(page, 1)
        expect(log).to_contain_text(f"Echo: {message}")
        expect(textbox).to_have_value("")
        screenshot(page, "printed-link-chat")
        page.reload()
        expect(log).to_contain_text(f"Echo: {message}")
        expect(log).to_contain_text(message)
        expect(page).not_to_have_url(re.compile("token"))
        stored = history(serve.url, token)
        assert [(m["content"], m["status"]) for m in stored] == [
            (message, "complete"),
            (f"Echo: {message}", "complete"),
        ]
        page.close()  # before the server stops, or the page would try to reconnect
        output = serve.stop()
    # The fragment never reached the server: the token is in its output once, in the link.
    assert output.count(token) == 1, output


def test_paste_a_token_then_expire(
    start_server: ServerFactory, page: Page, console: ConsoleLog
) -> None:
    server = start_server(jwt_leeway=0)
    page.goto(server.url + "/")
    token_box = page.get_by_role("textbox", name="Token")
    expect(token_box).to_be_visible()
    expect(page.get_by_role("textbox", name="Message")).not_to_be_visible()
    screenshot(page, "sign-in-panel")
    # A token good for a few seconds: long enough to chat once, then it expires.
    short = make_token("alice", ttl=6)
    token_box.fill(short)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("textbox", name="Message")).to_be_editable()
    send_message(page, "pasted")
    wait_for_replies(page, 1)
    expect(page.get_by_role("log")).to_contain_text("Echo: pasted")
    # At expiry the server closes the socket (4401); the page asks for a token again.
    console.allow(r"status of 401")
    expect(page.get_by_role("textbox", name="Token")).to_be_visible(timeout=20_000)
    # Signed in again, the chat goes on where it was.
    page.get_by_role("textbox", name="Token").fill(ALICE)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("log")).to_contain_text("Echo: pasted")
    send_message(page, "renewed")
    wait_for_replies(page, 2)
    assert [m["content"] for m in history(server.url)] == [
        "pasted",
        "Echo: pasted",
        "renewed",
        "Echo: renewed",
    ]


def test_an_expired_token_gets_the_sign_in_panel(
    server: LiveServer, page: Page, console: ConsoleLog
) -> None:
    console.allow(r"status of 401")
    expired = make_token("alice", ttl=-3600)
    page.goto(f"{server.url}/#token={expired}")
    expect(page.get_by_role("textbox", name="Token")).to_be_visible()
    expect(page.get_by_role("textbox", name="Message")).not_to_be_visible()
    expect(page).not_to_have_url(re.compile("token="))
    # Pasting a good one signs in.
    page.get_by_role("textbox", name="Token").fill(ALICE)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("textbox", name="Message")).to_be_editable()


def test_a_fresh_link_opened_in_the_same_tab_signs_in(
    server: LiveServer, page: Page, console: ConsoleLog
) -> None:
    # The link of `chatbot open` pasted into the tab that asks for a sign-in: only the
    # fragment differs, so the browser does not load the page again.
    page.goto(server.url + "/")
    expect(page.get_by_role("textbox", name="Token")).to_be_visible()
    fresh = make_token("alice")
    page.goto(f"{server.url}/#token={fresh}")
    expect(page.get_by_role("textbox", name="Message")).to_be_editable()
    expect(page).not_to_have_url(re.compile("token="))
    assert page.evaluate("sessionStorage.getItem('chatbot.token')") == fresh
    send_message(page, "signed in again")
    wait_for_replies(page, 1)


def test_sign_out_forgets_the_token(server: LiveServer, page: Page) -> None:
    open_chat(page, server.url, ALICE)
    send_message(page, "private")
    wait_for_replies(page, 1)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("textbox", name="Token")).to_be_visible()
    expect(page.get_by_role("log")).to_be_hidden()
    assert ALICE not in page.evaluate("JSON.stringify(sessionStorage)")
    page.reload()
    expect(page.get_by_role("textbox", name="Token")).to_be_visible()
    expect(page.get_by_text("private")).to_have_count(0)


# Sending and stopping -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["button", "escape"])
def test_stop_a_slow_reply(start_server: ServerFactory, page: Page, how: str) -> None:
    server = slow_server(start_server)
    open_chat(page, server.url, ALICE)
    send_message(page, LONG)
    log = page.get_by_role("log")
    wait_while_streaming(page, "Echo: w0", "w29 ")
    if how == "button":
        page.get_by_role("button", name="Stop").click()
    else:
        page.get_by_role("textbox", name="Message").press("Escape")
    expect(log).to_have_attribute("aria-busy", "false")
    expect(log).to_contain_text(re.compile("cancelled", re.IGNORECASE))
    screenshot(page, f"stopped-{how}")
    user, reply = history(server.url)
    assert (user["content"], user["status"]) == (LONG, "complete")
    assert reply["status"] == "cancelled"
    assert reply["content"].startswith("Echo: w0")
    assert reply["content"] != f"Echo: {LONG}"
    # What the page shows is what was stored: the reply stops where it was stopped.
    assert log.inner_text().count("w29") == 1  # the user's own message only


def test_enter_sends_and_shift_enter_is_a_new_line(server: LiveServer, page: Page) -> None:
    open_chat(page, server.url, ALICE)
    textbox = page.get_by_role("textbox", name="Message")
    textbox.click()
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    expect(textbox).to_have_value("line one\nline two")
    expect(page.get_by_role("log")).not_to_contain_text("line one")
    page.keyboard.press("Enter")
    wait_for_replies(page, 1)
    expect(page.get_by_role("log")).to_contain_text("line two")
    expect(textbox).to_have_value("")
    assert history(server.url)[0]["content"] == "line one\nline two"


def test_rate_limited_shows_the_wait(start_server: ServerFactory, page: Page) -> None:
    server = start_server(rate_limit_per_minute=2)
    open_chat(page, server.url, ALICE)
    for count, text in enumerate(["one", "two"], start=1):
        send_message(page, text)
        wait_for_replies(page, count)
    send_message(page, "three")
    # Said plainly, with how long to wait.
    error = page.get_by_text(
        re.compile(r"\b(?:in|wait|after)\s+\d+\s*(?:s|sec|seconds?)\b", re.IGNORECASE)
    )
    expect(error).to_be_visible()
    # Once: the wait is not repeated.
    assert len(re.findall(r"\d+\s*s\b", error.inner_text())) == 1, error.inner_text()
    screenshot(page, "rate-limited")
    assert [m["content"] for m in history(server.url)] == ["one", "Echo: one", "two", "Echo: two"]


# Markdown -----------------------------------------------------------------------------------


def copy(button: Locator) -> str:
    """Press a Copy button; what it put on the clipboard."""
    button.click()
    expect(button).to_have_text("Copied")
    text: str = button.page.evaluate("navigator.clipboard.readText()")
    return text


CODE = "Here:\n```python\nprint('hi')\n```"


def test_code_blocks_and_messages_have_copy_buttons(server: LiveServer, new_page: Any) -> None:
    page: Page = new_page(
        viewport={"width": 1280, "height": 800},
        permissions=["clipboard-read", "clipboard-write"],
    )
    open_chat(page, server.url, ALICE)
    send_message(page, CODE)
    wait_for_replies(page, 1)
    log = page.get_by_role("log")
    code = log.locator("pre code")
    expect(code.last).to_have_text(re.compile(r"^print\('hi'\)\s*$"))
    screenshot(page, "chat-desktop-light")
    # One per message (the user's and the reply) and one per code block.
    expect(log.get_by_role("button", name="Copy your message")).to_have_count(1)
    expect(log.get_by_role("button", name="Copy reply")).to_have_count(1)
    expect(log.get_by_role("button", name="Copy code")).to_have_count(1)
    assert copy(log.get_by_role("button", name="Copy code")).strip() == "print('hi')"
    assert copy(log.get_by_role("button", name="Copy reply")) == f"Echo: {CODE}"
    assert copy(log.get_by_role("button", name="Copy your message")) == CODE


#: Watches the reply's element: on every change, notes code lines shown outside a code block
#: and Markdown fences shown as text.
WATCH_CODE = """body => {
    window.__samples = 0;
    window.__broken = [];
    const check = () => {
        window.__samples += 1;
        const walker = document.createTreeWalker(body, NodeFilter.SHOW_TEXT);
        for (let n = walker.nextNode(); n; n = walker.nextNode()) {
            if (n.data.includes('```')) window.__broken.push('fence shown: ' + n.data);
            if (/L\\d\\d/.test(n.data) && !n.parentElement.closest('pre code'))
                window.__broken.push('outside the code block: ' + n.data);
        }
    };
    check();
    new MutationObserver(check).observe(
        body, {subtree: true, childList: true, characterData: true});
}"""


def test_a_code_block_stays_one_while_it_streams(start_server: ServerFactory, page: Page) -> None:
    server = slow_server(start_server, delay=0.1)
    open_chat(page, server.url, ALICE)
    lines = [f"L{n:02}" for n in range(1, 31)]
    send_message(page, "Code:\n```\n" + "\n".join(lines) + "\n```\nDone.")
    # The reply's element, as soon as it exists (sampling needs it, not just its text).
    reply = page.locator("[role=log] .assistant .message-body").last
    reply.wait_for(state="attached")
    page.evaluate(WATCH_CODE, reply.element_handle())
    # Finished blocks are left alone while the reply grows: the paragraph before the code
    # is the same element (not redrawn, so it cannot flicker) many renderings later.
    body = reply.element_handle()
    showing = "([el, text]) => el.querySelector('pre code')?.textContent.includes(text)"
    page.wait_for_function(showing, arg=[body, "L03"])
    paragraph = reply.get_by_text("Echo: Code:").element_handle()
    page.wait_for_function(showing, arg=[body, "L15"])
    assert page.get_by_role("log").get_attribute("aria-busy") == "true", "too late a sample"
    assert paragraph.evaluate("el => el.isConnected"), "the first paragraph was redrawn"
    wait_for_replies(page, 1)
    samples, broken = page.evaluate("[window.__samples, window.__broken]")
    assert broken == []
    assert samples >= 10, f"only {samples} renderings seen while streaming"
    code = page.get_by_role("log").locator("pre code").last
    expect(code).to_have_text(re.compile(r"^L01\nL02\n[\s\S]*L30\s*$"))
    expect(page.get_by_role("log")).to_contain_text("Done.")
