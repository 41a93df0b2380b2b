"""The server's deadlines around a backend's stream: ``first_token_timeout`` until its first
text, ``total_timeout`` for the whole reply. A backend cannot forget them, and a slow one
fails with ``backend_timeout`` (before its first text, a fallback may answer instead)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from chatbot.backends import Backend, ChatRequest, Usage
from chatbot.errors import BackendError


async def guarded(backend: Backend, request: ChatRequest) -> AsyncIterator[str | Usage]:
    """Yield what ``backend.stream(request)`` yields, within the backend's deadlines.

    Each wait has its own timeout scope, never one held across a ``yield``: the consumer's
    code runs there, and its time is not the backend's. The backend's stream is closed
    however this ends, which releases its upstream request.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    total_deadline = started + backend.total_timeout
    first_deadline = min(started + backend.first_token_timeout, total_deadline)
    got_text = False
    stream = backend.stream(request)
    try:
        while True:
            deadline = total_deadline if got_text else first_deadline
            try:
                async with asyncio.timeout_at(deadline) as scope:
                    item = await anext(stream)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not scope.expired():
                    raise
                raise _timeout(backend, first_token=deadline < total_deadline) from None
            if isinstance(item, str) and item:
                got_text = True
            yield item
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def _timeout(backend: Backend, *, first_token: bool) -> BackendError:
    if first_token:
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
