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
from typing import TYPE_CHECKING, Any, Literal

from chatbot.errors import InvalidRequest
from chatbot.stores.usage import UsageLedger

if TYPE_CHECKING:
    from chatbot.search import SearchQuery
    from chatbot.transfer import ImportedSession

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
    #: The newest message of the current branch; ``None`` while the session is empty.
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
    #: The message this one follows; ``None`` for a first message (a root of the tree).
    parent_id: int | None = None


@dataclass(frozen=True)
class UserMessage:
    """A user message just stored, and the current branch's newest message before it (a
    message whose parent is not that one started a branch: an edit)."""

    message: Message
    leaf_before: int | None


@dataclass(frozen=True)
class SessionPage:
    sessions: list[Session]
    next_cursor: str | None


@dataclass(frozen=True)
class MessagePage:
    messages: list[Message] = field(default_factory=list)
    has_more: bool = False
    #: For each listed message, the ids of every message with the same parent, oldest first.
    siblings: dict[int, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchHit:
    """A message that matched a search, with the title of its session."""

    message: Message
    title: str | None


@dataclass(frozen=True)
class Share:
    """A frozen, read-only copy of one branch, readable by anyone who has its id."""

    id: str
    session_id: str
    title: str | None
    created_at: datetime
    messages: list[dict[str, Any]]


#: ``parent`` of :meth:`SessionStore.add_user_message` meaning "after the current branch".
LEAF: Literal["leaf"] = "leaf"


class SessionStore(UsageLedger):
    """Where sessions and messages live, and the tokens their replies used (the ledger of
    :class:`~chatbot.stores.usage.UsageLedger`). Implementations pass
    ``tests/store_contract.py``."""

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
        self,
        owner: str,
        session_id: str,
        *,
        content: str,
        client_id: str | None = None,
        parent: int | Literal["leaf"] | None = LEAF,
    ) -> UserMessage:
        """Store a user message in one transaction (committed when this returns).

        Its parent is the current branch's leaf, or with ``parent`` that message (an edit;
        ``None``: a new first message); either way it becomes the leaf.

        A ``client_id`` the session already holds raises
        :class:`~chatbot.errors.DuplicateMessage` carrying the stored message and its reply;
        nothing is written then. ``NotFound`` for a session that is not ``owner``'s,
        :class:`~chatbot.errors.MessageNotFound` for a ``parent`` that is not in it.
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
        client_id: str | None = None,
    ) -> Message:
        """Store the reply to the user message ``reply_to`` in one transaction, as its child
        (the leaf moves to it if ``reply_to`` was the leaf); with ``replacing``, overwrite
        that earlier (failed) reply in its place instead. A regeneration's ``client_id`` is
        stored on its reply (:class:`~chatbot.errors.DuplicateReply` if the session has it);
        :class:`~chatbot.errors.MessageNotFound` if ``reply_to`` was deleted meanwhile."""

    @abc.abstractmethod
    async def find_user_message(
        self, owner: str, session_id: str, client_id: str, role: Role = "user"
    ) -> Message | None:
        """The user message (or with ``role="assistant"``, the regenerated reply) stored
        with this client ``id`` in the session, if any."""

    @abc.abstractmethod
    async def find_reply(self, owner: str, session_id: str, message_id: int) -> Message | None:
        """The first assistant message that answers the user message ``message_id``."""

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
        leaf_id: int | None = None,
    ) -> MessagePage:
        """A page of the current branch (or of the one ending at ``leaf_id``), oldest first,
        with each message's siblings. No cursor: the newest ``limit``. ``before``: the page
        just above that message of the branch (or, for an id that is not in the session,
        of the branch's messages with smaller ids); ``after``: the page just below it.
        Reads only the branch, never the whole tree."""

    @abc.abstractmethod
    async def branch_to(
        self, owner: str, session_id: str, message_id: int, *, limit: int
    ) -> list[Message]:
        """The newest ``limit`` messages of the branch ending at ``message_id``, oldest
        first (what a backend sees when it answers that message)."""

    @abc.abstractmethod
    async def get_message(self, owner: str, session_id: str, message_id: int) -> Message:
        """One message of the session; ``MessageNotFound`` if it holds none with that id."""

    @abc.abstractmethod
    async def newest_reply(self, owner: str, session_id: str) -> Message | None:
        """The newest assistant message of the current branch, if any."""

    @abc.abstractmethod
    async def switch_branch(
        self, owner: str, session_id: str, message_id: int, *, descend: bool = True
    ) -> Session:
        """Make the branch through ``message_id`` current (with ``descend``, down the
        newest child at each step to a leaf); the updated session."""

    @abc.abstractmethod
    async def delete_message(self, owner: str, session_id: str, message_id: int) -> Session:
        """Delete a message and everything below it; if the current branch ran through it,
        the newest remaining sibling's branch becomes current, else the parent's. The
        updated session."""

    @abc.abstractmethod
    async def all_messages(self, owner: str, session_id: str) -> list[Message]:
        """Every message of the session's tree, in id order (an export)."""

    @abc.abstractmethod
    async def set_title(
        self, owner: str, session_id: str, title: str, *, only_if_untitled: bool
    ) -> Session | None:
        """Set the title; with ``only_if_untitled``, only if it has none (``None`` then:
        a title was set meanwhile, by the user or another process)."""

    @abc.abstractmethod
    async def search(
        self, owner: str, query: SearchQuery, *, limit: int, offset: int
    ) -> list[SearchHit]:
        """``owner``'s messages matching ``query``, best match first, then newest; the
        owner is part of the query itself."""

    @abc.abstractmethod
    async def import_sessions(
        self,
        owner: str,
        sessions: list[ImportedSession],
        *,
        backend: str,
        limit: int | None = None,
    ) -> list[Session]:
        """Create a session per imported conversation, all in one transaction (nothing is
        half imported); ``TooManySessions`` if that takes ``owner`` past ``limit``."""

    @abc.abstractmethod
    async def create_share(
        self, owner: str, session_id: str, share_id: str, messages: list[dict[str, Any]]
    ) -> Share:
        """Store a frozen copy of ``messages`` (a branch, as shared) under ``share_id``."""

    @abc.abstractmethod
    async def list_shares(self, owner: str, session_id: str) -> list[Share]:
        """The session's shares, newest first."""

    @abc.abstractmethod
    async def delete_share(self, owner: str, session_id: str, share_id: str) -> None:
        """Revoke a share; ``NotFound`` if the session holds none with that id."""

    @abc.abstractmethod
    async def get_share(self, share_id: str) -> Share:
        """A share by its id, whoever asks (the id is the secret); ``NotFound`` if none."""


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
