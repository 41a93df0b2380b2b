"""The ``anthropic`` backend: Claude through the Messages API, streamed with the official SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anthropic
from anthropic.types import (
    MessageParam,
    RawContentBlockDeltaEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    RawMessageStreamEvent,
    TextDelta,
)

from chatbot.backends import Backend, ChatMessage, ChatRequest, Options, Usage
from chatbot.errors import BackendError
from chatbot_anthropic import _errors

DEFAULT_API_KEY_ENV = "ANTHROPIC_API_KEY"
DEFAULT_MAX_TOKENS = 4096

#: The backend's own options. ``first_token_timeout`` and ``total_timeout`` are the
#: server's: it reads them from the table and never passes them on.
OPTIONS = (
    "model",
    "models",
    "base_url",
    "api_key_env",
    "system_prompt",
    "temperature",
    "max_tokens",
    "connect_timeout",
    "max_retries",
)


def alternate(messages: Sequence[ChatMessage]) -> list[MessageParam]:
    """The turns as the Messages API accepts them: starting with the user's, alternating.

    Leading assistant turns are dropped and consecutive turns of one role are joined with
    a blank line, as Anthropic rejects a conversation that does not alternate.
    """
    turns: list[tuple[str, list[str]]] = []
    for message in messages:
        if not message.content:
            continue
        if not turns and message.role != "user":
            continue
        if turns and turns[-1][0] == message.role:
            turns[-1][1].append(message.content)
        else:
            turns.append((message.role, [message.content]))
    result: list[MessageParam] = []
    for role, parts in turns:
        content = "\n\n".join(parts)
        if role == "user":
            result.append({"role": "user", "content": content})
        else:
            result.append({"role": "assistant", "content": content})
    return result


class _Usage:
    """The token counts of a streamed reply, from whichever events tell them.

    ``message_start`` carries the message's usage so far; the usage of ``message_delta`` is
    cumulative (the SDK's ``MessageDeltaUsage``), and today also repeats ``input_tokens``.
    Some servers speaking the API (the LiteLLM proxy) send ``input_tokens: 0`` at the start
    and the real count only in ``message_delta``. So the latest count that is told and not
    zero wins.
    """

    def __init__(self) -> None:
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    @property
    def told(self) -> bool:
        return self.input_tokens is not None or self.output_tokens is not None

    def read(self, event: RawMessageStreamEvent) -> None:
        if isinstance(event, RawMessageStartEvent):
            self._take(event.message.usage.input_tokens, event.message.usage.output_tokens)
        elif isinstance(event, RawMessageDeltaEvent):
            self._take(event.usage.input_tokens, event.usage.output_tokens)

    def _take(self, input_tokens: int | None, output_tokens: int | None) -> None:
        if input_tokens is not None and (input_tokens or self.input_tokens is None):
            self.input_tokens = input_tokens
        if output_tokens is not None and (output_tokens or self.output_tokens is None):
            self.output_tokens = output_tokens


class AnthropicBackend(Backend):
    """Answers with a Claude model through Anthropic's Messages API, streaming the reply.

    Options (the ``[backends.NAME]`` table):

    ``model`` (required)
        The default model, for example ``"claude-sonnet-4-5"``.
    ``models``
        The models a session may pick; default ``[model]``. ``model`` is added if missing.
    ``base_url``
        Another endpoint that speaks the Messages API (a proxy, a gateway, a test server).
    ``api_key_env``
        The environment variable holding the key; default ``ANTHROPIC_API_KEY``. The server
        refuses to start when it is unset or empty.
    ``system_prompt``
        Used when a request carries none. In a ``chatbot.toml`` table the server reads
        ``system_prompt`` itself (the session's, else this, else ``CHATBOT_SYSTEM_PROMPT``)
        and passes the result in every request; this option serves direct use of the class.
    ``temperature``
        0 to 1; when unset none is sent and the model's default applies. Recent models
        reject sampling options: leave it unset for them.
    ``max_tokens``
        The longest reply, in tokens; default 4096 (the API requires a value).
    ``connect_timeout``
        Seconds to connect (10). The server enforces ``first_token_timeout`` and
        ``total_timeout`` (keys of the same table) around the reply, the SDK's retries
        included; the SDK's own timeout is ``total_timeout``.
    ``max_retries``
        How often the SDK retries a failed request (connection errors, 408, 409, 429, 5xx)
        before any text arrived; default 2. A reply that has started is never retried.
    """

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        read = Options(name, options, kind="anthropic", known=OPTIONS)
        model = read.string("model")
        if model is None:
            raise read.fail(
                'the anthropic backend needs a model, for example model = "claude-sonnet-4-5"'
            )
        self.model = model
        models = read.strings("models", [model])
        if model not in models:
            models.insert(0, model)
        self._models = models
        self.base_url = read.string("base_url")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise read.fail("base_url must be an http:// or https:// URL")
        self.system_prompt = read.string("system_prompt", empty=True) or None
        self.temperature = read.number("temperature", None, low=0, high=1)
        max_tokens = read.integer("max_tokens", DEFAULT_MAX_TOKENS, low=1)
        max_retries = read.integer("max_retries", 2, low=0)
        assert max_tokens is not None and max_retries is not None
        self.max_tokens = max_tokens
        self.max_retries = max_retries
        self.connect_timeout = read.seconds("connect_timeout", 10.0)
        self._api_key, self.api_key_env = read.api_key(DEFAULT_API_KEY_ENV, vendor="Anthropic")
        self._client: anthropic.AsyncAnthropic | None = None

    def __repr__(self) -> str:
        return f"AnthropicBackend(name={self.name!r}, model={self.model!r})"

    def available_models(self) -> list[str]:
        return list(self._models)

    async def start(self) -> None:
        if self._client is not None:
            return
        self._client = anthropic.AsyncAnthropic(
            api_key=self._api_key,
            base_url=self.base_url,
            timeout=anthropic.Timeout(self.total_timeout, connect=self.connect_timeout),
            max_retries=self.max_retries,
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def _open(
        self, client: anthropic.AsyncAnthropic, request: ChatRequest, model: str
    ) -> anthropic.AsyncStream[RawMessageStreamEvent]:
        messages = alternate(request.messages)
        if not messages:
            raise BackendError("there is no user message to answer", kind="backend_error")
        extra: dict[str, Any] = {}
        system = request.system_prompt or self.system_prompt
        if system:
            extra["system"] = system
        if self.temperature is not None:
            # anthropic 1.0 dropped ``temperature`` from the method's arguments; the API
            # still takes it (on the models that accept sampling options) in the body.
            extra["extra_body"] = {"temperature": self.temperature}
        stream: anthropic.AsyncStream[RawMessageStreamEvent] = await client.messages.create(
            model=model,
            max_tokens=self.max_tokens,
            messages=messages,
            stream=True,
            **extra,
        )
        return stream

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        client = self._client
        if client is None:
            raise BackendError(f"the backend {self.name!r} was not started", kind="backend_error")
        model = request.model or self.model
        complete = False
        usage = _Usage()
        stream: anthropic.AsyncStream[RawMessageStreamEvent] | None = None
        try:
            try:
                # The SDK's retries happen in here, before any event arrived.
                stream = await self._open(client, request, model)
            except anthropic.AnthropicError as exc:
                raise _errors.from_request_error(
                    exc, backend=self.name, key_env=self.api_key_env, model=model
                ) from None
            while True:
                try:
                    event = await anext(stream)
                except StopAsyncIteration:
                    break
                except anthropic.APIStatusError as exc:
                    raise _errors.from_stream_event(exc, backend=self.name) from None
                except anthropic.AnthropicError as exc:
                    raise _errors.from_request_error(
                        exc, backend=self.name, key_env=self.api_key_env, model=model
                    ) from None
                except _errors.HTTP_ERRORS as exc:
                    raise _errors.from_transport_error(exc, backend=self.name) from None
                if isinstance(event, RawContentBlockDeltaEvent):
                    if isinstance(event.delta, TextDelta) and event.delta.text:
                        yield event.delta.text
                elif isinstance(event, RawMessageStopEvent):
                    complete = True
                else:
                    usage.read(event)
            if not complete:
                # The body ended cleanly but early: a proxy or the network cut the reply.
                raise _errors.incomplete(backend=self.name)
        finally:
            # Closing the response aborts the upstream request when the reply is cut short:
            # an error, the server's deadline, or the caller closing or cancelling this
            # generator.
            if stream is not None:
                await stream.close()
        if usage.told:
            yield Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
