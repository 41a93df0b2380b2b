"""The chat page's sessions in Chromium: new, switch, rename, delete, more on scroll, older
history when scrolled to the top, and the backend chooser of a new chat."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from playwright.sync_api import Locator, Page, expect

from chatbot.settings import BackendConfig
from tests.browser import open_chat, send_message, wait_for_replies
from tests.conftest import GENEROUS_LIMITS, LiveServer, ServerFactory, make_token
from tests.conversations import api, seed

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.browser"]

ALICE = make_token("alice")
#: Resolves after the page has drawn two more frames.
NEXT_FRAMES = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"


def sessions_nav(page: Page) -> Locator:
    """The sidebar's list of sessions."""
    return page.get_by_role("navigation", name="Sessions")


def session_link(page: Page, title: str) -> Locator:
    """The sidebar link of the session named ``title``."""
    return sessions_nav(page).get_by_role("link", name=title, exact=True)


def scroll_until(page: Page, over: Locator, dy: int, done: Callable[[], bool]) -> None:
    """Turn the mouse wheel over ``over`` as a person would, until ``done()``."""
    deadline = time.monotonic() + 20
    box = over.bounding_box()
    assert box is not None, "nothing to scroll: the element is not visible"
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    while not done():
        assert time.monotonic() < deadline, "scrolling never showed what was expected"
        page.mouse.wheel(0, dy)
        # Let the page handle the scroll (two frames) before checking again.
        page.evaluate(NEXT_FRAMES)


def test_new_chat(server: LiveServer, page: Page) -> None:
    open_chat(page, server.url, ALICE)
    send_message(page, "first chat")
    wait_for_replies(page, 1)
    links = sessions_nav(page).get_by_role("link")
    expect(links).to_have_count(1)
    # Exact: an untitled session's buttons are "Rename New chat" and "Delete New chat".
    page.get_by_role("button", name="New chat", exact=True).click()
    log = page.get_by_role("log")
    expect(log).not_to_contain_text("first chat")
    send_message(page, "second chat")
    wait_for_replies(page, 1)
    expect(links).to_have_count(2)
    expect(log).not_to_contain_text("first chat")
    with api(server) as http:
        sessions = http.get("/api/sessions").json()["sessions"]
        assert [s["message_count"] for s in sessions] == [2, 2]
        newest = http.get(f"/api/sessions/{sessions[0]['session_id']}/messages").json()
    assert [m["content"] for m in newest["messages"]] == ["second chat", "Echo: second chat"]


def test_switch_between_sessions(server: LiveServer, page: Page) -> None:
    seed(server, "Trip planning", ["Paris in May"])
    seed(server, "Recipes", ["leek soup"])
    open_chat(page, server.url, ALICE)
    log = page.get_by_role("log")
    # Most recently active first.
    expect(sessions_nav(page).get_by_role("link")).to_have_text(["Recipes", "Trip planning"])
    session_link(page, "Trip planning").click()
    expect(log).to_contain_text("Echo: Paris in May")
    expect(log).not_to_contain_text("leek soup")
    session_link(page, "Recipes").click()
    expect(log).to_contain_text("Echo: leek soup")
    expect(log).not_to_contain_text("Paris in May")
    # A message goes to the session shown.
    send_message(page, "with croutons")
    wait_for_replies(page, 2)
    with api(server) as http:
        recipes = http.get("/api/sessions").json()["sessions"][0]
        assert recipes["title"] == "Recipes"
        assert recipes["message_count"] == 4


def test_rename_a_session(server: LiveServer, page: Page) -> None:
    session_id = seed(server, "Trip planning", ["Paris in May"])
    open_chat(page, server.url, ALICE)
    expect(session_link(page, "Trip planning")).to_be_visible()
    rename(page, "Trip planning", "Rome in June")
    expect(session_link(page, "Rome in June")).to_be_visible()
    expect(session_link(page, "Trip planning")).to_have_count(0)
    with api(server) as http:
        assert http.get(f"/api/sessions/{session_id}").json()["title"] == "Rome in June"
    page.reload()
    expect(session_link(page, "Rome in June")).to_be_visible()


def rename(page: Page, old: str, new: str) -> None:
    """Rename the session ``old`` to ``new`` through its Rename button: the title becomes a
    text field, Enter saves."""
    nav = sessions_nav(page)
    nav.get_by_role("button", name=f"Rename {old}").click()
    title = nav.get_by_role("textbox", name="Title")
    expect(title).to_be_focused()
    expect(title).to_have_value(old)
    title.fill(new)
    title.press("Enter")


def test_delete_a_session(server: LiveServer, page: Page) -> None:
    kept = seed(server, "Trip planning", ["Paris in May"])
    gone = seed(server, "Recipes", ["leek soup"])
    open_chat(page, server.url, ALICE)
    session_link(page, "Recipes").click()
    expect(page.get_by_role("log")).to_contain_text("leek soup")
    delete = sessions_nav(page).get_by_role("button", name="Delete Recipes")
    confirm = page.get_by_role("dialog")
    # Asked first; Cancel keeps it.
    delete.click()
    confirm.get_by_role("button", name="Cancel").click()
    expect(confirm).to_be_hidden()
    expect(session_link(page, "Recipes")).to_be_visible()
    delete.click()
    expect(confirm).to_contain_text("Recipes")
    confirm.get_by_role("button", name="Delete").click()
    expect(confirm).to_be_hidden()
    expect(session_link(page, "Recipes")).to_have_count(0)
    expect(session_link(page, "Trip planning")).to_be_visible()
    expect(page.get_by_role("log")).not_to_contain_text("leek soup")
    with api(server) as http:
        assert http.get(f"/api/sessions/{gone}").status_code == 404
        assert http.get(f"/api/sessions/{kept}").status_code == 200


def test_more_sessions_on_scroll(start_server: ServerFactory, page: Page) -> None:
    server = start_server(start_server.settings(**GENEROUS_LIMITS))
    for n in range(1, 46):
        seed(server, f"Session {n:02}")
    open_chat(page, server.url, ALICE)
    links = sessions_nav(page).get_by_role("link")
    expect(links.first).to_have_text("Session 45")
    # Not all at once: a long list arrives page by page.
    assert links.count() < 45
    scroll_until(page, sessions_nav(page), 600, lambda: links.count() == 45)
    expect(links).to_have_count(45)
    expect(links.last).to_have_text("Session 01")
    titles = links.all_inner_texts()
    assert titles == [f"Session {n:02}" for n in range(45, 0, -1)]


def test_older_history_when_scrolled_to_the_top(start_server: ServerFactory, page: Page) -> None:
    server = start_server(start_server.settings(**GENEROUS_LIMITS))
    texts = [f"msg-{n:03}" for n in range(1, 61)]
    seed(server, "Long talk", texts)
    open_chat(page, server.url, ALICE)
    session_link(page, "Long talk").click()
    log = page.get_by_role("log")
    expect(log).to_contain_text("Echo: msg-060")
    # The newest page first; older ones only on demand.
    expect(log).not_to_contain_text("msg-001")
    scroll_until(page, log, -2000, lambda: "Echo: msg-001" in (log.text_content() or ""))
    shown = log.inner_text()
    positions = [shown.index(f"Echo: {text}") for text in texts]
    assert positions == sorted(positions), "the history is not in order"
    assert shown.count("Echo: msg-030") == 1, "a page of history was shown twice"


def test_the_new_chat_chooser_picks_the_backend(start_server: ServerFactory, page: Page) -> None:
    backends = {
        "echo": BackendConfig("echo", "echo"),
        "other": BackendConfig("other", "echo", {"model": "echo"}),
    }
    server = start_server(backends=backends, default_backend="echo")
    open_chat(page, server.url, ALICE)
    page.get_by_role("button", name="New chat").click()
    chooser = page.get_by_role("combobox", name="Backend")
    expect(chooser).to_be_visible()
    options = chooser.locator("option")
    expect(options).to_have_text([re.compile("echo"), re.compile("other")])
    chooser.select_option("other")
    send_message(page, "which one?")
    wait_for_replies(page, 1)
    with api(server) as http:
        (session,) = http.get("/api/sessions").json()["sessions"]
        assert http.get(f"/api/sessions/{session['session_id']}").json()["backend"] == "other"


def test_leaving_a_reply_in_progress(start_server: ServerFactory, page: Page) -> None:
    backends = {"slow": BackendConfig("slow", "echo", {"delay": 0.1})}
    server = start_server(backends=backends, default_backend="slow")
    long = " ".join(f"w{n}" for n in range(30))
    open_chat(page, server.url, ALICE)
    send_message(page, long)
    log = page.get_by_role("log")
    expect(log).to_contain_text("Echo: w0")
    # A new chat while the reply streams: nothing of it, and nothing to stop, shows there.
    page.get_by_role("button", name="New chat", exact=True).click()
    expect(log).not_to_contain_text("w0")
    expect(log).to_have_attribute("aria-busy", "false")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    # The reply went on without the page; back in its session it is shown whole, once. The
    # session got its title after the page left it, so the list still says "New chat".
    sessions_nav(page).get_by_role("link", name="New chat", exact=True).click()
    expect(log).to_contain_text(f"Echo: {long}")
    expect(log).to_have_attribute("aria-busy", "false")
    assert log.inner_text().count("Echo:") == 1
