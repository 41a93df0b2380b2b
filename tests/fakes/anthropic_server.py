"""A local stand-in for Anthropic's Messages API, scripted per test.

It serves ``POST /v1/messages`` with ``"stream": true`` in Anthropic's server-sent events
format (``event: <type>`` and ``data: <json>`` pairs)::

    message_start        {"message": {..., "usage": {"input_tokens": N, "output_tokens": 1}}}
    content_block_start  {"index": 0, "content_block": {"type": "text", "text": ""}}
    ping
    content_block_delta  {"index": 0, "delta": {"type": "text_delta", "text": "..."}}  (each chunk)
    content_block_stop   {"index": 0}
    message_delta        {"delta": {"stop_reason": "end_turn", ...}, "usage": {"output_tokens": N}}
    message_stop

The usage of ``message_delta`` is cumulative (the SDK's ``MessageDeltaUsage``); where the
input tokens are told is a :class:`Reply`'s ``usage_in``: in ``message_start`` only (the API
as first published), in both events (the API today: ``message_delta`` repeats them), or in
``message_delta`` only, after an ``input_tokens: 0`` in ``message_start`` (as proxies such as
LiteLLM send them).

Errors use Anthropic's body ``{"type": "error", "error": {"type": ..., "message": ...}}``,
as an HTTP response or, once the stream has started, as an ``error`` event.

A test queues what the next requests get on a :class:`FakeAnthropic` and serves
``fake.app()`` (for example with ``tests.conftest.LiveServer``)::

    fake = FakeAnthropic()
    fake.script(rate_limited(retry_after="0.01"), Reply(["Hel", "lo"]))
    server = LiveServer(fake.app()).start()

Every request is recorded (its JSON body and headers) with what became of its response,
in particular whether the client went away before the end (``aborted``). Like the real API,
the fake refuses a request without a key (``x-api-key``, or an ``Authorization: Bearer``
header as anthropic 2.x sends it) or ``anthropic-version``, without
``model``, ``max_tokens`` or ``messages``, with a ``system`` role among the messages or with
roles that do not alternate starting with ``user``; such a refusal does not use up a
scripted response.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

UsageIn = Literal["message_start", "both", "message_delta"]


@dataclass(frozen=True)
class Reply:
    """A complete streamed reply: one ``text_delta`` per chunk, ``delay`` seconds apart."""

    chunks: Sequence[str] = ("Hello", " from", " the fake")
    delay: float = 0.0
    input_tokens: int = 10
    #: Reported in ``message_delta``; default: the number of chunks.
    output_tokens: int | None = None
    stop_reason: str = "end_turn"
    ping: bool = True
    #: Which events carry ``input_tokens`` (see the module's docstring).
    usage_in: UsageIn = "message_start"


@dataclass(frozen=True)
class StatusError:
    """An HTTP error status with Anthropic's JSON error body, before any event."""

    status: int
    error_type: str
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stall:
    """Send nothing at all, not even the status line, for ``seconds``; then ``then``."""

    seconds: float = 30.0
    then: Reply = field(default_factory=Reply)


@dataclass(frozen=True)
class MidStreamError:
    """Stream ``chunks`` (``delay`` apart), then an ``error`` event, then end the response."""

    chunks: Sequence[str] = ("Hello", " wor")
    error_type: str = "overloaded_error"
    message: str = "Overloaded"
    delay: float = 0.0


@dataclass(frozen=True)
class MidStreamDrop:
    """Stream ``chunks`` (``delay`` apart), then close the connection in the middle."""

    chunks: Sequence[str] = ("Hello", " wor")
    delay: float = 0.0


Scripted = Reply | StatusError | Stall | MidStreamError | MidStreamDrop


def rate_limited(retry_after: str | None = "0.01", message: str = "Rate limited") -> StatusError:
    """HTTP 429 ``rate_limit_error``, with a ``retry-after`` header (seconds) when given."""
    headers = {"retry-after": retry_after} if retry_after is not None else {}
    return StatusError(429, "rate_limit_error", message, headers)


def server_error(message: str = "Internal server error") -> StatusError:
    """HTTP 500 ``api_error``."""
    return StatusError(500, "api_error", message)


def overloaded(message: str = "Overloaded") -> StatusError:
    """HTTP 529 ``overloaded_error``."""
    return StatusError(529, "overloaded_error", message)


@dataclass
class RecordedRequest:
    """One request the fake received, and what became of its response."""

    body: Any
    headers: dict[str, str]
    #: What the fake answered from the script; ``None`` when it refused the request itself.
    response: Scripted | None = None
    #: The ``text_delta`` events sent.
    sent_chunks: int = 0
    #: The client went away before the response's end (a cancelled or closed stream).
    aborted: bool = False
    #: The fake is done with the request (answered, aborted or dropped).
    finished: bool = False

    @property
    def x_api_key(self) -> str | None:
        """The ``x-api-key`` header, as the real API documents it."""
        return self.headers.get("x-api-key")

    @property
    def api_key(self) -> str | None:
        """The key sent: ``x-api-key``, or else ``Authorization: Bearer <key>``.

        The API documents ``x-api-key``, which the 0.x SDKs send; anthropic 2.x sends the
        key as a bearer token.
        """
        if self.x_api_key:
            return self.x_api_key
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None

    @property
    def anthropic_version(self) -> str | None:
        return self.headers.get("anthropic-version")


class FakeAnthropic:
    """The script and the record of a fake Messages API; serve :meth:`app`.

    ``api_key``, when set, is the only key accepted (others get 401
    ``authentication_error``). ``default`` answers when the script is empty.
    """

    def __init__(self, *, api_key: str | None = None, default: Scripted | None = None) -> None:
        self.api_key = api_key
        self.default: Scripted = default if default is not None else Reply()
        self.requests: list[RecordedRequest] = []
        self._script: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def script(self, *responses: Scripted) -> FakeAnthropic:
        """Queue what the next valid requests get, in order."""
        with self._lock:
            self._script.extend(responses)
        return self

    def app(self) -> Starlette:
        return create_app(self)

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    def _next(self) -> Scripted:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def _record(self, record: RecordedRequest) -> int:
        with self._lock:
            self.requests.append(record)
            return next(self._ids)

    def _refusal(self, record: RecordedRequest) -> StatusError | None:
        """What the real API would answer to a malformed request, if it is one."""
        key = record.api_key
        if not key:
            return StatusError(401, "authentication_error", "x-api-key header is required")
        if self.api_key is not None and key != self.api_key:
            return StatusError(401, "authentication_error", "invalid x-api-key")
        if not record.anthropic_version:
            return StatusError(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        body = record.body
        if not isinstance(body, dict):
            return StatusError(400, "invalid_request_error", "the body must be a JSON object")
        if not isinstance(body.get("model"), str):
            return StatusError(400, "invalid_request_error", "model: Field required")
        max_tokens = body.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            return StatusError(400, "invalid_request_error", "max_tokens: Field required")
        temperature = body.get("temperature", 0)
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 1:
            return StatusError(400, "invalid_request_error", "temperature: must be from 0 to 1")
        if body.get("stream") is not True:
            return StatusError(400, "invalid_request_error", "this fake only streams")
        return _messages_problem(body.get("messages"))


def _messages_problem(messages: object) -> StatusError | None:
    if not isinstance(messages, list) or not messages:
        return StatusError(400, "invalid_request_error", "messages: Field required")
    expected = "user"
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "system":
            return StatusError(
                400,
                "invalid_request_error",
                'messages: Unexpected role "system". The Messages API accepts a top-level '
                '`system` parameter, not "system" as an input message role.',
            )
        if role != expected:
            return StatusError(
                400,
                "invalid_request_error",
                f"messages.{index}: roles must alternate between user and assistant, "
                "starting with user",
            )
        if not isinstance(message.get("content"), str | list):
            return StatusError(400, "invalid_request_error", f"messages.{index}.content: required")
        expected = "assistant" if role == "user" else "user"
    return None


def _error_response(error: StatusError, request_id: str) -> Response:
    body = {"type": "error", "error": {"type": error.error_type, "message": error.message}}
    headers = {"request-id": request_id, **error.headers}
    return JSONResponse(body, status_code=error.status, headers=headers)


def _sse(event: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class _ScriptedStream(Response):
    """Plays one scripted streaming response, watching for the client going away."""

    def __init__(
        self, scripted: Scripted, record: RecordedRequest, model: str, request_id: str
    ) -> None:
        super().__init__(
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "request-id": request_id},
        )
        self.scripted = scripted
        self.record = record
        self.model = model
        self.request_id = request_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gone = asyncio.Event()

        async def watch() -> None:
            # The body has been read: the next message is the disconnect (or, once the
            # response is complete, a disconnect straight away; that one is ignored).
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        try:
            await self._play(send, gone)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self.record.finished = True

    async def _client_left(self, gone: asyncio.Event, seconds: float = 0.0) -> bool:
        """Wait ``seconds`` unless the client leaves first; whether it has left."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), seconds)
        else:
            await asyncio.sleep(0)
        if gone.is_set():
            self.record.aborted = True
        return gone.is_set()

    async def _play(self, send: Send, gone: asyncio.Event) -> None:
        scripted = self.scripted
        if isinstance(scripted, Stall):
            if await self._client_left(gone, scripted.seconds):
                return
            scripted = scripted.then
        assert not isinstance(scripted, StatusError | Stall)

        async def emit(event: str, data: Mapping[str, Any]) -> None:
            await send({"type": "http.response.body", "body": _sse(event, data), "more_body": True})

        # Chunked, like the real API: no content-length (the base class set one for b"").
        headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        input_tokens = scripted.input_tokens if isinstance(scripted, Reply) else 10
        usage_in: UsageIn = scripted.usage_in if isinstance(scripted, Reply) else "message_start"
        at_start = 0 if usage_in == "message_delta" else input_tokens
        await emit(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": f"msg_{self.request_id}",
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": at_start, "output_tokens": 1},
                },
            },
        )
        await emit(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        if not isinstance(scripted, Reply) or scripted.ping:
            await emit("ping", {"type": "ping"})
        for number, chunk in enumerate(scripted.chunks):
            if await self._client_left(gone, scripted.delay if number else 0.0):
                return
            await emit(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": chunk},
                },
            )
            self.record.sent_chunks += 1
        if isinstance(scripted, MidStreamDrop):
            # Returning without ending the body makes uvicorn close the connection (it logs
            # "ASGI callable returned without completing response."): a dropped stream.
            return
        if isinstance(scripted, MidStreamError):
            error = {"type": scripted.error_type, "message": scripted.message}
            await emit("error", {"type": "error", "error": error})
        else:
            output_tokens = scripted.output_tokens
            if output_tokens is None:
                output_tokens = len(scripted.chunks)
            usage: dict[str, int] = {"output_tokens": output_tokens}
            if scripted.usage_in != "message_start":
                usage = {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    **usage,
                }
            await emit("content_block_stop", {"type": "content_block_stop", "index": 0})
            await emit(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": scripted.stop_reason, "stop_sequence": None},
                    "usage": usage,
                },
            )
            await emit("message_stop", {"type": "message_stop"})
        if await self._client_left(gone):
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def create_app(fake: FakeAnthropic) -> Starlette:
    """The fake Messages API as a Starlette app, answering from ``fake``'s script."""

    async def messages(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        record = RecordedRequest(
            body=body, headers={k.lower(): v for k, v in request.headers.items()}
        )
        request_id = f"req_fake_{fake._record(record)}"
        refusal = fake._refusal(record)
        if refusal is not None:
            record.finished = True
            return _error_response(refusal, request_id)
        scripted = fake._next()
        record.response = scripted
        if isinstance(scripted, StatusError):
            record.finished = True
            return _error_response(scripted, request_id)
        return _ScriptedStream(scripted, record, body["model"], request_id)

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])
