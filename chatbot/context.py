"""What a backend is shown of a conversation: the system prompt and the newest turns that
fit the backend's token budget.

Tokens are estimated (about four characters each, plus a few per message), not counted
with a vendor's tokenizer: the budget is a guard against overflowing a model's context
window, so it should be set somewhat below the model's real limit.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatbot.backends import ChatMessage

PER_MESSAGE_TOKENS = 4


def estimate_tokens(text: str) -> int:
    """A rough, tokenizer-free estimate: one token per four characters, rounded up."""
    return -(-len(text) // 4)


def trim(
    messages: Sequence[ChatMessage], system_prompt: str | None, budget: int | None
) -> list[ChatMessage]:
    """The newest messages that fit ``budget`` once the system prompt is counted.

    The last message (the one being answered) is always kept, even alone over the budget:
    the backend, not the server, then says the message is too long.
    """
    if budget is None or not messages:
        return list(messages)
    left = budget - (estimate_tokens(system_prompt) if system_prompt else 0)
    kept: list[ChatMessage] = []
    for message in reversed(messages):
        cost = estimate_tokens(message.content) + PER_MESSAGE_TOKENS
        if kept and cost > left:
            break
        kept.append(message)
        left -= cost
    kept.reverse()
    return kept
