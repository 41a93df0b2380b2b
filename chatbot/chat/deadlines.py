"""The server's deadlines around a backend's stream: ``first_token_timeout`` until its first
text, ``total_timeout`` for the whole reply. A backend cannot forget them, and a slow one
fails with ``backend_timeout`` (before its first text, a fallback may answer instead).

One timer per stream, not one per chunk: :class:`Deadlines` arms a loop timer at the first
deadline; when it fires after the first text, it moves on to the total deadline; when a
deadline has really passed, it cancels the task streaming the reply, and the caller turns
that cancellation into :class:`~chatbot.errors.BackendError` with :meth:`Deadlines.error`.
A chunk costs a flag, not a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from chatbot.backends import Backend, ChatRequest, Usage
from chatbot.errors import BackendError


class Deadlines:
    """The two deadlines of one backend's stream, watched by one timer on the current task."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.got_text = False
        #: The deadline that passed, once one has: "first" or "total".
        self.passed: str | None = None
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        now = loop.time()
        self._total = now + backend.total_timeout
        self._first = min(now + backend.first_token_timeout, self._total)
        self._timer = loop.call_at(self._first, self._check)

    def _check(self) -> None:
        loop = self._task.get_loop()
        if self.got_text and loop.time() < self._total:
            self._timer = loop.call_at(self._total, self._check)
            return
        self.passed = "total" if self.got_text or self._first >= self._total else "first"
        self._task.cancel()

    def disarm(self) -> None:
        self._timer.cancel()

    def error(self) -> BackendError:
        """What the passed deadline means for the user."""
        backend = self.backend
        if self.passed == "first":
            message = (
                f"the backend {backend.name!r} sent no text within "
                f"{backend.first_token_timeout:g} s (first_token_timeout)"
            )
        else:
            message = (
                f"the reply took longer than {backend.total_timeout:g} s (total_timeout of the "
                f"backend {backend.name!r})"
            )
        return BackendError(message, kind="backend_timeout", retryable=True)


async def guarded(
    backend: Backend, request: ChatRequest, deadlines: Deadlines
) -> AsyncGenerator[str | Usage, None]:
    """Yield what ``backend.stream(request)`` yields, telling ``deadlines`` of the first
    text. Closing this closes the backend's stream, which releases its upstream request."""
    stream = backend.stream(request)
    try:
        async for item in stream:
            if not deadlines.got_text and isinstance(item, str) and item:
                deadlines.got_text = True
            yield item
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
