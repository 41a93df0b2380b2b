"""Branches on the chat page in Chromium: editing a message, regenerating a reply, the
arrows between versions ("2 / 3"), a branch made in another tab, and titles that arrive
while the page is open."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, WebSocket, expect

from chatbot.settings import BackendConfig
from tests.browser import open_chat, screenshot, send_message, wait_for_replies
from tests.conftest import LiveServer, ServerFactory, bearer, make_token

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.browser"]

ALICE = make_token("alice")
#: A reply of 21 words: about four seconds from the slow backend.
LONG = " ".join(f"w{n}" for n in range(20))


def slow_server(start_server: ServerFactory, delay: float = 0.2) -> LiveServer:
    """A server whose echo backend waits ``delay`` seconds between words."""
    backends = {"slow": BackendConfig("slow", "echo", {"delay": delay})}
    return start_server(backends=backends, default_backend="slow")


def api(server: LiveServer) -> httpx.Client:
    """The HTTP API as Alice."""
    return httpx.Client(base_url=server.url, headers=bearer(ALICE), timeout=10)


def only_session(server: LiveServer) -> str:
    """The id of Alice's only session."""
    with api(server) as http:
        (session,) = http.get("/api/sessions").json()["sessions"]
    session_id: str = session["session_id"]
    return session_id


def stored(server: LiveServer, session_id: str) -> list[dict[str, Any]]:
    """The messages of the session's current branch, as the HTTP API gives them."""
    with api(server) as http:
        response = http.get(f"/api/sessions/{session_id}/messages")
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def branch(server: LiveServer, session_id: str) -> list[tuple[str, str]]:
    """The session's current branch, as (role, content) pairs."""
    return [(m["role"], m["content"]) for m in stored(server, session_id)]


def said(page: Page, role: str, text: str) -> Locator:
    """The message of ``role`` ("user" or "assistant") that reads exactly ``text``."""
    return (
        page.get_by_role("log")
        .locator(f"article.{role}")
        .filter(has=page.get_by_text(text, exact=True))
    )


def versions(message: Locator, shown: str) -> Locator:
    """The "2 / 3" counter of ``message``, reading ``shown``."""
    return message.get_by_text(shown, exact=True)


def frames_sent(page: Page) -> list[dict[str, Any]]:
    """Every JSON frame the page sends on its sockets from now on (pings left out)."""
    sent: list[dict[str, Any]] = []

    def watch(ws: WebSocket) -> None:
        def record(payload: str | bytes) -> None:
            frame = json.loads(payload)
            if frame.get("type") != "ping":
                sent.append(frame)

        ws.on("framesent", record)

    page.on("websocket", watch)
    return sent


def edit(page: Page, message: Locator, text: str) -> None:
    """Edit ``message`` into ``text`` and save it with Enter."""
    message.get_by_role("button", name="Edit your message").click()
    box = page.get_by_role("textbox", name="Edit message")
    expect(box).to_be_focused()
    box.fill(text)
    box.press("Enter")


def reply_count(page: Page) -> int:
    """How many replies the transcript shows."""
    return page.get_by_role("log").locator("article.assistant").count()


# Edit ---------------------------------------------------------------------------------------


def test_edit_a_message_then_switch_between_versions(server: LiveServer, page: Page) -> None:
    sent = frames_sent(page)
    open_chat(page, server.url, ALICE)
    send_message(page, "one")
    wait_for_replies(page, 1)
    send_message(page, "two")
    wait_for_replies(page, 2)
    session_id = only_session(server)
    first_reply_id = stored(server, session_id)[1]["id"]
    log = page.get_by_role("log")

    edit(page, said(page, "user", "two"), "three")
    expect(said(page, "assistant", "Echo: three")).to_be_visible()
    expect(log).to_have_attribute("aria-busy", "false")
    # Everything below the edited message was replaced by the new version and its reply.
    expect(said(page, "user", "two")).to_have_count(0)
    expect(said(page, "assistant", "Echo: two")).to_have_count(0)
    expect(log.locator("article")).to_have_count(4)
    edited = said(page, "user", "three")
    expect(versions(edited, "2 / 2")).to_be_visible()
    # Answered: no longer shown faded as a message waiting for its reply.
    expect(edited.locator(".message-body")).to_have_css("opacity", "1")
    expect(edited.get_by_role("button", name="Next version")).to_be_disabled()
    expect(edited.get_by_role("button", name="Previous version")).to_be_enabled()
    # Neither the first message nor the replies have other versions.
    expect(log.locator(".versions:visible")).to_have_count(1)
    screenshot(page, "branches-arrows-light")
    (edit_frame,) = [f for f in sent if f.get("parent_id", "absent") != "absent"]
    assert set(edit_frame) == {"message", "parent_id", "id", "stream"}
    assert edit_frame["message"] == "three"
    assert edit_frame["parent_id"] == first_reply_id
    assert edit_frame["stream"] is True
    assert branch(server, session_id) == [
        ("user", "one"),
        ("assistant", "Echo: one"),
        ("user", "three"),
        ("assistant", "Echo: three"),
    ]

    edited.get_by_role("button", name="Previous version").click()
    old = said(page, "user", "two")
    expect(versions(old, "1 / 2")).to_be_visible()
    expect(said(page, "assistant", "Echo: two")).to_be_visible()
    expect(said(page, "user", "three")).to_have_count(0)
    expect(old.get_by_role("button", name="Previous version")).to_be_disabled()
    # The switch is the server's too: the old branch is the current one again.
    assert branch(server, session_id)[2:] == [("user", "two"), ("assistant", "Echo: two")]

    old.get_by_role("button", name="Next version").click()
    expect(said(page, "assistant", "Echo: three")).to_be_visible()
    expect(versions(said(page, "user", "three"), "2 / 2")).to_be_visible()
    expect(said(page, "assistant", "Echo: two")).to_have_count(0)


def test_the_edit_box_keys(server: LiveServer, new_page: Callable[..., Page]) -> None:
    for scheme in ("light", "dark"):
        page = new_page(viewport={"width": 1280, "height": 800}, color_scheme=scheme)
        sent = frames_sent(page)
        open_chat(page, server.url, ALICE)
        send_message(page, f"a question in {scheme}")
        wait_for_replies(page, 1)
        message = said(page, "user", f"a question in {scheme}")
        message.get_by_role("button", name="Edit your message").click()
        box = page.get_by_role("textbox", name="Edit message")
        expect(box).to_be_focused()
        expect(box).to_have_value(f"a question in {scheme}")
        expect(page.get_by_role("button", name="Save")).to_be_visible()
        # Shift+Enter is a new line; the message is not sent.
        box.press("End")
        box.press("Shift+Enter")
        page.keyboard.type("and a second line")
        expect(box).to_have_value(f"a question in {scheme}\nand a second line")
        screenshot(page, f"branches-edit-box-{scheme}")
        # Escape leaves the message as it was, and sends nothing.
        box.press("Escape")
        expect(box).to_have_count(0)
        expect(message).to_be_visible()
        expect(message.get_by_role("button", name="Edit your message")).to_be_focused()
        # Cancel does too.
        message.get_by_role("button", name="Edit your message").click()
        page.get_by_role("button", name="Cancel").click()
        expect(box).to_have_count(0)
        assert [f for f in sent if "parent_id" in f] == []
        # Enter saves, with the new line in it.
        message.get_by_role("button", name="Edit your message").click()
        box.press("End")
        box.press("Shift+Enter")
        page.keyboard.type("edited")
        box.press("Enter")
        wait_for_replies(page, 1)
        expect(page.get_by_role("log")).to_contain_text(f"Echo: a question in {scheme}\nedited")
        message = page.get_by_role("log").locator("article.user")
        expect(versions(message, "2 / 2")).to_be_visible()
        expect(message.locator(".message-body")).to_have_css("opacity", "1")
        (edit_frame,) = [f for f in sent if "parent_id" in f]
        assert edit_frame["message"] == f"a question in {scheme}\nedited"
        # The first message of a conversation: its new version is a new first message.
        assert edit_frame["parent_id"] is None
        screenshot(page, f"branches-edited-{scheme}")
        page.get_by_role("button", name="New chat", exact=True).click()


def test_an_edit_survives_a_reload(server: LiveServer, page: Page) -> None:
    open_chat(page, server.url, ALICE)
    send_message(page, "before")
    wait_for_replies(page, 1)
    edit(page, said(page, "user", "before"), "after")
    expect(said(page, "assistant", "Echo: after")).to_be_visible()
    expect(page.get_by_role("log")).to_have_attribute("aria-busy", "false")
    page.reload()
    message = said(page, "user", "after")
    expect(versions(message, "2 / 2")).to_be_visible()
    expect(said(page, "assistant", "Echo: after")).to_be_visible()
    message.get_by_role("button", name="Previous version").click()
    expect(versions(said(page, "user", "before"), "1 / 2")).to_be_visible()
    expect(said(page, "assistant", "Echo: before")).to_be_visible()
    # Reloaded again, the version chosen last is the one shown.
    page.reload()
    expect(versions(said(page, "user", "before"), "1 / 2")).to_be_visible()
    expect(said(page, "user", "after")).to_have_count(0)


def test_edited_markup_stays_text(server: LiveServer, page: Page) -> None:
    markup = '<img src=x onerror="window.__pwned=1">'
    edited = '<b>bold?</b> <img src=y onerror="window.__pwned=2">'
    open_chat(page, server.url, ALICE)
    send_message(page, markup)
    wait_for_replies(page, 1)
    message = said(page, "user", markup)
    message.get_by_role("button", name="Edit your message").click()
    box = page.get_by_role("textbox", name="Edit message")
    expect(box).to_have_value(markup)
    box.fill(edited)
    box.press("Enter")
    expect(said(page, "assistant", f"Echo: {edited}")).to_be_visible()
    expect(versions(said(page, "user", edited), "2 / 2")).to_be_visible()
    log = page.get_by_role("log")
    assert log.locator("img, b, [onerror]").count() == 0
    assert page.evaluate("window.__pwned") is None
    # Back to the first version: still text.
    said(page, "user", edited).get_by_role("button", name="Previous version").click()
    expect(said(page, "assistant", f"Echo: {markup}")).to_be_visible()
    assert log.locator("img, b, [onerror]").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_an_edit_streams_its_reply(start_server: ServerFactory, page: Page) -> None:
    server = slow_server(start_server, delay=0.15)
    open_chat(page, server.url, ALICE)
    send_message(page, "short")
    wait_for_replies(page, 1)
    edit(page, said(page, "user", "short"), LONG)
    # The branch frame comes first, then the reply word by word, into one reply.
    expect(versions(said(page, "user", LONG), "2 / 2")).to_be_visible()
    page.wait_for_function(
        """() => {
            const log = document.querySelector('[role=log]');
            const text = log.textContent;
            return log.getAttribute('aria-busy') === 'true'
                && text.includes('Echo: w0') && !text.includes('w19 ');
        }"""
    )
    assert reply_count(page) == 1
    expect(said(page, "user", LONG).get_by_role("button", name="Previous version")).to_be_disabled()
    wait_for_replies(page, 1)
    expect(said(page, "assistant", f"Echo: {LONG}")).to_be_visible()
    assert reply_count(page) == 1
    expect(said(page, "user", LONG).get_by_role("button", name="Previous version")).to_be_enabled()


# Regenerate ---------------------------------------------------------------------------------


def test_regenerate_a_reply(start_server: ServerFactory, page: Page) -> None:
    server = slow_server(start_server, delay=0.15)
    sent = frames_sent(page)
    open_chat(page, server.url, ALICE)
    send_message(page, "first")
    wait_for_replies(page, 1)
    send_message(page, LONG)
    log = page.get_by_role("log")
    expect(log).to_contain_text("Echo: w0")
    # Nothing else may start while a reply streams.
    expect(log).to_have_attribute("aria-busy", "true")
    first = said(page, "user", "first")
    expect(first.get_by_role("button", name="Edit your message")).to_be_disabled()
    first_reply = said(page, "assistant", "Echo: first")
    expect(first_reply.get_by_role("button", name="Regenerate reply")).to_be_disabled()
    wait_for_replies(page, 2)
    expect(first.get_by_role("button", name="Edit your message")).to_be_enabled()
    session_id = only_session(server)
    old_id = stored(server, session_id)[3]["id"]

    said(page, "assistant", f"Echo: {LONG}").get_by_role("button", name="Regenerate reply").click()
    # The old reply gives way to the new one, streaming.
    expect(log).to_have_attribute("aria-busy", "true")
    expect(log).to_contain_text("Echo: w0")
    assert log.inner_text().count("Echo: w0") == 1
    assert reply_count(page) == 2
    wait_for_replies(page, 2)
    reply = said(page, "assistant", f"Echo: {LONG}")
    expect(versions(reply, "2 / 2")).to_be_visible()
    expect(log.locator(".versions:visible")).to_have_count(1)
    assert reply_count(page) == 2
    (frame,) = [f for f in sent if f.get("type") == "regenerate"]
    assert set(frame) == {"type", "message_id", "id", "stream"}
    assert (frame["message_id"], frame["stream"]) == (old_id, True)
    messages = stored(server, session_id)
    assert messages[3]["siblings"] == [old_id, messages[3]["id"]]

    reply.get_by_role("button", name="Previous version").click()
    expect(versions(said(page, "assistant", f"Echo: {LONG}"), "1 / 2")).to_be_visible()
    assert stored(server, session_id)[3]["id"] == old_id
    assert reply_count(page) == 2


# Another tab --------------------------------------------------------------------------------


def test_a_branch_made_in_another_tab_shows_here(
    server: LiveServer, new_page: Callable[..., Page]
) -> None:
    here = new_page(viewport={"width": 1280, "height": 800})
    open_chat(here, server.url, ALICE)
    send_message(here, "shared question")
    wait_for_replies(here, 1)
    session_id = only_session(server)
    there = new_page(viewport={"width": 1280, "height": 800})
    open_chat(there, server.url, ALICE)
    there.goto(f"{server.url}/#session={session_id}")
    expect(said(there, "assistant", "Echo: shared question")).to_be_visible()

    edit(there, said(there, "user", "shared question"), "asked another way")
    expect(said(there, "assistant", "Echo: asked another way")).to_be_visible()
    # The first tab follows, without a reload: the new version, its reply and the arrows.
    expect(said(here, "assistant", "Echo: asked another way")).to_be_visible()
    expect(versions(said(here, "user", "asked another way"), "2 / 2")).to_be_visible()
    expect(said(here, "user", "shared question")).to_have_count(0)
    expect(said(here, "assistant", "Echo: shared question")).to_have_count(0)
    expect(here.get_by_role("log")).to_have_attribute("aria-busy", "false")

    # A switch in the first tab shows in the second.
    said(here, "user", "asked another way").get_by_role("button", name="Previous version").click()
    expect(versions(said(there, "user", "shared question"), "1 / 2")).to_be_visible()
    expect(said(there, "assistant", "Echo: shared question")).to_be_visible()
    expect(said(there, "user", "asked another way")).to_have_count(0)

    # A regeneration in the second tab shows in the first, reply and arrows.
    said(there, "assistant", "Echo: shared question").get_by_role(
        "button", name="Regenerate reply"
    ).click()
    expect(versions(said(there, "assistant", "Echo: shared question"), "2 / 2")).to_be_visible()
    expect(versions(said(here, "assistant", "Echo: shared question"), "2 / 2")).to_be_visible()
    assert reply_count(here) == 1


# Titles -------------------------------------------------------------------------------------


def test_the_title_arrives_after_the_first_reply(start_server: ServerFactory, page: Page) -> None:
    server = slow_server(start_server, delay=0.1)
    open_chat(page, server.url, ALICE)
    nav = page.get_by_role("navigation", name="Sessions")
    heading = page.get_by_role("heading", level=1)
    question = "Plan a week in Lisbon for two people in spring please"
    send_message(page, question)
    # Untitled while the first reply is written: the server titles it once it is complete.
    expect(page.get_by_role("log")).to_contain_text("Echo: Plan")
    expect(nav.get_by_role("link")).to_have_text(["New chat"])
    expect(heading).to_have_text("New chat")
    wait_for_replies(page, 1)
    # Without a title backend, the title is the message's first words.
    expect(nav.get_by_role("link")).to_have_text([question])
    expect(heading).to_have_text(question)
    expect(page).to_have_title(f"{question} · Chat")
    # A rename elsewhere shows at once too.
    session_id = only_session(server)
    with api(server) as http:
        renamed = http.patch(f"/api/sessions/{session_id}", json={"title": "Lisbon"})
    assert renamed.status_code == 200, renamed.text
    expect(nav.get_by_role("link")).to_have_text(["Lisbon"])
    expect(heading).to_have_text("Lisbon")
    expect(page).to_have_title("Lisbon · Chat")
