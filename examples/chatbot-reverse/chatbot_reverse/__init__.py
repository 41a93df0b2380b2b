"""The ``reverse`` backend for chatbot: answers the last user message, words in reverse order.

An example of a third-party backend: no key, no network, registered as an entry point in
the ``chatbot.backends`` group by this package's ``pyproject.toml``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from math import inf
from typing import Any, ClassVar, get_args

from chatbot.backends import Backend, ChatRequest, Options, Usage
from chatbot.errors import BackendError, BackendErrorKind

__all__ = ["ReverseBackend"]

KINDS: tuple[BackendErrorKind, ...] = get_args(BackendErrorKind)
OPTIONS = ("delay", "fail_with", "model")


class ReverseBackend(Backend):
    """Answers ``world hello`` to ``hello world``, one word per chunk.

    Options: ``delay`` (seconds between chunks, default 0) slows the reply down;
    ``fail_with`` (``backend_error``, ``backend_timeout`` or ``backend_unavailable``) makes
    every reply fail with that error, to try out error handling without a network. A message
    that is exactly ``!fail`` fails with ``backend_error``.
    """

    models: ClassVar[tuple[str, ...]] = ("reverse",)

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        # The toolkit of the plugin API: it names the table and the valid options in every
        # complaint. first_token_timeout and total_timeout are the server's keys, never seen
        # here: the server enforces them around stream().
        read = Options(name, options, kind="reverse", known=OPTIONS)
        delay = options.get("delay", 0.0)
        # Options.seconds wants more than 0; no delay at all is this option's default.
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay < inf:
            raise read.fail("delay must be a number of seconds >= 0")
        self.delay = float(delay)
        fail_with = options.get("fail_with")
        if fail_with is not None and fail_with not in KINDS:
            raise read.fail(f"fail_with must be one of: {', '.join(KINDS)}")
        self.fail_with: BackendErrorKind | None = fail_with

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        if self.fail_with is not None:
            raise BackendError(
                f"the reverse backend is configured to fail with {self.fail_with}",
                kind=self.fail_with,
                retryable=self.fail_with != "backend_error",
            )
        last = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        if last == "!fail":
            raise BackendError("the reverse backend was asked to fail", kind="backend_error")
        words = last.split()[::-1]
        for index, word in enumerate(words):
            if index and self.delay:
                await asyncio.sleep(self.delay)
            yield word if index == len(words) - 1 else word + " "
        prompt = [m.content for m in request.messages]
        if request.system_prompt:
            prompt.append(request.system_prompt)
        yield Usage(
            input_tokens=sum(len(text.split()) for text in prompt),
            output_tokens=len(words),
        )
