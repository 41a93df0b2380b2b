"""Backends used by the tests, registered through ``create_app(backend_types=...)``."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from chatbot.backends import Backend, ChatRequest, Usage
from chatbot.errors import BackendError


class StoreProbeBackend(Backend):
    """Answers with what the database file holds at the moment the backend is called."""

    models: ClassVar[tuple[str, ...]] = ("probe",)

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        self.path = str(options["path"])

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        last = request.messages[-1].content
        with sqlite3.connect(self.path) as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM messages WHERE role = 'user' AND content = ?", (last,)
            ).fetchone()
        yield f"stored={count}"


class FlakyBackend(Backend):
    """Fails when the message says so: ``fail`` before any text, ``fail-late`` after some."""

    models: ClassVar[tuple[str, ...]] = ("flaky-1", "flaky-2")

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        self.failed_once: set[str] = set()

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        last = request.messages[-1].content
        if last.startswith("fail-once") and last not in self.failed_once:
            self.failed_once.add(last)
            raise BackendError(
                "the upstream answered 529", kind="backend_unavailable", retryable=True
            )
        if last == "fail":
            raise BackendError(
                "the upstream answered 503", kind="backend_unavailable", retryable=True
            )
        if last == "crash":
            raise ValueError("an unexpected bug with a secret sk-do-not-leak")
        yield "partial "
        if last == "fail-late":
            raise BackendError("the upstream dropped the connection")
        yield f"answer to {last} with {request.model}"
        yield Usage(input_tokens=3, output_tokens=4)


class RecordingBackend(Backend):
    """Streams ``chunks`` words ``delay`` seconds apart and writes to the file ``log`` one
    line when it starts (``start <message>``) and one when its stream is closed or
    cancelled before the end (``closed <message> after <n>``)."""

    models: ClassVar[tuple[str, ...]] = ("recorder",)

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        self.log = str(options["log"])
        self.delay = float(options.get("delay", 0.05))
        self.chunks = int(options.get("chunks", 20))

    def _write(self, line: str) -> None:
        with open(self.log, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        last = request.messages[-1].content
        self._write(f"start {last}")
        sent = 0
        try:
            for n in range(self.chunks):
                if n:
                    await asyncio.sleep(self.delay)
                yield f"w{n} "
                sent += 1
        finally:
            if sent < self.chunks:
                self._write(f"closed {last} after {sent}")


def read_log(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().splitlines()
    except FileNotFoundError:
        return []


class PromptBackend(Backend):
    """Answers with what it was given: ``<system prompt>|<turns>|<model>``."""

    models: ClassVar[tuple[str, ...]] = ("p-1", "p-2")

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        turns = ",".join(m.content for m in request.messages)
        yield f"{request.system_prompt}|{turns}|{request.model}"


class DownBackend(Backend):
    """Fails before its first token the way the option ``kind`` says."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        kind = self.options.get("kind", "backend_unavailable")
        retryable = self.options.get("retryable", kind != "backend_error")
        raise BackendError(f"{self.name} is down", kind=kind, retryable=retryable)
        yield ""  # an async generator, like every backend


class SilentBackend(Backend):
    """Sends nothing, ever; writes ``closed`` to the file ``log`` when its stream is closed."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        try:
            await asyncio.Event().wait()
            yield ""
        finally:
            with open(str(self.options["log"]), "a", encoding="utf-8") as handle:  # noqa: ASYNC230
                handle.write("closed\n")
