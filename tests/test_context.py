"""Trimming the conversation to a backend's token budget."""

from __future__ import annotations

from chatbot.backends import ChatMessage
from chatbot.context import PER_MESSAGE_TOKENS, estimate_tokens, trim


def turns(*texts: str) -> list[ChatMessage]:
    roles = ("user", "assistant")
    return [ChatMessage(role=roles[n % 2], content=text) for n, text in enumerate(texts)]


def test_estimate_rounds_up() -> None:
    assert [estimate_tokens(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]


def test_no_budget_keeps_everything() -> None:
    history = turns("a" * 400, "b" * 400, "c")
    assert trim(history, "prompt", None) == history


def test_keeps_the_newest_turns_that_fit_after_the_system_prompt() -> None:
    history = turns("a" * 40, "b" * 40, "c" * 40, "d" * 40)  # 10 tokens + 4 each
    assert trim(history, None, 28) == history[-2:]
    assert trim(history, None, 27) == history[-1:]
    assert trim(history, None, 56) == history
    # A 20-token system prompt leaves room for two turns out of 48.
    assert trim(history, "s" * 80, 48) == history[-2:]


def test_the_message_being_answered_is_always_kept() -> None:
    history = turns("old", "x" * 4000)
    assert trim(history, "prompt", 10) == history[-1:]
    assert estimate_tokens("x" * 4000) + PER_MESSAGE_TOKENS > 10
