"""The backend class: streaming chat completions through ``openai.AsyncOpenAI``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from chatbot.backends import Backend, ChatRequest, Usage, logger_for
from chatbot_openai.errors import ErrorMapper, document_type, is_transport_error
from chatbot_openai.options import OpenAIOptions, parse_options

logger = logger_for("openai")
#: Bytes of a document answering a streaming request that are read to find its error.
_DOCUMENT_LIMIT = 65_536


def _content(chunk: ChatCompletionChunk) -> str:
    # The usage chunk has no choices; some servers send ``null`` instead of ``[]``.
    if not chunk.choices:
        return ""
    return chunk.choices[0].delta.content or ""


async def _read_json(response: Any) -> object:
    """The start of a response's body as JSON; ``None`` when it cannot be read as such."""
    data = b""
    try:
        async for part in response.aiter_bytes():
            data += part
            if len(data) >= _DOCUMENT_LIMIT:
                return None
        return json.loads(data)
    except Exception as exc:
        # Not JSON, or the connection broke: the caller reports the content type alone.
        if isinstance(exc, ValueError) or is_transport_error(exc):
            return None
        raise


class OpenAIBackend(Backend):
    """OpenAI's chat completions API, or any server that speaks it (``base_url``).

    The options of ``[backends.NAME]``:

    ``model`` (required)
        the model to ask for, e.g. ``"gpt-4o-mini"``.
    ``models``
        the model names a session may choose; ``model`` is always one of them.
    ``base_url``
        another server speaking the same API: Ollama (``http://localhost:11434/v1``), vLLM,
        llama.cpp, LM Studio or LiteLLM. It then needs no key unless ``api_key_env`` is set.
    ``api_key_env``
        the environment variable holding the key, default ``OPENAI_API_KEY``.
    ``system_prompt``
        used when a request carries none. In a ``chatbot.toml`` table the server reads
        ``system_prompt`` itself (the session's, else this, else ``CHATBOT_SYSTEM_PROMPT``)
        and passes the result in every request; this option serves direct use of the class.
    ``temperature`` (0 to 2), ``max_tokens`` (> 0)
        sent only when set.
    ``connect_timeout`` (10 s)
        to connect. The server enforces ``first_token_timeout`` and ``total_timeout`` (keys
        of the same table) around the reply; the SDK's own timeout is ``total_timeout``.
    ``max_retries`` (2)
        the SDK's retries of a failed request (429, 5xx, connection errors) before the
        reply starts; a reply that breaks off is never retried.
    """

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        self.config: OpenAIOptions = parse_options(name, options)
        self._errors = ErrorMapper(name, self.config)
        self._client: openai.AsyncOpenAI | None = None

    @property
    def default_model(self) -> str:
        return self.config.model

    def available_models(self) -> list[str]:
        return list(self.config.models)

    async def start(self) -> None:
        if self._client is not None:
            return
        config = self.config
        self._client = openai.AsyncOpenAI(
            api_key=config.api_key,
            base_url=config.base_url,
            timeout=openai.Timeout(self.total_timeout, connect=config.connect_timeout),
            max_retries=config.max_retries,
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _messages(self, request: ChatRequest) -> list[ChatCompletionMessageParam]:
        messages: list[ChatCompletionMessageParam] = []
        system_prompt = request.system_prompt or self.config.system_prompt
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        for message in request.messages:
            if message.role == "assistant":
                messages.append({"role": "assistant", "content": message.content})
            else:
                messages.append({"role": "user", "content": message.content})
        return messages

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        client = self._client
        if client is None:
            raise self._errors.not_started()
        config = self.config
        model = request.model or config.model
        optional: dict[str, Any] = {}
        if config.temperature is not None:
            optional["temperature"] = config.temperature
        if config.max_tokens is not None:
            optional["max_tokens"] = config.max_tokens

        try:
            stream = await client.chat.completions.create(
                model=model,
                messages=self._messages(request),
                stream=True,
                stream_options={"include_usage": True},
                **optional,
            )
        except openai.APIError as exc:
            self._log(exc)
            raise self._errors.api(exc, model, streaming=False, sent_text=False) from None

        sent_text = False
        usage: Usage | None = None
        # ``async with`` closes the response however this generator ends: exhausted, an
        # error, ``aclose()`` at the ``yield`` or a cancelled task. Closing a response that
        # was not read to the end closes its connection, which aborts the upstream request.
        async with stream:
            media_type = document_type(stream.response.headers.get("content-type"))
            if media_type is not None:
                # A server that does not stream answers with the whole completion (or an
                # error) as JSON; the SDK would read no event in it, and no text.
                logger.warning(
                    "backend %r: the response is %s, not a stream of events", self.name, media_type
                )
                body = await _read_json(stream.response)
                raise self._errors.not_a_stream(media_type, body)
            while True:
                try:
                    chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                except openai.APIError as exc:
                    self._log(exc)
                    raise self._errors.api(
                        exc, model, streaming=True, sent_text=sent_text
                    ) from None
                except Exception as exc:
                    if not is_transport_error(exc):
                        raise
                    logger.warning(
                        "backend %r: the stream broke off: %s", self.name, type(exc).__name__
                    )
                    raise self._errors.dropped(sent_text=sent_text) from None
                text = _content(chunk)
                if text:
                    sent_text = True
                    yield text
                if chunk.usage is not None:
                    usage = Usage(
                        input_tokens=chunk.usage.prompt_tokens,
                        output_tokens=chunk.usage.completion_tokens,
                    )
        if usage is not None:
            yield usage

    def _log(self, exc: openai.APIError) -> None:
        # For the operator: the class, status and request id, never the body or headers.
        status = getattr(exc, "status_code", None)
        request_id = getattr(exc, "request_id", None)
        logger.warning(
            "backend %r: %s%s%s",
            self.name,
            type(exc).__name__,
            f" HTTP {status}" if status is not None else "",
            f" request id {request_id}" if request_id else "",
        )
