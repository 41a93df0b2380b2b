"""The ``[backends.NAME]`` options of the openai backend, checked once at start-up."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from chatbot.errors import ConfigError

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
#: Sent when ``base_url`` is set without ``api_key_env``: the SDK needs some key, and local
#: servers (Ollama, vLLM, llama.cpp, LM Studio) ignore it.
PLACEHOLDER_KEY = "no-key-required"

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

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
    first_token_timeout: float
    total_timeout: float
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


def _number(name: str, options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"[backends.{name}]: {key} must be a number of seconds > 0")
    return float(value)


def parse_options(
    name: str, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> OpenAIOptions:
    """Check every option of ``[backends.NAME]``; ``ConfigError`` says what to fix."""
    env = os.environ if environ is None else environ
    where = f"[backends.{name}]"
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(
            f"{where}: the openai backend has no option {unknown[0]!r}; it takes: "
            + ", ".join(OPTIONS)
        )

    model = options.get("model")
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(
            f'{where}: model is required: the model name to ask for, e.g. model = "gpt-4o-mini"'
        )

    raw_models = options.get("models", [model])
    if (
        not isinstance(raw_models, list | tuple)
        or not raw_models
        or not all(isinstance(m, str) and m.strip() for m in raw_models)
    ):
        raise ConfigError(f"{where}: models must be a non-empty list of model names")
    models = tuple(dict.fromkeys([model, *raw_models]))

    base_url = options.get("base_url")
    if base_url is not None and (
        not isinstance(base_url, str) or urlsplit(base_url).scheme not in ("http", "https")
    ):
        raise ConfigError(
            f"{where}: base_url must be an http:// or https:// URL, "
            'e.g. base_url = "http://localhost:11434/v1"'
        )

    api_key_env = options.get("api_key_env")
    if api_key_env is not None and (
        not isinstance(api_key_env, str) or not _ENV_NAME.fullmatch(api_key_env)
    ):
        raise ConfigError(
            f"{where}: api_key_env must be the name of an environment variable, "
            f'e.g. api_key_env = "{DEFAULT_KEY_ENV}"'
        )
    if base_url is not None and api_key_env is None:
        # A local server: no key needed, and OPENAI_API_KEY is never sent to another host.
        api_key = PLACEHOLDER_KEY
    else:
        variable = api_key_env or DEFAULT_KEY_ENV
        api_key = env.get(variable, "").strip()
        if not api_key:
            raise ConfigError(
                f"{where}: no API key: set the {variable} environment variable "
                f"(or api_key_env in {where}); .env is not read for vendor keys, export it in "
                "the server's environment"
            )

    system_prompt = options.get("system_prompt")
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise ConfigError(f"{where}: system_prompt must be a string")

    temperature = options.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0 <= temperature <= 2
    ):
        raise ConfigError(f"{where}: temperature must be a number from 0 to 2")

    max_tokens = options.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0
    ):
        raise ConfigError(f"{where}: max_tokens must be a whole number > 0")

    max_retries = options.get("max_retries", 2)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"{where}: max_retries must be a whole number >= 0")

    return OpenAIOptions(
        model=model,
        models=models,
        base_url=base_url,
        api_key_env=api_key_env,
        api_key=api_key,
        system_prompt=system_prompt or None,
        temperature=None if temperature is None else float(temperature),
        max_tokens=max_tokens,
        connect_timeout=_number(name, options, "connect_timeout", 10.0),
        first_token_timeout=_number(name, options, "first_token_timeout", 60.0),
        total_timeout=_number(name, options, "total_timeout", 600.0),
        max_retries=max_retries,
    )
