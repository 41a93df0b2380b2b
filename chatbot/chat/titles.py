"""A session's title: asked of the backend named by ``title_backend``, else the first words
of its first message. Whatever a backend answers is cut to one short line of plain text."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from chatbot.backends import Backend, ChatMessage, ChatRequest
from chatbot.errors import BackendError

logger = logging.getLogger("chatbot.chat")

MAX_TITLE_CHARS = 60
#: Marks a model puts around a title: quotes of several kinds, emphasis, code.
QUOTES = "\"'*` \u201c\u201d\u2018\u2019"
#: How much of the conversation a title backend is shown.
EXCERPT_CHARS = 2_000
INSTRUCTION = (
    "Write a title of at most six words for the conversation below. Answer with the title "
    "alone: no quotes, no punctuation at the end.\n\n"
)


def shorten(text: str, limit: int = MAX_TITLE_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters, cut at a word when it is longer
    (a single word longer than that is cut where it must be)."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[: limit + 1].rsplit(" ", 1)[0] if " " in line[: limit + 1] else line[:limit]
    return cut[:limit].rstrip(" ,;:.-")


def fallback_title(first_message: str) -> str:
    """The first words of the first user message."""
    return shorten(first_message) or "New chat"


def clean_title(answer: str) -> str:
    """A backend's answer as a title: its first non-empty line, without Markdown marks or
    quotes around it, at most 60 characters."""
    line = next((part for part in answer.splitlines() if part.strip()), "")
    line = line.strip().lstrip("#*>- ").strip()
    for prefix in ("title:", "Title:", "TITLE:"):
        line = line.removeprefix(prefix).strip()
    line = line.strip(QUOTES).rstrip(".")
    return shorten(line)


async def make_title(
    backend: Backend | None, first_message: str, first_reply: str, *, seconds: float = 30.0
) -> str:
    """A title for a conversation that starts with these two messages. A backend that
    fails, times out or answers nothing usable leaves the fallback title (and a log line)."""
    fallback = fallback_title(first_message)
    if backend is None:
        return fallback
    excerpt = f"User: {first_message}\n\nAssistant: {first_reply}"[:EXCERPT_CHARS]
    request = ChatRequest(
        messages=[ChatMessage(role="user", content=INSTRUCTION + excerpt)],
        model=backend.default_model,
        system_prompt=None,
    )
    parts: list[str] = []
    try:
        async with asyncio.timeout(min(seconds, backend.total_timeout)):
            stream = backend.stream(request)
            try:
                async for item in stream:
                    if isinstance(item, str):
                        parts.append(item)
            finally:
                aclose = getattr(stream, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):
                        await aclose()
    except TimeoutError:
        logger.warning(
            "title backend %r timed out; the session keeps its first words", backend.name
        )
        return fallback
    except BackendError as exc:
        logger.warning(
            "title backend %r failed (%s): %s; the session keeps its first words",
            backend.name, exc.kind, exc.message,
        )  # fmt: skip
        return fallback
    except Exception:
        logger.exception("title backend %r failed; the session keeps its first words", backend.name)
        return fallback
    return clean_title("".join(parts)) or fallback
