"""Per-user abuse limits: messages per minute and sockets open at once.

Every limit here counts per user (the token's user id), across all of that user's sockets,
and lives in this process's memory: with several server processes behind a load balancer,
each process counts on its own (see docs/security.md).

* :class:`RateLimiter`: a sliding window of messages per user per minute.
* :class:`UserLimits`: the per-user state of one application: the rate limiter and the
  sockets open per user.

The sessions a user may own are counted by the store, in the statement that creates one
(``SessionStore.create_session(limit=...)``), so that two processes cannot both pass the
check.

The origin check is in :mod:`chatbot.origins`, the request body limit in
:mod:`chatbot.middleware`.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from chatbot.origins import allowed_origins, origin_allowed
from chatbot.settings import Settings

RATE_WINDOW_SECONDS = 60.0


# Messages per user per minute ------------------------------------------------------------


@dataclass(frozen=True)
class RateDecision:
    """What :meth:`RateLimiter.hit` decided for one message."""

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


# Per-user state ---------------------------------------------------------------------------


class UserLimits:
    """The per-user limits of one application instance (built by its lifespan)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.allowed_origins = frozenset(allowed_origins(settings.allowed_origins))
        self.messages = RateLimiter(settings.rate_limit_per_minute)
        self._sockets: dict[str, set[object]] = {}

    def origin_allowed(self, headers: Any) -> bool:
        """The ``Origin`` check of a WebSocket upgrade (``headers``: Starlette's)."""
        return origin_allowed(headers.getlist("origin"), headers.get("host"), self.allowed_origins)

    def open_socket(self, user: str, socket: object) -> bool:
        """Count a socket for ``user``; ``False`` (and not counted) when at the limit."""
        sockets = self._sockets.setdefault(user, set())
        if len(sockets) >= self.settings.max_sockets_per_user:
            if not sockets:
                del self._sockets[user]
            return False
        sockets.add(socket)
        return True

    def close_socket(self, user: str, socket: object) -> None:
        sockets = self._sockets.get(user)
        if sockets is not None:
            sockets.discard(socket)
            if not sockets:
                del self._sockets[user]

    def open_sockets(self) -> Mapping[str, int]:
        """Sockets open per user, now."""
        return {user: len(sockets) for user, sockets in self._sockets.items()}
