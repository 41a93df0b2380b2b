"""The chat page's shape in Chromium: the accessible names people with screen readers (and
these tests) find things by, a phone-width screen, dark mode, and auto-scroll."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from chatbot.settings import BackendConfig
from tests.browser import open_chat, screenshot, send_message, wait_for_replies
from tests.conftest import LiveServer, ServerFactory, bearer, make_token

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.browser"]

ALICE = make_token("alice")

#: The element that scrolls the transcript: the log itself or its nearest scrolling
#: ancestor.
SCROLLER = """() => {
    let el = document.querySelector('[role=log]');
    while (el && el !== document.body) {
        const overflow = getComputedStyle(el).overflowY;
        if ((overflow === 'auto' || overflow === 'scroll') && el.scrollHeight > el.clientHeight)
            return el;
        el = el.parentElement;
    }
    return document.scrollingElement;
}"""


def test_accessible_names(start_server: ServerFactory, page: Page) -> None:
    backends = {"slow": BackendConfig("slow", "echo", {"delay": 0.2})}
    server = start_server(backends=backends, default_backend="slow")
    open_chat(page, server.url, ALICE)
    log = page.get_by_role("log")
    expect(log).to_have_attribute("aria-busy", "false")
    expect(page.get_by_role("textbox", name="Message")).to_be_editable()
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(page.get_by_role("button", name="New chat")).to_be_visible()
    nav = page.get_by_role("navigation", name="Sessions")
    expect(nav).to_be_visible()
    send_message(page, "one two three four five six")
    # While the reply streams, screen readers are told to wait, and it can be stopped.
    expect(log).to_have_attribute("aria-busy", "true")
    expect(page.get_by_role("button", name="Stop")).to_be_visible()
    wait_for_replies(page, 1)
    expect(log).to_have_attribute("aria-busy", "false")
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    # The new session is a link in the list, named by its title, which the server gives it
    # after the first reply (its first words, without a title backend).
    links = nav.get_by_role("listitem").get_by_role("link")
    expect(links).to_have_count(1)
    expect(links.first).to_have_accessible_name("one two three four five six")
    with httpx.Client(base_url=server.url, headers=bearer(ALICE)) as api:
        (session,) = api.get("/api/sessions").json()["sessions"]
    assert session["title"]
    expect(links.first).to_have_accessible_name(session["title"])


def test_phone_width(server: LiveServer, new_page: Callable[..., Page]) -> None:
    page = new_page(viewport={"width": 360, "height": 740}, is_mobile=True, has_touch=True)
    open_chat(page, server.url, ALICE)
    send_message(page, "A reply with a long line: " + "x" * 200)
    wait_for_replies(page, 1)
    send_message(page, "and code:\n```\n" + "y = 1  # " + "z" * 150 + "\n```")
    wait_for_replies(page, 2)
    for name in ("Send",):
        expect(page.get_by_role("button", name=name)).to_be_in_viewport()
    expect(page.get_by_role("textbox", name="Message")).to_be_in_viewport()
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 360
    screenshot(page, "chat-phone-360")
    # The sidebar is one tap away.
    page.get_by_role("button", name="Sessions").click()
    nav = page.get_by_role("navigation", name="Sessions")
    expect(nav.get_by_role("link").first).to_be_in_viewport()
    expect(page.get_by_role("button", name="New chat", exact=True)).to_be_in_viewport()
    expect(nav.get_by_role("button", name=re.compile("^Rename")).first).to_be_in_viewport()
    expect(nav.get_by_role("button", name=re.compile("^Delete")).first).to_be_in_viewport()
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 360
    screenshot(page, "chat-phone-360-sessions")
    page.get_by_role("button", name="New chat", exact=True).click()
    expect(page.get_by_role("textbox", name="Message")).to_be_in_viewport()
    expect(page.get_by_role("log")).not_to_contain_text("A reply with a long line")


def background(page: Page) -> tuple[int, int, int]:
    """The page's visible background colour: the body's, else the root element's."""
    colour: str = page.evaluate(
        """() => {
            for (const el of [document.querySelector('main'), document.body,
                              document.documentElement]) {
                if (!el) continue;
                const c = getComputedStyle(el).backgroundColor;
                if (c && c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c;
            }
            return 'rgb(255, 255, 255)';
        }"""
    )
    found = re.match(r"rgba?\((\d+), (\d+), (\d+)", colour)
    assert found, colour
    red, green, blue = (int(v) for v in found.groups())
    return red, green, blue


def luminance(rgb: tuple[int, int, int]) -> float:
    """Relative brightness from 0 (black) to 1 (white)."""
    red, green, blue = rgb
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


@pytest.mark.parametrize("scheme", ["dark", "light"])
def test_colour_scheme_follows_the_system(
    server: LiveServer, new_page: Callable[..., Page], scheme: str
) -> None:
    page = new_page(viewport={"width": 1280, "height": 800}, color_scheme=scheme)
    open_chat(page, server.url, ALICE)
    send_message(page, "Dark or light?\n```python\nprint('colours')\n```")
    wait_for_replies(page, 1)
    shade = luminance(background(page))
    if scheme == "dark":
        assert shade < 0.25, background(page)
        text: str = page.evaluate("getComputedStyle(document.body).color")
        assert text != "rgb(0, 0, 0)", "dark text on a dark background"
    else:
        assert shade > 0.75, background(page)
    screenshot(page, f"chat-{scheme}")


def test_auto_scroll_stops_when_scrolled_up(start_server: ServerFactory, page: Page) -> None:
    backends = {"slow": BackendConfig("slow", "echo", {"delay": 0.03})}
    server = start_server(backends=backends, default_backend="slow")
    open_chat(page, server.url, ALICE)
    # One paragraph a word: a reply many screens tall, arriving over several seconds.
    send_message(page, "\n\n".join(f"p{n:03}" for n in range(300)))
    log = page.get_by_role("log")
    # Following: the reply grows past the screen and the view stays at its bottom.
    page.wait_for_function("el => el.textContent.includes('p040')", arg=log.element_handle())
    # Only now does the transcript overflow: looked up earlier, the scroller would be the page.
    scroller = page.evaluate_handle(SCROLLER)

    def metric(expression: str) -> Any:
        return page.evaluate(f"el => {expression}", scroller)

    page.wait_for_function(
        "el => el.scrollHeight - el.scrollTop - el.clientHeight < 40", arg=scroller
    )
    # The reader scrolls up: the view stays where they put it while the text grows.
    log.hover()
    page.mouse.wheel(0, -600)
    page.wait_for_function(
        "el => el.scrollHeight - el.scrollTop - el.clientHeight > 300", arg=scroller
    )
    held = metric("el.scrollTop")
    height = metric("el.scrollHeight")
    page.wait_for_function(f"el => el.scrollHeight > {height} + 500", arg=scroller)
    assert metric("el.scrollTop") == held
    # Back at the bottom, it follows again while the reply goes on.
    page.mouse.wheel(0, 100_000)
    height = metric("el.scrollHeight")
    page.wait_for_function(
        f"""el => el.scrollHeight > {height} + 300
            && el.scrollHeight - el.scrollTop - el.clientHeight < 40""",
        arg=scroller,
    )
    expect(log).to_have_attribute("aria-busy", "true")
    wait_for_replies(page, 1)
    expect(log).to_contain_text("p299")
