"""Backends used by the tests, registered through ``create_app(backend_types=...)``."""

from __future__ import annotations

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

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        last = request.messages[-1].content
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
