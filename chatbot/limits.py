"""Browser safety and abuse limits: allowed origins, request body size, and per-user quotas.

Every limit here counts per user (the token's user id), across all of that user's sockets,
and lives in this process's memory: with several server processes behind a load balancer,
each process counts on its own (see docs/security.md).

* :func:`origin_allowed`: the WebSocket ``Origin`` check (cross-site WebSocket hijacking).
* :class:`BodySizeLimit`: an ASGI middleware that answers ``413`` to an HTTP request body
  larger than ``CHATBOT_MAX_BODY_BYTES``, without reading more of it than the limit.
* :class:`RateLimiter`: a sliding window of messages per user per minute.
* :class:`UserLimits`: the per-user state of one application: the rate limiter, the sockets
  open per user, and the sessions a user may create.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbot.errors import ChatbotError, InvalidRequest
from chatbot.serialize import error_response

if TYPE_CHECKING:
    from chatbot.settings import Settings
    from chatbot.stores.base import Session, SessionStore

ANY_ORIGIN = "*"
_DEFAULT_PORTS = {"http": 80, "https": 443}
RATE_WINDOW_SECONDS = 60.0


# Origins ---------------------------------------------------------------------------------


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in lower case without the scheme's default port, or
    ``None`` when ``value`` is not an http(s) origin (``null``, a path, credentials...)."""
    value = value.strip()
    if value.endswith("/"):
        value = value[:-1]
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if (
        scheme not in _DEFAULT_PORTS
        or not host
        or parts.path
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _host_and_port(host_header: str, default_port: int) -> tuple[str, int] | None:
    try:
        parts = urlsplit("//" + host_header.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.path or parts.query or "@" in parts.netloc:
        return None
    return parts.hostname, default_port if port is None else port


def origin_allowed(origins: list[str], host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a WebSocket upgrade with these ``Origin`` header values may go on.

    No ``Origin`` (a client that is not a browser) is allowed. ``allowed`` holds normalized
    origins (see :func:`normalize_origin`) or ``*``; empty means same-origin only: the
    origin's host and port must be those of the request's ``Host`` header.
    """
    if not origins:
        return True
    if len(origins) > 1:
        return False
    allowed = set(allowed)
    if ANY_ORIGIN in allowed:
        return True
    origin = normalize_origin(origins[0])
    if origin is None:
        return False
    if allowed:
        return origin in allowed
    if host is None:
        return False
    parts = urlsplit(origin)
    default_port = _DEFAULT_PORTS[parts.scheme]
    ours = (parts.hostname, default_port if parts.port is None else parts.port)
    return _host_and_port(host, default_port) == ours


# HTTP request bodies ---------------------------------------------------------------------


class BodyTooLarge(ChatbotError):
    """The request body went past ``CHATBOT_MAX_BODY_BYTES`` while it was being read."""


def body_too_large_response(limit: int) -> JSONResponse:
    return error_response(
        413,
        "body_too_large",
        f"the request body is larger than {limit} bytes",
        # The rest of the body is not wanted: do not keep reading it for a next request.
        headers={"Connection": "close"},
    )


class BodySizeLimit:
    """Answer ``413`` to an HTTP request whose body is larger than ``max_bytes``.

    A ``Content-Length`` over the limit is refused before the application runs and before
    any of the body is read. A body without one (chunked) is counted as the application
    reads it, and refused at the first chunk past the limit; nothing beyond that chunk is
    read. WebSocket frames have their own limit (``CHATBOT_MAX_FRAME_BYTES``).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.strip().isdigit() and int(value) > limit:
                await body_too_large_response(limit)(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await body_too_large_response(limit)(scope, receive, send)


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


# Per-user quotas -------------------------------------------------------------------------


class TooManySessions(InvalidRequest):
    """The user already owns ``CHATBOT_MAX_SESSIONS_PER_USER`` sessions."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            "too_many_sessions",
            f"you already have {limit} sessions, the most this server keeps per user; "
            "delete one to create another",
            429,
        )


class UserLimits:
    """The per-user limits of one application instance (built by its lifespan)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.allowed_origins = frozenset(
            o if o == ANY_ORIGIN else (normalize_origin(o) or o) for o in settings.allowed_origins
        )
        self.messages = RateLimiter(settings.rate_limit_per_minute)
        self._sockets: dict[str, set[object]] = {}
        # Counting a user's sessions and creating one more is one step in this process.
        self._session_lock = asyncio.Lock()

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

    async def create_session(self, store: SessionStore, owner: str, **fields: Any) -> Session:
        """``store.create_session`` unless ``owner`` is at ``CHATBOT_MAX_SESSIONS_PER_USER``
        (then :class:`TooManySessions`)."""
        limit = self.settings.max_sessions_per_user
        async with self._session_lock:
            if await store.count_sessions(owner) >= limit:
                raise TooManySessions(limit)
            return await store.create_session(owner, **fields)
