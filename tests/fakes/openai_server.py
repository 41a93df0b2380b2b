"""A local stand-in for OpenAI's ``POST /v1/chat/completions``, scripted per test.

It answers ``stream: true`` requests in OpenAI's server-sent-event format: a
``chat.completion.chunk`` with the assistant role, one chunk per piece of text in
``choices[0].delta.content``, a chunk with ``finish_reason: "stop"``, the usage chunk
(``choices: []``) when ``stream_options.include_usage`` is true, then ``data: [DONE]``::

    fake = FakeOpenAI()
    fake.reply(["Hel", "lo"], delay=0.1)      # the next request gets this reply
    fake.rate_limit(retry_after=7, times=3)   # the three after it a 429
    server = LiveServer(fake.app).start()     # the SDK's base_url: server.url + "/v1"
    ...
    fake.requests[0].body["model"], fake.requests[0].authorization
    fake.requests[0].wait_finished() == "aborted"

Errors have OpenAI's body ``{"error": {"message", "type", "param", "code"}}``. OpenAI sends
``code`` as a string or ``null``; servers speaking its API also send a number or a digit
string (LiteLLM: ``"429"``, vLLM: ``400``), and a :class:`Failure` sends what it is given.

Each request takes the next scripted response; with none left it gets :attr:`FakeOpenAI.default`.
Every request is recorded with its outcome: ``completed``, ``aborted`` (the client went away
before the end: the ASGI ``http.disconnect`` came first), ``dropped`` (the script closed the
connection mid-reply) or ``rejected`` (an error status the fake chose itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from tests.conftest import wait_for

Outcome = Literal["pending", "completed", "aborted", "dropped", "rejected"]


@dataclass(frozen=True)
class Reply:
    """A normal streamed reply, and how to misbehave while sending it."""

    chunks: tuple[str, ...]
    #: Seconds between two text chunks.
    delay: float = 0.0
    #: Seconds after the headers and the role chunk, before the first text chunk.
    first_delay: float = 0.0
    #: Seconds before the response starts: not one byte, not even the status line.
    stall: float = 0.0
    #: Close the connection after this many text chunks, without the end of the body.
    drop_after: int | None = None
    #: ``(prompt_tokens, completion_tokens)``; counted in words when not given.
    usage: tuple[int, int] | None = None
    #: After the text chunks, this error as an event (``data: {"error": {...}}``) instead
    #: of the end of the reply, as OpenAI sends an error that happens mid-stream.
    error: Failure | None = None
    #: Answer a streaming request with one ``chat.completion`` object
    #: (``application/json``), as a server that cannot stream does.
    whole: bool = False


@dataclass(frozen=True)
class Failure:
    """An error status with OpenAI's JSON error body (with status 200: an error body that a
    server sends instead of a stream)."""

    status: int
    message: str
    type: str | None
    code: str | int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    stall: float = 0.0


Script = Reply | Failure


@dataclass
class RecordedRequest:
    """One request as the fake received it, and how its response ended."""

    body: dict[str, Any]
    authorization: str | None
    headers: dict[str, str]
    outcome: Outcome = "pending"
    #: Text chunks sent before the response ended.
    chunks_sent: int = 0
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def aborted(self) -> bool:
        return self.outcome == "aborted"

    def finish(self, outcome: Outcome) -> None:
        self.outcome = outcome
        self.finished.set()

    def wait_finished(self, timeout: float = 10) -> Outcome:
        """Wait until the response ended (or the client went away); return the outcome."""
        if not self.finished.wait(timeout):
            raise AssertionError(f"the response is still running after {timeout} s")
        return self.outcome


class FakeOpenAI:
    """The script of responses, the record of requests, and the app that serves them."""

    default = Reply(("Hello", " from", " the", " fake", "."))

    def __init__(self, *, api_key: str | None = None, models: Iterable[str] | None = None):
        #: When set, a request without ``Authorization: Bearer <api_key>`` gets a 401.
        self.api_key = api_key
        #: When set, a request for another model gets a 404 ``model_not_found``.
        self.models = frozenset(models) if models is not None else None
        self._script: deque[Script] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.app = create_app(self)
        #: Where the fake is served, ending in ``/v1``; set by whoever starts it.
        self.base_url: str | None = None

    # -- scripting -------------------------------------------------------------------

    def push(self, response: Script, *, times: int = 1) -> None:
        with self._lock:
            self._script.extend([response] * times)

    def reply(self, chunks: Iterable[str], **how: Any) -> None:
        """The next request gets ``chunks``; ``how`` takes :class:`Reply`'s other fields."""
        self.push(Reply(tuple(chunks), **how))

    def stall(self, seconds: float, chunks: Iterable[str] = ("late",)) -> None:
        self.push(Reply(tuple(chunks), stall=seconds))

    def drop(self, chunks: Iterable[str], *, after: int, delay: float = 0.0) -> None:
        self.push(Reply(tuple(chunks), drop_after=after, delay=delay))

    def rate_limit(
        self, *, retry_after: int | None = 1, retry_after_ms: int | None = None, times: int = 1
    ) -> None:
        headers = {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{retry_after or 1}s",
        }
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        message = (
            "Rate limit reached for requests. Limit: 500 / min. "
            f"Please try again in {retry_after or 1}s."
        )
        self.push(
            Failure(429, message, "requests", "rate_limit_exceeded", headers=headers),
            times=times,
        )

    def server_error(self, *, status: int = 500, times: int = 1) -> None:
        message = "The server had an error while processing your request. Sorry about that!"
        self.push(Failure(status, message, "server_error"), times=times)

    # -- what happened ---------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, count: int, timeout: float = 10) -> list[RecordedRequest]:
        """Wait until ``count`` requests came; all the requests."""
        wait_for(lambda: len(self.requests) >= count, f"{count} requests to the fake", timeout)
        return self.requests

    # -- used by the app -------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next(self) -> Script:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def _request_id(self) -> str:
        return f"req_fake{next(self._ids):06d}"


def _error_body(
    message: str, type_: str | None, code: str | int | None, param: str | None = None
) -> bytes:
    error = {"message": message, "type": type_, "param": param, "code": code}
    return json.dumps({"error": error}).encode()


def _words(body: Mapping[str, Any]) -> int:
    messages = body.get("messages") or []
    return sum(
        len(m["content"].split())
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), str)
    )


async def _pause(seconds: float, disconnected: asyncio.Event) -> bool:
    """Sleep, waking early when the client goes away; True when it went away."""
    if seconds > 0 and not disconnected.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await disconnected.wait()
    return disconnected.is_set()


class ScriptedResponse(Response):
    """Plays one :data:`Script` over raw ASGI, watching for the client going away."""

    def __init__(
        self,
        fake: FakeOpenAI,
        record: RecordedRequest,
        script: Script,
        body: Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.fake = fake
        self.record = record
        self.script = script
        self.request_id = fake._request_id()
        self.model = str(body.get("model"))
        self.streaming = body.get("stream") is True
        options = body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.prompt_tokens = _words(body)
        self.completion_id = f"chatcmpl-fake{self.request_id[-6:]}"
        self.created = int(time.time())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        disconnected = asyncio.Event()

        async def watch() -> None:
            # The request body is read already: the next message is the disconnect.
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        watcher = asyncio.create_task(watch())
        outcome: Outcome = "dropped"
        try:
            outcome = await self._play(send, disconnected)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            self.record.finish(outcome)

    def _headers(
        self, content_type: str, extra: Mapping[str, str] | None = None
    ) -> list[tuple[bytes, bytes]]:
        headers = {
            "content-type": content_type,
            "x-request-id": self.request_id,
            "openai-version": "2020-10-01",
            "openai-processing-ms": "7",
            **(extra or {}),
        }
        return [(k.encode(), v.encode()) for k, v in headers.items()]

    async def _play(self, send: Send, disconnected: asyncio.Event) -> Outcome:
        script = self.script
        if await _pause(script.stall, disconnected):
            return "aborted"
        if isinstance(script, Failure):
            body = _error_body(script.message, script.type, script.code)
            await send(
                {
                    "type": "http.response.start",
                    "status": script.status,
                    "headers": self._headers("application/json", script.headers),
                }
            )
            await send({"type": "http.response.body", "body": body})
            return "completed"
        if not self.streaming or script.whole:
            return await self._play_whole(send, script)

        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": self._headers("text/event-stream; charset=utf-8"),
            }
        )
        await self._event(send, {"role": "assistant", "content": "", "refusal": None})
        if await _pause(script.first_delay, disconnected):
            return "aborted"
        for index, text in enumerate(script.chunks):
            if index and await _pause(script.delay, disconnected):
                return "aborted"
            if index == script.drop_after:
                # Returning before the body's end: uvicorn closes the connection.
                return "dropped"
            await self._event(send, {"content": text})
            self.record.chunks_sent += 1
            if disconnected.is_set():
                return "aborted"
        if script.drop_after is not None:
            return "dropped"
        if script.error is not None:
            failure = script.error
            await self._send_data(
                send, _error_body(failure.message, failure.type, failure.code).decode()
            )
            await self._send_data(send, "[DONE]", last=True)
            return "completed"
        await self._event(send, {}, finish_reason="stop")
        if self.include_usage:
            usage_chunk = {**self._chunk_base(), "choices": [], "usage": self._usage(script)}
            await self._send_data(send, json.dumps(usage_chunk))
        await self._send_data(send, "[DONE]", last=True)
        return "completed"

    async def _play_whole(self, send: Send, script: Reply) -> Outcome:
        """A ``stream: false`` request: one ``chat.completion`` object."""
        completion = {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(script.chunks),
                        "refusal": None,
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(script),
            "system_fingerprint": "fp_fake",
        }
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": self._headers("application/json"),
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(completion).encode()})
        return "completed"

    def _chunk_base(self) -> dict[str, Any]:
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _usage(self, script: Reply) -> dict[str, Any]:
        prompt, completion = script.usage or (self.prompt_tokens, len(script.chunks))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    async def _event(
        self, send: Send, delta: dict[str, Any], finish_reason: str | None = None
    ) -> None:
        chunk = {
            **self._chunk_base(),
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self.include_usage:
            chunk["usage"] = None
        await self._send_data(send, json.dumps(chunk))

    async def _send_data(self, send: Send, data: str, *, last: bool = False) -> None:
        message: Message = {
            "type": "http.response.body",
            "body": f"data: {data}\n\n".encode(),
            "more_body": not last,
        }
        await send(message)


def create_app(fake: FakeOpenAI) -> Starlette:
    """The fake's ASGI app: ``POST /v1/chat/completions`` and ``GET /v1/models``."""

    async def chat_completions(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        record = RecordedRequest(
            body=body if isinstance(body, dict) else {},
            authorization=request.headers.get("authorization"),
            headers=dict(request.headers),
        )
        fake._record(record)

        def reject(
            status: int, message: str, type_: str, code: str | None, param: str | None = None
        ) -> Response:
            record.finish("rejected")
            return Response(
                _error_body(message, type_, code, param),
                status_code=status,
                media_type="application/json",
                headers={"x-request-id": fake._request_id()},
            )

        if fake.api_key is not None and record.authorization != f"Bearer {fake.api_key}":
            given = (record.authorization or "").removeprefix("Bearer ")
            # OpenAI shows part of the key it got; the fake shows all of it, so that a test
            # proves the backend never repeats an upstream message.
            return reject(
                401,
                f"Incorrect API key provided: {given}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                "invalid_api_key",
            )
        if not isinstance(body, dict):
            return reject(
                400,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                None,
            )
        model = body.get("model")
        messages = body.get("messages")
        if not isinstance(model, str) or not model:
            return reject(
                400, "you must provide a model parameter", "invalid_request_error", None, "model"
            )
        if not isinstance(messages, list) or not messages:
            return reject(
                400,
                "[] is too short - 'messages'",
                "invalid_request_error",
                None,
                "messages",
            )
        if fake.models is not None and model not in fake.models:
            return reject(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                "invalid_request_error",
                "model_not_found",
            )
        return ScriptedResponse(fake, record, fake._next(), body)

    async def list_models(request: Request) -> Response:
        names = sorted(fake.models) if fake.models is not None else ["gpt-fake"]
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "fake"}
                    for name in names
                ],
            }
        )

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
        ]
    )
