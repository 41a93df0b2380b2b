"""The plugin API: what a model backend implements and the helpers it may use.

A backend is a class registered in the ``chatbot.backends`` entry-point group, the built-in
``echo`` exactly like a third party's::

    [options.entry_points]
    chatbot.backends =
        mybackend = mypackage:MyBackend

It receives its own options from the TOML file (read them with :class:`Options`, its key
with :meth:`Options.api_key`) and implements one streaming method, :meth:`Backend.stream`,
that yields text chunks and may yield a :class:`Usage` last. The server, not the backend,
enforces ``first_token_timeout`` and ``total_timeout`` around that stream. A backend logs
under ``chatbot.backends.<type>`` (:func:`logger_for`), where the server's redaction filter
sees every record.

This module imports nothing of the server but its errors: a plugin depends on this file
alone.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar, Literal

from chatbot.errors import ConfigError

ENTRY_POINT_GROUP = "chatbot.backends"
#: Seconds a backend may take to send the first text of a reply, and the whole reply; the
#: server enforces both (``first_token_timeout`` and ``total_timeout`` in the backend's table).
DEFAULT_FIRST_TOKEN_TIMEOUT = 60.0
DEFAULT_TOTAL_TIMEOUT = 600.0

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class ChatMessage:
    """One turn of the conversation as a backend sees it."""

    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """What a backend is asked to answer: the turns, oldest first, ending with the user's."""

    messages: Sequence[ChatMessage]
    model: str | None = None
    system_prompt: str | None = None


@dataclass(frozen=True)
class Usage:
    """Token counts a backend reports after its last chunk, when the vendor tells them."""

    input_tokens: int | None = None
    output_tokens: int | None = None

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if v is not None}


class Backend:
    """Base class of every backend; subclasses override :meth:`stream`."""

    #: The models this backend serves; the first one is the default. Empty: any model.
    models: ClassVar[Sequence[str]] = ()

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        self.options = dict(options)
        #: The limits the server enforces around :meth:`stream` (set from the backend's
        #: table; a backend may pass them on to its HTTP client).
        self.first_token_timeout = DEFAULT_FIRST_TOKEN_TIMEOUT
        self.total_timeout = DEFAULT_TOTAL_TIMEOUT

    @property
    def default_model(self) -> str | None:
        configured = self.options.get("model")
        if isinstance(configured, str):
            return configured
        return self.models[0] if self.models else None

    def available_models(self) -> list[str]:
        """Models a session may name; by default the class's list plus the configured one."""
        found = list(self.models)
        if self.default_model is not None and self.default_model not in found:
            found.insert(0, self.default_model)
        return found

    async def start(self) -> None:
        """Open clients or connections; called once at start-up."""

    async def aclose(self) -> None:
        """Release what :meth:`start` opened; called once at shutdown."""

    def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        """Yield the reply's text chunks, then optionally one :class:`Usage`.

        Raise :class:`~chatbot.errors.BackendError` on failure. Closing the iterator
        (``aclose``) must stop the generation and release the upstream request.
        """
        raise NotImplementedError()


def discover() -> dict[str, EntryPoint]:
    """Every backend the installed distributions register, by entry-point name."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def logger_for(backend_type: str) -> logging.Logger:
    """The logger of a backend type: ``chatbot.backends.<type>``, under the server's
    ``chatbot`` logger, so that its records pass the redaction filter."""
    return logging.getLogger(f"{ENTRY_POINT_GROUP}.{backend_type}")


class Options:
    """Reads and checks a backend's ``[backends.NAME]`` table; every complaint names the
    table and says what to write."""

    def __init__(
        self, name: str, options: Mapping[str, Any], *, kind: str, known: Sequence[str]
    ) -> None:
        self.name = name
        self.kind = kind
        self.options = options
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise self.fail(
                f"the {kind} backend has no option {unknown[0]!r}; it takes: {', '.join(known)}"
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

    def strings(self, key: str, default: Sequence[str]) -> list[str]:
        value = self.options.get(key, list(default))
        if (
            not isinstance(value, list | tuple)
            or not value
            or not all(isinstance(v, str) and v.strip() for v in value)
        ):
            raise self.fail(f"{key} must be a non-empty list of strings")
        return [str(v) for v in value]

    def number(
        self, key: str, default: float | None, *, low: float, high: float | None = None
    ) -> float | None:
        value = self.options.get(key, default)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < low
            or (high is not None and value > high)
        ):
            bound = f"from {low:g} to {high:g}" if high is not None else f">= {low:g}"
            raise self.fail(f"{key} must be a number {bound}")
        return float(value)

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

    def integer(self, key: str, default: int | None, *, low: int) -> int | None:
        value = self.options.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.fail(f"{key} must be a whole number >= {low}")
        return value

    def api_key(
        self,
        default_env: str,
        *,
        vendor: str,
        key: str = "api_key_env",
        environ: Mapping[str, str] | None = None,
    ) -> tuple[str, str]:
        """The API key from the variable that option ``key`` names (``default_env`` when
        unset), and that variable's name. Keys are never read from the TOML file, nor from
        ``.env``: only from the server's environment."""
        variable = self.string(key, default_env)
        assert variable is not None
        if not _ENV_NAME.fullmatch(variable):
            raise self.fail(
                f'{key} must be the name of an environment variable, e.g. {key} = "{default_env}"'
            )
        env = os.environ if environ is None else environ
        value = env.get(variable, "").strip()
        if not value:
            raise self.fail(
                f"no {vendor} API key: set the {variable} environment variable (or {key} "
                f"in [backends.{self.name}]); .env is not read for vendor keys, export it in "
                "the server's environment"
            )
        return value, variable
