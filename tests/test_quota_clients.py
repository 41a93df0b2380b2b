"""How the clients show ``quota_exceeded``: the terminal (a real ``chatbot serve`` and the
client in a pseudo-terminal) and the chat page in Chromium. A quota waits hours, not
seconds: both say the wait as a reader takes it in."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from chatbot.quotas import next_day
from chatbot.terminal.screen import duration
from tests.browser import open_chat, screenshot, send_message, wait_for_replies
from tests.conftest import ServerFactory, make_token
from tests.processes import ServeProcess
from tests.test_terminal import terminal

pytest_plugins = ["tests.browser"]

#: The echo backend's first reply to "one" uses 3 tokens: "one" in, "Echo: " and "one" out.
QUOTA = "3"
REFUSED = (
    "you have used your quota of 3 tokens a day; the message was not stored, send it again "
    "after the quota resets at 00:00 UTC"
)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (1, "1 s"),
        (119, "119 s"),
        (120, "2 min"),
        (121, "3 min"),
        (7140, "119 min"),
        (7199, "2 h"),
        (7200, "2 h"),
        (17_940, "4 h 59 min"),
        (17_941, "5 h"),
        (86_400, "24 h"),
        (48 * 3600 - 60, "47 h 59 min"),
        (48 * 3600, "2 d"),
        (1_479_600, "17 d 3 h"),
        (1_479_599 + 3600, "17 d 4 h"),
    ],
)
def test_a_wait_in_words_is_rounded_up(seconds: int, words: str) -> None:
    assert duration(seconds) == words


def _waits(before: datetime, after: datetime) -> set[str]:
    """The waits in words the server may have sent between ``before`` and ``after``."""
    low = math.ceil((next_day(after) - after).total_seconds())
    high = math.ceil((next_day(before) - before).total_seconds())
    return {duration(seconds) for seconds in range(low, high + 1)}


@pytest.mark.e2e
def test_the_terminal_shows_the_refusal_and_the_wait_in_words(tmp_path: Path) -> None:
    with ServeProcess(tmp_path, CHATBOT_QUOTA_TOKENS_PER_DAY=QUOTA) as server:
        token = make_token("thrifty")
        with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
            term.expect("you> ")
            term.line("one")
            term.expect("assistant> Echo: one\nyou> ")
            before = datetime.now(UTC)
            term.line("two")
            wait = term.expect_re(rf"error: {re.escape(REFUSED)} \(retry in ([^)]+)\)\nyou> ")
            after = datetime.now(UTC)
            assert wait.group(1) in _waits(before, after)
            term.line("/quit")
            assert term.wait() == 0


@pytest.fixture
def quota_page(start_server: ServerFactory, page: Page) -> Iterator[Page]:
    server = start_server(quota_tokens_per_day=int(QUOTA))
    open_chat(page, server.url, make_token("thrifty"))
    yield page


@pytest.mark.e2e
def test_the_chat_page_shows_the_refusal_and_the_wait_in_words(quota_page: Page) -> None:
    page = quota_page
    send_message(page, "one")
    wait_for_replies(page, 1)
    before = datetime.now(UTC)
    send_message(page, "two")
    error = page.get_by_text(REFUSED)
    expect(error).to_be_visible()
    after = datetime.now(UTC)
    shown = re.fullmatch(
        rf"{re.escape(REFUSED)} \(wait (.+) before sending again\)", error.inner_text()
    )
    assert shown is not None, error.inner_text()
    assert shown.group(1) in _waits(before, after)
    screenshot(page, "quota-exceeded")
