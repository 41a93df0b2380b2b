"""Per-user abuse limits: messages per minute and sockets open at once.

Every limit here counts per user (the token's user id), across all of that user's sockets.
:class:`UserLimits` is the interface the socket layer uses; there are two implementations,
chosen by the store's database URL as the store itself is:

* :class:`MemoryLimits`: in this process's memory. With several server processes, each
  counts on its own, so it serves one process (SQLite's case);
* :class:`chatbot.limits_postgres.PostgresLimits`: in PostgreSQL tables, so that every
  process on one database counts the same messages and sockets.

:class:`RateLimiter` is the sliding window of messages per user per minute that
:class:`MemoryLimits` keeps; the PostgreSQL one keeps the same window in a row per user.

The sessions a user may own are counted by the store, in the statement that creates one
(``SessionStore.create_session(limit=...)``), so that two processes cannot both pass the
check.

The origin check is in :mod:`chatbot.origins`, the request body limit in
:mod:`chatbot.middleware`.
"""

from __future__ import annotations

import abc
import collections
import importlib
import math
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from chatbot.origins import allowed_origins, origin_allowed
from chatbot.settings import Settings

if TYPE_CHECKING:
    from chatbot.stores.base import SessionStore

RATE_WINDOW_SECONDS = 60.0

#: The limits that count across processes, by the database URL's scheme (``module:Class``,
#: imported only when chosen, like the store). Any other store gets :class:`MemoryLimits`.
SHARED_LIMITS = {
    "postgresql": "chatbot.limits_postgres:PostgresLimits",
    "postgres": "chatbot.limits_postgres:PostgresLimits",
}


# Messages per user per minute ------------------------------------------------------------


@dataclass(frozen=True)
class RateDecision:
    """What :meth:`UserLimits.hit` decided for one message."""

    allowed: bool
    #: Whole seconds until a message will be allowed again (0 when allowed).
    retry_after: int = 0
    #: Messages refused in a row since the last one allowed (0 when allowed).
    refused: int = 0


@dataclass
class _Window:
    stamps: collections.deque[float] = field(default_factory=collections.deque)
    refused: int = 0


class RateLimiter:
    """At most ``limit`` events per ``window`` seconds per key, in a sliding window.

    The times of the events allowed in the last ``window`` seconds are kept (at most
    ``limit`` per key); an event is allowed when fewer than ``limit`` are. A refused event
    is not counted in the window, so a client that waits ``retry_after`` seconds gets
    through, but it is counted in :attr:`RateDecision.refused`, which the caller uses to
    tell a client that slows down from one that keeps flooding.
    """

    def __init__(
        self,
        limit: int,
        window: float = RATE_WINDOW_SECONDS,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._windows: dict[Hashable, _Window] = {}
        self._next_sweep = clock() + window

    def hit(self, key: Hashable) -> RateDecision:
        """Count one event for ``key`` if the window has room; say when to retry if not."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        stamps = window.stamps
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if len(stamps) < self.limit:
            stamps.append(now)
            window.refused = 0
            return RateDecision(allowed=True)
        window.refused += 1
        wait = stamps[0] + self.window - now
        return RateDecision(
            allowed=False, retry_after=max(1, math.ceil(wait)), refused=window.refused
        )

    def __len__(self) -> int:
        """How many keys are tracked (for tests: idle keys are forgotten)."""
        return len(self._windows)

    def _sweep(self, now: float) -> None:
        # Forget keys with nothing in their window, so memory follows active users only.
        horizon = now - self.window
        for key in [k for k, w in self._windows.items() if not w.stamps or w.stamps[-1] <= horizon]:
            del self._windows[key]
        self._next_sweep = now + self.window


# The interface ----------------------------------------------------------------------------


class UserLimits(abc.ABC):
    """The per-user limits of one application instance (built by its lifespan).

    A socket is known by an id its endpoint makes up (unique, never reused, no secret in
    it). Each instance also keeps the sockets open in this process, which is what
    :meth:`open_sockets` reports (a process's own figure, for its metrics and tests).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.allowed_origins = frozenset(allowed_origins(settings.allowed_origins))
        self._sockets: dict[str, set[str]] = {}

    def origin_allowed(self, headers: Any) -> bool:
        """The ``Origin`` check of a WebSocket upgrade (``headers``: Starlette's)."""
        return origin_allowed(headers.getlist("origin"), headers.get("host"), self.allowed_origins)

    async def start(self) -> None:  # noqa: B027 (a hook: memory has nothing to start)
        """Start what runs in the background; called once by the lifespan."""

    async def aclose(self) -> None:  # noqa: B027
        """Stop it and give up what this process still holds (before the store closes)."""

    @abc.abstractmethod
    async def hit(self, user: str) -> RateDecision:
        """Count one chat message of ``user`` if their window has room; say when to retry
        if not (the window: :class:`RateLimiter`'s semantics)."""

    @abc.abstractmethod
    async def open_socket(self, user: str, socket_id: str) -> bool:
        """Count a socket for ``user``; ``False`` (and not counted) when at the limit."""

    @abc.abstractmethod
    async def close_socket(self, user: str, socket_id: str) -> None:
        """Stop counting a socket (one that was counted; another id is ignored)."""

    @abc.abstractmethod
    async def count_sockets(self, user: str) -> int:
        """The sockets ``user`` has open, as the limit counts them (every process's)."""

    def open_sockets(self) -> Mapping[str, int]:
        """Sockets open per user in this process, now."""
        return {user: len(sockets) for user, sockets in self._sockets.items()}

    def _held(self, user: str, socket_id: str) -> None:
        self._sockets.setdefault(user, set()).add(socket_id)

    def _released(self, user: str, socket_id: str) -> bool:
        sockets = self._sockets.get(user)
        if sockets is None or socket_id not in sockets:
            return False
        sockets.discard(socket_id)
        if not sockets:
            del self._sockets[user]
        return True


class MemoryLimits(UserLimits):
    """The limits in this process's memory: each process counts on its own."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.messages = RateLimiter(settings.rate_limit_per_minute)

    async def hit(self, user: str) -> RateDecision:
        return self.messages.hit(user)

    async def open_socket(self, user: str, socket_id: str) -> bool:
        if len(self._sockets.get(user, ())) >= self.settings.max_sockets_per_user:
            return False
        self._held(user, socket_id)
        return True

    async def close_socket(self, user: str, socket_id: str) -> None:
        self._released(user, socket_id)

    async def count_sockets(self, user: str) -> int:
        return len(self._sockets.get(user, ()))


def limits_for(settings: Settings, store: SessionStore) -> UserLimits:
    """The limits that go with an opened ``store``: shared through its database when the
    store's kind has such limits (:data:`SHARED_LIMITS`), in memory otherwise."""
    target = SHARED_LIMITS.get(urlsplit(settings.database_url).scheme)
    if target is None:
        return MemoryLimits(settings)
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    limits: UserLimits = cls.for_store(settings, store)
    return limits
