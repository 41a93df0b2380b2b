"""Model backends and the registry that finds them through entry points.

A backend is a class registered in the ``chatbot.backends`` entry-point group, the built-in
``echo`` exactly like a third party's::

    [options.entry_points]
    chatbot.backends =
        mybackend = mypackage:MyBackend

It receives its own options from the TOML file and implements one streaming method,
:meth:`Backend.stream`, that yields text chunks and may yield a :class:`Usage` last.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar, Literal

from chatbot.errors import ConfigError, InvalidRequest
from chatbot.settings import BackendConfig, Settings

ENTRY_POINT_GROUP = "chatbot.backends"


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
            backends[name] = backend_cls(name, config.options)
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
