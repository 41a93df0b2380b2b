"""The :class:`SessionStore` interface and the records it returns.

Every method that touches a session takes the owner's user id and treats a session of
another owner exactly like a missing one: :class:`~chatbot.errors.NotFound`.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from chatbot.errors import InvalidRequest

Role = Literal["user", "assistant"]
Status = Literal["complete", "cancelled", "error", "in_progress"]
# A cursor this server issues is a timestamp and a session id: well under this.
MAX_CURSOR_CHARS = 256


def new_session_id() -> str:
    """An opaque, unguessable session id (128 random bits). Never one that starts with
    ``-``: on a command line (``chatbot chat --session ID``) it would read as an option."""
    while (value := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Session:
    """A conversation owned by one user."""

    id: str
    owner: str
    title: str | None
    backend: str
    model: str | None
    system_prompt: str | None
    created_at: datetime
    updated_at: datetime
    message_count: int = 0
    leaf_id: int | None = None


@dataclass(frozen=True)
class Message:
    """One stored message; ``id`` is stable and increases within a database."""

    id: int
    session_id: str
    role: Role
    content: str
    status: Status
    created_at: datetime
    client_id: str | None = None
    reply_to: int | None = None
    backend: str | None = None
    model: str | None = None
    usage: dict[str, Any] | None = None
    parent_id: int | None = None


@dataclass(frozen=True)
class UserMessage:
    """A user message just stored, and how many messages its session held before it (a
    live conversation that holds that many knows its context is current)."""

    message: Message
    count_before: int


@dataclass(frozen=True)
class SessionPage:
    sessions: list[Session]
    next_cursor: str | None


@dataclass(frozen=True)
class MessagePage:
    messages: list[Message] = field(default_factory=list)
    has_more: bool = False


class SessionStore(abc.ABC):
    """Where sessions and messages live. Implementations pass ``tests/store_contract.py``."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect; called once by the application's lifespan."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections; called once at shutdown."""

    @abc.abstractmethod
    async def migrate(self) -> list[str]:
        """Apply pending migrations in order; return the names of those applied now."""

    @abc.abstractmethod
    async def applied_migrations(self) -> list[str]:
        """The names of the migrations recorded in the database, in order."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the database does not answer."""

    @abc.abstractmethod
    async def create_session(
        self,
        owner: str,
        *,
        backend: str,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
        limit: int | None = None,
    ) -> Session:
        """Create a session owned by ``owner``; with ``limit``, raise
        :class:`~chatbot.errors.TooManySessions` if ``owner`` already has that many, in the
        same statement (two processes cannot both pass the check)."""

    @abc.abstractmethod
    async def get_session(self, owner: str, session_id: str) -> Session:
        """The session, or :class:`NotFound` if it is missing or not ``owner``'s."""

    @abc.abstractmethod
    async def list_sessions(
        self, owner: str, *, limit: int, cursor: str | None = None
    ) -> SessionPage:
        """``owner``'s sessions, most recently active first; raises ``InvalidRequest``
        for a cursor it did not issue."""

    async def count_sessions(self, owner: str) -> int:
        """How many sessions ``owner`` has. This default pages through
        :meth:`list_sessions`; implementations override it with one query."""
        count, cursor = 0, None
        while True:
            page = await self.list_sessions(owner, limit=100, cursor=cursor)
            count += len(page.sessions)
            if page.next_cursor is None:
                return count
            cursor = page.next_cursor

    @abc.abstractmethod
    async def rename_session(self, owner: str, session_id: str, title: str | None) -> Session:
        """Set the title and return the updated session."""

    @abc.abstractmethod
    async def delete_session(self, owner: str, session_id: str) -> None:
        """Delete the session and all its messages."""

    @abc.abstractmethod
    async def add_message(
        self,
        owner: str,
        session_id: str,
        *,
        role: Role,
        content: str,
        status: Status = "complete",
        client_id: str | None = None,
        reply_to: int | None = None,
        backend: str | None = None,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> Message:
        """Append a message (committed when this returns) and mark the session active.

        Raises :class:`~chatbot.errors.DuplicateMessage` for a user message whose
        ``client_id`` the session already holds.
        """

    @abc.abstractmethod
    async def add_user_message(
        self, owner: str, session_id: str, *, content: str, client_id: str | None = None
    ) -> UserMessage:
        """Store a user message in one transaction (committed when this returns).

        A ``client_id`` the session already holds raises
        :class:`~chatbot.errors.DuplicateMessage` carrying the stored message and its reply;
        nothing is written then. ``NotFound`` for a session that is not ``owner``'s.
        """

    @abc.abstractmethod
    async def add_reply(
        self,
        owner: str,
        session_id: str,
        *,
        reply_to: int,
        content: str,
        status: Status,
        backend: str | None = None,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
        replacing: int | None = None,
    ) -> Message:
        """Store the reply to the user message ``reply_to`` in one transaction; with
        ``replacing``, overwrite that earlier (failed) reply in its place instead."""

    @abc.abstractmethod
    async def find_user_message(
        self, owner: str, session_id: str, client_id: str
    ) -> Message | None:
        """The user message stored with this client ``id`` in the session, if any."""

    @abc.abstractmethod
    async def find_reply(self, owner: str, session_id: str, message_id: int) -> Message | None:
        """The assistant message that answers the user message ``message_id``, if stored."""

    @abc.abstractmethod
    async def replace_reply(
        self,
        owner: str,
        session_id: str,
        message_id: int,
        *,
        content: str,
        status: Status,
        backend: str | None = None,
        model: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> Message:
        """Overwrite an assistant message (a failed reply being answered again); its id
        and place in the history stay."""

    @abc.abstractmethod
    async def list_messages(
        self,
        owner: str,
        session_id: str,
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
    ) -> MessagePage:
        """A page of messages, oldest first. No cursor: the newest ``limit``.
        ``before``/``after``: the page just older/newer than that message id."""


def encode_cursor(updated_at: datetime, session_id: str) -> str:
    """An opaque session-list cursor: the position of the last session on a page."""
    raw = json.dumps([updated_at.isoformat(), session_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Undo :func:`encode_cursor`; ``InvalidRequest`` for anything else."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise InvalidRequest("invalid_cursor", "cursor is not one this server issued")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, session_id = json.loads(raw)
        when = datetime.fromisoformat(stamp)
        if not isinstance(session_id, str) or when.tzinfo is None:
            raise ValueError(cursor)
        session_id.encode("utf-8")  # a lone surrogate cannot be a session id
    except (ValueError, TypeError, RecursionError, binascii.Error):
        raise InvalidRequest("invalid_cursor", "cursor is not one this server issued") from None
    return when, session_id
