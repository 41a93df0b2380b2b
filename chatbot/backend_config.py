"""The backends' TOML file: ``default_backend`` and one ``[backends.NAME]`` table each.

A table's ``type`` names the backend's entry point; ``fallback``, ``system_prompt``,
``context_tokens``, ``first_token_timeout`` and ``total_timeout`` are the server's keys; every
other key belongs to the backend class::

    default_backend = "echo"
    [backends.echo]
    type = "echo"        # the entry-point name in the ``chatbot.backends`` group
    delay = 0.0
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatbot.backends import DEFAULT_FIRST_TOKEN_TIMEOUT, DEFAULT_TOTAL_TIMEOUT
from chatbot.errors import ConfigError


@dataclass(frozen=True)
class BackendConfig:
    """One named backend from the TOML file: its entry-point ``type``, the keys the server
    itself reads (``fallback``, ``system_prompt``, ``context_tokens``) and, in ``options``,
    everything else, which belongs to the backend class."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Backends that answer, in order, when this one fails before its first token.
    fallback: tuple[str, ...] = ()
    #: The system prompt of this backend's sessions that do not set their own.
    system_prompt: str | None = None
    #: Approximate token budget of the context sent to this backend (None: no budget).
    context_tokens: int | None = None
    #: Seconds until the first text of a reply, and for the whole reply; the server
    #: enforces both around the backend's stream and reports ``backend_timeout``.
    first_token_timeout: float = DEFAULT_FIRST_TOKEN_TIMEOUT
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any], source: str) -> BackendConfig:
        """Split a ``[backends.NAME]`` table into the server's keys and the backend's."""
        where = f"{source}: [backends.{name}]"
        if not isinstance(table.get("type"), str):
            raise ConfigError(
                f"{where} needs a type, the backend's entry-point name "
                "(run `chatbot backends` to list them)"
            )
        fallback = table.get("fallback", [])
        if isinstance(fallback, str):
            fallback = [fallback]
        if not isinstance(fallback, list) or not all(isinstance(f, str) for f in fallback):
            raise ConfigError(f"{where}: fallback must be a list of backend names")
        system_prompt = table.get("system_prompt")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ConfigError(f"{where}: system_prompt must be a string")
        budget = table.get("context_tokens")
        if budget is not None and (
            not isinstance(budget, int) or isinstance(budget, bool) or budget < 1
        ):
            raise ConfigError(f"{where}: context_tokens must be a whole number above 0")
        timeouts: dict[str, float] = {}
        for key, default in (
            ("first_token_timeout", DEFAULT_FIRST_TOKEN_TIMEOUT),
            ("total_timeout", DEFAULT_TOTAL_TIMEOUT),
        ):
            value = table.get(key, default)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value < float("inf")
            ):
                raise ConfigError(f"{where}: {key} must be a number of seconds > 0")
            timeouts[key] = float(value)
        reserved = {"type", "fallback", "system_prompt", "context_tokens", *timeouts}
        return cls(
            name=name,
            type=table["type"],
            options={k: v for k, v in table.items() if k not in reserved},
            fallback=tuple(fallback),
            system_prompt=system_prompt,
            context_tokens=budget,
            **timeouts,
        )


def load_backends_file(path: Path) -> dict[str, Any]:
    """Read ``default_backend`` and the ``[backends.NAME]`` tables of a TOML file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    known = {"default_backend", "title_backend", "backends"}
    extra = set(data) - known
    if extra:
        raise ConfigError(
            f"{path}: unknown top-level key {sorted(extra)[0]!r}; "
            "expected default_backend, title_backend and [backends.NAME] tables"
        )
    values: dict[str, Any] = {}
    tables = data.get("backends")
    if tables is not None:
        if not isinstance(tables, dict) or not tables:
            raise ConfigError(f"{path}: [backends] must hold at least one [backends.NAME] table")
        backends: dict[str, BackendConfig] = {}
        for name, table in tables.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [backends.{name}] must be a table")
            backends[name] = BackendConfig.from_table(name, table, str(path))
        values["backends"] = backends
        values["default_backend"] = next(iter(backends))
    default = data.get("default_backend")
    if default is not None:
        if not isinstance(default, str):
            raise ConfigError(f"{path}: default_backend must be a string")
        values["default_backend"] = default
    title = data.get("title_backend")
    if title is not None:
        if not isinstance(title, str):
            raise ConfigError(f"{path}: title_backend must be a string")
        values["title_backend"] = title
    return values


def default_backends() -> dict[str, BackendConfig]:
    """The backends when no TOML file names any: ``echo`` alone."""
    return {"echo": BackendConfig(name="echo", type="echo")}
