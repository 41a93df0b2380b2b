"""The configured backends: found through entry points, built from the TOML tables."""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint
from typing import Any

from chatbot.backend_config import BackendConfig
from chatbot.backends import Backend, discover
from chatbot.errors import ConfigError, InvalidRequest
from chatbot.settings import Settings


def _load(type_name: str, found: Mapping[str, EntryPoint]) -> type[Backend]:
    entry_point = found.get(type_name)
    if entry_point is None:
        raise ConfigError(
            f"no backend type named {type_name!r}; the installed backend types are: "
            + (", ".join(sorted(found)) or "none")
        )
    cls = entry_point.load()
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigError(
            f"the entry point {type_name!r} ({entry_point.value}) is not a chatbot Backend class"
        )
    return cls


class BackendRegistry:
    """The configured backends by name, and which one is the default."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        default: str,
        configs: Mapping[str, BackendConfig] | None = None,
    ) -> None:
        if default not in backends:
            raise ConfigError(
                f"no backend named {default!r}; the configured backends are: "
                + ", ".join(sorted(backends))
            )
        self._backends = dict(backends)
        self.default = default
        self._configs = {
            name: (configs or {}).get(name) or BackendConfig(name=name, type=name)
            for name in backends
        }

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        extra_types: Mapping[str, type[Backend]] | None = None,
    ) -> BackendRegistry:
        """Instantiate each configured backend from its entry point (or ``extra_types``)."""
        found = discover()
        backends: dict[str, Backend] = {}
        for name, config in settings.backends.items():
            if extra_types and config.type in extra_types:
                backend_cls = extra_types[config.type]
            else:
                backend_cls = _load(config.type, found)
            backend = backend_cls(name, config.options)
            backend.first_token_timeout = config.first_token_timeout
            backend.total_timeout = config.total_timeout
            backends[name] = backend
        return cls(backends, settings.default_backend, settings.backends)

    def __iter__(self) -> Any:
        return iter(self._backends.values())

    def config(self, name: str) -> BackendConfig:
        """The server-side settings of a configured backend (fallback, prompt, budget)."""
        return self._configs[name]

    def chain(self, name: str) -> list[Backend]:
        """The backend called ``name`` followed by its fallbacks, in order."""
        return [self.get(name), *(self.get(f) for f in self._configs[name].fallback)]

    def get(self, name: str) -> Backend:
        """The backend called ``name``; ``InvalidRequest`` naming the configured ones if none."""
        try:
            return self._backends[name]
        except KeyError:
            raise InvalidRequest(
                "unknown_backend",
                f"no backend named {name!r}; the configured backends are: "
                + ", ".join(sorted(self._backends)),
            ) from None

    async def start(self) -> None:
        started: list[Backend] = []
        try:
            for backend in self._backends.values():
                await backend.start()
                started.append(backend)
        except BaseException:
            for backend in reversed(started):
                await backend.aclose()
            raise

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
