"""Chromium driven by Playwright for the chat page's tests: one browser per test module, a
fresh context per test, and a record of console errors that every test ends by checking.

A test module loads the fixtures (``browser``, ``new_page``, ``page``, ``console``) with
``pytest_plugins = ["tests.browser"]``, and imports the helpers it calls. That import comes
first, too early for pytest to rewrite this module's asserts, hence PYTEST_DONT_REWRITE
(its asserts carry their own messages).
Only Debian's Chromium is used (``apt-get install chromium``): nothing here downloads a
browser. Where it or Playwright is missing the tests skip with the reason, except under
``CI=true``, where they fail: CI must never skip a browser test.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

#: Debian's Chromium; CHROMIUM_PATH points elsewhere for other systems.
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # containers and CI runners rarely allow Chromium's user namespaces
    "--disable-gpu",
    "--disable-background-networking",  # nothing may reach the internet during a test
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Screenshots of the page, for people to look at (git-ignored).
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
#: Milliseconds an action or an ``expect`` waits; generous, as two cores run everything.
TIMEOUT_MS = 15_000


def unavailable(reason: str) -> NoReturn:
    """Skip the test for ``reason``, or fail it under CI, which must run every browser test."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: browser tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, shared by the tests of one module."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        unavailable(
            "playwright is not installed: install the test extra "
            "(python -m pip install -e '.[test]')"
        )
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(
            f"no Chromium at {CHROMIUM}: install it (apt-get install chromium) "
            "or set CHROMIUM_PATH to its path"
        )
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@dataclass
class ConsoleLog:
    """Console errors (CSP violations among them) and uncaught exceptions of the pages of
    one test, less the ones the test declared as expected."""

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        """Record what ``page`` reports from now on."""
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            # Without the fragment: a sign-in link's token has no place in a report.
            where = message.location.get("url", "").split("#", 1)[0]
            self.errors.append(f"console.error: {message.text} ({where})")

    def allow(self, pattern: str) -> None:
        """Expect errors matching ``pattern`` (a regex): only what the browser itself logs
        and a test provokes on purpose, such as a refused connection while the server is
        down."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        """The recorded errors that no ``allow`` pattern matches."""
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]

    def assert_clean(self) -> None:
        """Fail when a page logged an error or threw."""
        found = self.unexpected()
        assert not found, "the page reported errors:\n" + "\n".join(found)


@pytest.fixture
def console() -> ConsoleLog:
    """The console record of this test's pages."""
    return ConsoleLog()


@pytest.fixture
def new_page(browser: Browser, console: ConsoleLog) -> Iterator[Callable[..., Page]]:
    """``new_page(**context_options)``: a page in a fresh context (``viewport``,
    ``color_scheme``...), watched by ``console``; the test fails if any page logged an
    error."""
    contexts: list[BrowserContext] = []

    def make(**options: Any) -> Page:
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        console.watch(page)
        return page

    yield make
    for context in contexts:
        context.close()
    console.assert_clean()


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    """A page in a fresh desktop-sized context."""
    return new_page(viewport={"width": 1280, "height": 800})


def screenshot(page: Page, name: str) -> Path:
    """Save what ``page`` shows as ``test-artifacts/<name>.png``, for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def chat_url(base: str, token: str) -> str:
    """The sign-in link of the chat page at ``base``: the token travels in the fragment."""
    return f"{base.rstrip('/')}/#token={token}"


def open_chat(page: Page, base: str, token: str) -> None:
    """Open the chat page at ``base`` signed in with ``token``; return once it can be typed
    into."""
    from playwright.sync_api import expect

    page.goto(chat_url(base, token))
    expect(page.get_by_role("textbox", name="Message")).to_be_editable()


def send_message(page: Page, text: str) -> None:
    """Type ``text`` into the message box and press the Send button."""
    page.get_by_role("textbox", name="Message").fill(text)
    page.get_by_role("button", name="Send").click()


def wait_for_replies(page: Page, count: int) -> None:
    """Wait until the transcript shows ``count`` echo replies and none is streaming."""
    from playwright.sync_api import expect

    page.wait_for_function(
        "n => (document.querySelector('[role=log]')?.textContent.match(/Echo:/g) ?? [])"
        ".length >= n",
        arg=count,
    )
    expect(page.get_by_role("log")).to_have_attribute("aria-busy", "false")
