"""The ``reverse`` backend for chatbot: answers the last user message, words in reverse order.

An example of a third-party backend: no key, no network, registered as an entry point in
the ``chatbot.backends`` group by this package's ``pyproject.toml``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar, get_args

from chatbot.backends import Backend, ChatRequest, Usage
from chatbot.errors import BackendError, BackendErrorKind, ConfigError

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
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(
                f"[backends.{name}]: the reverse backend has no option {unknown[0]!r}; "
                f"it takes: {', '.join(OPTIONS)}"
            )
        delay = options.get("delay", 0.0)
        if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
            raise ConfigError(f"[backends.{name}]: delay must be a number of seconds >= 0")
        self.delay = float(delay)
        fail_with = options.get("fail_with")
        if fail_with is not None and fail_with not in KINDS:
            raise ConfigError(f"[backends.{name}]: fail_with must be one of: {', '.join(KINDS)}")
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
