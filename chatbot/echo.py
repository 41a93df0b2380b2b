"""The ``echo`` backend: no key, no network, a deterministic reply for demos and tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Mapping
from math import inf
from typing import Any, ClassVar

from chatbot.backends import Backend, ChatRequest, Options, Usage

_WORDS = re.compile(r"\S+\s*|\s+")


class EchoBackend(Backend):
    """Answers ``Echo: <the last user message>``, one word per chunk.

    Options: ``delay`` (seconds between chunks, default 0) slows the reply down for demos,
    benchmarks and tests of streaming and cancellation.
    """

    models: ClassVar[tuple[str, ...]] = ("echo",)

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        read = Options(name, options, kind="echo", known=("delay", "model"))
        delay = options.get("delay", 0.0)
        # Options.seconds wants more than 0; no delay at all is this option's default.
        if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay < inf:
            raise read.fail("delay must be a number of seconds >= 0")
        self.delay = float(delay)

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        last = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        chunks = _WORDS.findall(f"Echo: {last}")
        for index, chunk in enumerate(chunks):
            if index and self.delay:
                await asyncio.sleep(self.delay)
            yield chunk
        prompt = " ".join(m.content for m in request.messages)
        if request.system_prompt:
            prompt += " " + request.system_prompt
        # The words of the prompt: one split of the whole, cheaper than one per message.
        yield Usage(input_tokens=len(prompt.split()), output_tokens=len(chunks))
