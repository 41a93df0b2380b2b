"""The ``anthropic`` backend: Claude through the Messages API, streamed with the official SDK."""

from __future__ import annotations

import asyncio
import math
import os
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

from chatbot.backends import Backend, ChatMessage, ChatRequest, Usage
from chatbot.errors import BackendError, ConfigError
from chatbot_anthropic import _errors

DEFAULT_API_KEY_ENV = "ANTHROPIC_API_KEY"
DEFAULT_MAX_TOKENS = 4096

OPTIONS = (
    "model",
    "models",
    "base_url",
    "api_key_env",
    "system_prompt",
    "temperature",
    "max_tokens",
    "connect_timeout",
    "first_token_timeout",
    "total_timeout",
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


class _Options:
    """Reads and checks ``[backends.NAME]``, naming the table in every complaint."""

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        self.options = options
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(
                f"[backends.{name}]: the anthropic backend has no option {unknown[0]!r}; "
                f"it takes: {', '.join(OPTIONS)}"
            )

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"[backends.{self.name}]: {message}")

    def string(self, key: str, default: str | None = None, *, empty: bool = False) -> str | None:
        value = self.options.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or (not empty and not value.strip()):
            raise self.fail(f"{key} must be a non-empty string")
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self.options.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            raise self.fail(f"{key} must be a number of seconds > 0")
        return float(value)

    def integer(self, key: str, default: int, *, low: int) -> int:
        value = self.options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(f"{key} must be a whole number >= {low}")
        return value


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
    ``connect_timeout``, ``first_token_timeout``, ``total_timeout``
        Seconds to connect (10), until the first text of the reply (60) and for the whole
        reply (600). The last two fail the reply with ``backend_timeout``; the SDK's retries
        count against both.
    ``max_retries``
        How often the SDK retries a failed request (connection errors, 408, 409, 429, 5xx)
        before any text arrived; default 2. A reply that has started is never retried.
    """

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        read = _Options(name, options)
        model = read.string("model")
        if model is None:
            raise read.fail(
                'the anthropic backend needs a model, for example model = "claude-sonnet-4-5"'
            )
        self.model = model
        raw_models = options.get("models", [model])
        if (
            not isinstance(raw_models, list | tuple)
            or not raw_models
            or not all(isinstance(m, str) and m.strip() for m in raw_models)
        ):
            raise read.fail("models must be a non-empty list of model names")
        models = [str(m) for m in raw_models]
        if model not in models:
            models.insert(0, model)
        self._models = models
        self.base_url = read.string("base_url")
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise read.fail("base_url must be an http:// or https:// URL")
        key_env = read.string("api_key_env", DEFAULT_API_KEY_ENV)
        assert key_env is not None
        self.api_key_env = key_env
        self.system_prompt = read.string("system_prompt", empty=True) or None
        temperature = options.get("temperature")
        if temperature is not None and (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not 0 <= temperature <= 1
        ):
            raise read.fail("temperature must be a number between 0 and 1")
        self.temperature = None if temperature is None else float(temperature)
        self.max_tokens = read.integer("max_tokens", DEFAULT_MAX_TOKENS, low=1)
        self.connect_timeout = read.seconds("connect_timeout", 10.0)
        self.first_token_timeout = read.seconds("first_token_timeout", 60.0)
        self.total_timeout = read.seconds("total_timeout", 600.0)
        self.max_retries = read.integer("max_retries", 2, low=0)
        api_key = os.environ.get(key_env, "").strip()
        if not api_key:
            raise ConfigError(
                f"the {name!r} backend has no Anthropic API key: set the {key_env} environment "
                f"variable (or api_key_env in [backends.{name}]); .env is not read for vendor "
                "keys, export it in the server's environment"
            )
        self._api_key = api_key
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

    def _timeout(
        self, got_text: bool, first_deadline: float, total_deadline: float
    ) -> BackendError:
        if not got_text and first_deadline < total_deadline:
            message = (
                f"Anthropic sent no text within {self.first_token_timeout:g} s "
                "(first_token_timeout)"
            )
        else:
            message = f"the reply took longer than {self.total_timeout:g} s (total_timeout)"
        return BackendError(message, kind="backend_timeout", retryable=True)

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        client = self._client
        if client is None:
            raise BackendError(f"the backend {self.name!r} was not started", kind="backend_error")
        model = request.model or self.model
        loop = asyncio.get_running_loop()
        started = loop.time()
        total_deadline = started + self.total_timeout
        first_deadline = min(started + self.first_token_timeout, total_deadline)
        deadline = first_deadline
        got_text = False
        complete = False
        input_tokens: int | None = None
        output_tokens: int | None = None
        stream: anthropic.AsyncStream[RawMessageStreamEvent] | None = None
        try:
            try:
                # The SDK's retries happen in here, before any event arrived.
                async with asyncio.timeout_at(deadline):
                    stream = await self._open(client, request, model)
            except TimeoutError:
                raise self._timeout(got_text, first_deadline, total_deadline) from None
            except anthropic.AnthropicError as exc:
                raise _errors.from_request_error(
                    exc, backend=self.name, key_env=self.api_key_env, model=model
                ) from None
            while True:
                # Each read has its own deadline; the yield below is outside of it, so the
                # time the consumer takes never cancels the consumer itself.
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await stream.__anext__()
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise self._timeout(got_text, first_deadline, total_deadline) from None
                except anthropic.APIStatusError as exc:
                    raise _errors.from_stream_event(exc, backend=self.name) from None
                except anthropic.AnthropicError as exc:
                    raise _errors.from_request_error(
                        exc, backend=self.name, key_env=self.api_key_env, model=model
                    ) from None
                except _errors.HTTP_ERRORS as exc:
                    raise _errors.from_transport_error(exc, backend=self.name) from None
                if isinstance(event, RawMessageStartEvent):
                    input_tokens = event.message.usage.input_tokens
                elif isinstance(event, RawContentBlockDeltaEvent):
                    if isinstance(event.delta, TextDelta) and event.delta.text:
                        if not got_text:
                            got_text = True
                            deadline = total_deadline
                        yield event.delta.text
                elif isinstance(event, RawMessageDeltaEvent):
                    output_tokens = event.usage.output_tokens
                elif isinstance(event, RawMessageStopEvent):
                    complete = True
            if not complete:
                # The body ended cleanly but early: a proxy or the network cut the reply.
                raise _errors.incomplete(backend=self.name)
        finally:
            # Closing the response aborts the upstream request when the reply is cut short:
            # an error, a timeout, or the caller closing or cancelling this generator.
            if stream is not None:
                await stream.close()
        if input_tokens is not None or output_tokens is not None:
            yield Usage(input_tokens=input_tokens, output_tokens=output_tokens)
