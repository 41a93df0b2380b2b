"""The :class:`Hub` interface and the events it carries.

Events are plain data keyed by session id (and by the client's message id they answer): no
socket and no task inside. Every socket on a session receives every event of it and decides
in the WebSocket layer what to send (deltas only to sockets that asked for them, extended
frames only to clients that opted in). A hub also carries a ``cancel`` to whoever generates
the session's reply, and keeps the text of the reply in progress, so that a socket that
opens mid-reply can be sent the text so far.

:class:`~chatbot.hub.local.LocalHub` serves one process; a hub over a database's
notifications can serve several, behind the same interface.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

from chatbot.stores.base import Message


@dataclass(frozen=True, slots=True)
class Started:
    """A reply began streaming (it answers the client message ``reply_to``)."""

    session_id: str
    reply_to: str | None


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the reply being generated."""

    session_id: str
    text: str
    reply_to: str | None


@dataclass(frozen=True, slots=True)
class Reply:
    """A stored assistant message, ready to be sent as a reply frame. With ``only``, it is
    for one socket (the one that sent an already answered message id again)."""

    session_id: str
    message: Message
    reply_to: str | None
    only: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """A recoverable failure, sent as an error frame. ``retry_after``: whole seconds until
    sending again can work. With ``only``, it is for one socket (the one whose message was
    refused before anything of the session changed)."""

    session_id: str
    code: str
    message: str
    retryable: bool = False
    reply_to: str | None = None
    retry_after: int | None = None
    only: str | None = None


@dataclass(frozen=True, slots=True)
class Branch:
    """The session's current branch changed to the one ending at ``leaf_id``."""

    session_id: str
    leaf_id: int | None


@dataclass(frozen=True, slots=True)
class Title:
    """The session got a new title."""

    session_id: str
    title: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is gone (deleted): its sockets close with ``code``."""

    session_id: str
    code: int
    reason: str


Event = Started | Delta | Reply | Failure | Branch | Title | Closed
#: What a socket gives the hub: called with each event of its session, on the event loop.
Listener = Callable[[Event], None]
#: Who generates replies gives the hub this: stop the session's reply; ``False`` if none.
CancelHandler = Callable[[str], bool]


@dataclass(frozen=True, slots=True)
class InProgress:
    """The reply being generated on a session: whom it answers and its text so far."""

    reply_to: str | None
    text: str


class Hub(abc.ABC):
    """Carries each session's events to every socket on it, wherever they are."""

    @abc.abstractmethod
    def subscribe(self, session_id: str, listener: Listener) -> None:
        """Deliver the session's events to ``listener`` from now on."""

    @abc.abstractmethod
    def unsubscribe(self, session_id: str, listener: Listener) -> None:
        """Stop delivering to ``listener`` (a no-op if it was not subscribed)."""

    @abc.abstractmethod
    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every listener of its session."""

    @abc.abstractmethod
    def snapshot(self, session_id: str) -> InProgress | None:
        """The reply being generated on the session, if any."""

    @abc.abstractmethod
    def serve_cancels(self, handler: CancelHandler) -> None:
        """Route every :meth:`cancel` to ``handler`` (the generating side calls this once)."""

    @abc.abstractmethod
    def cancel(self, session_id: str) -> None:
        """Ask whoever generates the session's reply to stop it."""

    def close_session(self, session_id: str, code: int, reason: str) -> None:
        """The session was deleted: stop its reply and close its sockets with ``code``."""
        self.cancel(session_id)
        self.publish(Closed(session_id, code, reason))

    async def start(self) -> None:  # noqa: B027 (a hook: most hubs have nothing to open)
        """Connect (a hub across processes); called once by the lifespan."""

    async def aclose(self) -> None:  # noqa: B027
        """Release what :meth:`start` opened."""

    async def ping(self) -> None:  # noqa: B027 (a hook: a hub in memory has nothing to check)
        """Raise if the hub cannot carry events (a hub across processes: its listener is
        down); ``/readyz`` calls it."""
