"""The ``[backends.NAME]`` options of the openai backend, checked once at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from chatbot.backends import Options

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
#: Sent when ``base_url`` is set without ``api_key_env``: the SDK needs some key, and local
#: servers (Ollama, vLLM, llama.cpp, LM Studio) ignore it.
PLACEHOLDER_KEY = "no-key-required"

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


@dataclass(frozen=True)
class OpenAIOptions:
    """The validated options; ``api_key`` is read from the environment, never the file."""

    model: str
    models: tuple[str, ...]
    base_url: str | None
    api_key_env: str | None
    api_key: str
    system_prompt: str | None
    temperature: float | None
    max_tokens: int | None
    connect_timeout: float
    max_retries: int

    def __repr__(self) -> str:
        # Never show the key, not even in a debugger or a log line.
        return (
            f"OpenAIOptions(model={self.model!r}, base_url={self.base_url!r}, "
            f"api_key_env={self.api_key_env!r})"
        )

    @property
    def upstream(self) -> str:
        """How error messages name the server: ``OpenAI``, or the host of ``base_url``."""
        if self.base_url is None:
            return "OpenAI"
        parts = urlsplit(self.base_url)
        host = parts.hostname or "?"
        # Only host and port: a URL may carry credentials or a query string.
        return f"the server at {host}:{parts.port}" if parts.port else f"the server at {host}"


def parse_options(
    name: str, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> OpenAIOptions:
    """Check every option of ``[backends.NAME]``; ``ConfigError`` says what to fix."""
    read = Options(name, options, kind="openai", known=OPTIONS)
    model = read.string("model")
    if model is None:
        raise read.fail(
            'the openai backend needs a model: the name to ask for, e.g. model = "gpt-4o-mini"'
        )
    models = tuple(dict.fromkeys([model, *read.strings("models", [model])]))

    base_url = read.string("base_url")
    if base_url is not None and urlsplit(base_url).scheme not in ("http", "https"):
        raise read.fail(
            "base_url must be an http:// or https:// URL, "
            'e.g. base_url = "http://localhost:11434/v1"'
        )
    api_key_env = read.string("api_key_env")
    if base_url is not None and api_key_env is None:
        # A local server: no key needed, and OPENAI_API_KEY is never sent to another host.
        api_key = PLACEHOLDER_KEY
    else:
        api_key, api_key_env = read.api_key(DEFAULT_KEY_ENV, vendor="OpenAI", environ=environ)

    max_tokens = read.integer("max_tokens", None, low=1)
    max_retries = read.integer("max_retries", 2, low=0)
    assert max_retries is not None
    return OpenAIOptions(
        model=model,
        models=models,
        base_url=base_url,
        api_key_env=api_key_env,
        api_key=api_key,
        system_prompt=read.string("system_prompt", empty=True) or None,
        temperature=read.number("temperature", None, low=0, high=2),
        max_tokens=max_tokens,
        connect_timeout=read.seconds("connect_timeout", 10.0),
        max_retries=max_retries,
    )
