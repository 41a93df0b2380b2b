"""Conversations as files: export to JSON or Markdown, import from JSON.

Pure functions over records, with no store and no I/O, so the HTTP routes only read,
convert and write in one transaction.

The ``chatbot.session.v1`` format, which :func:`export_json` writes and
:func:`parse_import` reads back exactly (new ids aside)::

    {"format": "chatbot.session.v1",
     "session": {"title", "backend", "model", "system_prompt", "created_at",
                 "updated_at", "leaf_id"},
     "messages": [{"id", "parent_id", "role", "content", "status", "created_at",
                   "usage"?, "in_reply_to"?, "backend"?, "model"?, "client_id"?}, ...]}

Messages are the whole tree in id order, so a parent always comes before its children;
``parent_id`` is null for a first message and ``leaf_id`` names the newest message of the
current branch. Timestamps are RFC 3339. On import, ``session.created_at`` and each
message's ``id``, ``parent_id``, ``role``, ``content``, ``status`` and ``created_at`` are
required; ``in_reply_to`` and ``client_id`` are not read (the tree says what a reply
answers, and a client id belongs to the client that sent the message).

:func:`parse_import` also reads a ChatGPT export: one conversation object or the whole
``conversations.json`` array. Only what a reader of the conversation saw is kept: user and
assistant text. System, tool and hidden messages, messages addressed to a tool and messages
without text are dropped, and their children hang from the nearest message kept above
them, so edits and regenerations stay siblings.

Any JSON value, however nested or mistyped, either imports or raises
:class:`~chatbot.errors.InvalidRequest` saying what is wrong and where; nothing here
recurses, so deep nesting cannot exhaust the stack.
"""

from __future__ import annotations

import collections
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeGuard

from chatbot.errors import InvalidRequest
from chatbot.serialize import is_utf8, message_json, timestamp
from chatbot.stores.base import Message, Role, Session, Status

FORMAT = "chatbot.session.v1"
#: The most conversations, and messages across all of them, that one import may hold.
MAX_IMPORT_SESSIONS = 1000
MAX_IMPORT_MESSAGES = 100_000
UNTITLED = "Untitled conversation"

_ROLES: tuple[Role, ...] = ("user", "assistant")
_STATUSES: dict[str, Status] = {
    "complete": "complete",
    "cancelled": "cancelled",
    "error": "error",
    # A reply still being generated when it was exported ended there.
    "in_progress": "cancelled",
}
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", re.IGNORECASE)
#: Message ids are SQLite rowids: positive 64-bit integers.
_MAX_ID = 2**63 - 1
#: How much of a string from the input an error message quotes.
_QUOTE_CHARS = 40
_MISSING = object()
_SECONDS = "a number of seconds since 1970"


@dataclass(frozen=True)
class ImportedMessage:
    """One message to store; ``key`` is unique within its session and ``parent_key``
    names the message it follows (None for a first message)."""

    key: str
    parent_key: str | None
    role: Literal["user", "assistant"]
    content: str
    status: Status
    created_at: datetime
    backend: str | None
    model: str | None
    usage: dict[str, Any] | None


@dataclass(frozen=True)
class ImportedSession:
    """One conversation to store: its messages come parents first, and ``leaf_key`` names
    the end of the current branch (None only when there are no messages)."""

    title: str | None
    backend: str | None
    model: str | None
    system_prompt: str | None
    created_at: datetime
    messages: tuple[ImportedMessage, ...]
    leaf_key: str | None


# Export ------------------------------------------------------------------------------------


def export_json(session: Session, messages: list[Message]) -> dict[str, Any]:
    """The whole tree of ``session`` in the ``chatbot.session.v1`` format."""
    return {
        "format": FORMAT,
        "session": {
            "title": session.title,
            "backend": session.backend,
            "model": session.model,
            "system_prompt": session.system_prompt,
            "created_at": timestamp(session.created_at),
            "updated_at": timestamp(session.updated_at),
            "leaf_id": session.leaf_id,
        },
        "messages": [
            {**message_json(message), "parent_id": message.parent_id}
            for message in sorted(messages, key=lambda message: message.id)
        ],
    }


def export_markdown(
    session: Session, branch: list[Message], *, exported_at: datetime | None = None
) -> str:
    """One branch of ``session`` (root first) as a Markdown document: the title, then each
    message under a ``## User`` or ``## Assistant`` heading that says when a reply was
    cancelled or failed. With ``exported_at``, a line says when the file was made."""
    title = " ".join((session.title or "").split()) or UNTITLED
    blocks = [f"# {title}"]
    if exported_at is not None:
        blocks.append(f"Exported on {exported_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC.")
    for message in branch:
        heading = "## User" if message.role == "user" else "## Assistant"
        if message.status != "complete":
            heading += f" ({message.status.replace('_', ' ')})"
        blocks.append(heading)
        if message.content:
            blocks.append(close_code_fence(message.content))
    return "\n\n".join(blocks) + "\n"


_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")


def close_code_fence(text: str) -> str:
    """``text`` with a closing line added if it ends inside a fenced code block.

    A reply cancelled while writing code stops inside its block; left open, the block
    would swallow every heading after it in the exported document.
    """
    fence: str | None = None
    for line in text.split("\n"):
        match = _FENCE.fullmatch(line)
        if match is None:
            continue
        mark, rest = match.groups()
        if fence is None:
            # The info string of a backtick fence cannot hold a backtick (CommonMark).
            if not (mark[0] == "`" and "`" in rest):
                fence = mark
        elif mark[0] == fence[0] and len(mark) >= len(fence) and not rest.strip():
            fence = None
    if fence is None:
        return text
    return text + ("" if text.endswith("\n") else "\n") + fence


# Import ------------------------------------------------------------------------------------


def parse_import(data: object) -> list[ImportedSession]:
    """The conversations held by decoded JSON ``data``: a ``chatbot.session.v1`` export, a
    ChatGPT conversation, or an array of them (ChatGPT's ``conversations.json``).

    Raises :class:`~chatbot.errors.InvalidRequest` (``invalid_import``) naming the first
    problem found, and never any other exception.
    """
    budget = _Budget()
    if isinstance(data, list):
        if len(data) > MAX_IMPORT_SESSIONS:
            raise _invalid(
                f"the import holds {len(data)} conversations; at most {MAX_IMPORT_SESSIONS} "
                "are imported at once: split it into smaller files"
            )
        return [
            _parse_one(item, f"conversations[{index}]", budget) for index, item in enumerate(data)
        ]
    return [_parse_one(data, "", budget)]


class _Budget:
    """Counts the messages of one import against :data:`MAX_IMPORT_MESSAGES`."""

    def __init__(self) -> None:
        self.messages = 0

    def take(self, count: int) -> None:
        self.messages += count
        if self.messages > MAX_IMPORT_MESSAGES:
            raise _invalid(
                f"the import holds more than {MAX_IMPORT_MESSAGES} messages, the most "
                "imported at once: split it into smaller files"
            )


def _parse_one(data: object, where: str, budget: _Budget) -> ImportedSession:
    if isinstance(data, dict):
        if "format" in data:
            return _parse_ours(data, where, budget)
        if "mapping" in data:
            return _parse_chatgpt(data, where, budget)
    what = f"{where} is" if where else "the import is"
    raise _invalid(
        f'{what} neither a {FORMAT} export (an object with "format") nor a ChatGPT '
        'conversation (an object with "mapping") nor an array of ChatGPT conversations'
    )


# chatbot.session.v1 ------------------------------------------------------------------------


def _parse_ours(data: dict[Any, Any], where: str, budget: _Budget) -> ImportedSession:
    kind = data["format"]
    if kind != FORMAT:
        shown = _quote(kind) if isinstance(kind, str) else "of this type"
        raise _invalid(
            f"{_at(where, 'format')} {shown} is not one this server reads: export as "
            f"{FORMAT}, or import a ChatGPT export"
        )
    session = data.get("session")
    if not isinstance(session, dict):
        raise _invalid(f"{_at(where, 'session')} must be an object")
    items = data.get("messages")
    if not isinstance(items, list):
        raise _invalid(f"{_at(where, 'messages')} must be an array")
    budget.take(len(items))

    at = _at(where, "session")
    title = _optional_text(session, "title", at)
    backend = _optional_text(session, "backend", at)
    model = _optional_text(session, "model", at)
    system_prompt = _optional_text(session, "system_prompt", at)
    created_at = _rfc3339(session.get("created_at", _MISSING), _at(at, "created_at"))
    if session.get("updated_at") is not None:
        _rfc3339(session["updated_at"], _at(at, "updated_at"))
    leaf_id = session.get("leaf_id")
    if leaf_id is not None and not _is_id(leaf_id):
        raise _invalid(f"{_at(at, 'leaf_id')} must be a message id or null")

    messages = _our_messages(items, _at(where, "messages"))
    if leaf_id is None:
        leaf_key = _newest(messages)
    elif (leaf_key := str(leaf_id)) not in {message.key for message in messages}:
        raise _invalid(f"{_at(at, 'leaf_id')} {leaf_id} is not the id of a message in messages")
    return ImportedSession(
        title=title,
        backend=backend,
        model=model,
        system_prompt=system_prompt,
        created_at=created_at,
        messages=messages,
        leaf_key=leaf_key,
    )


def _our_messages(items: list[Any], where: str) -> tuple[ImportedMessage, ...]:
    messages: list[ImportedMessage] = []
    seen: set[int] = set()
    for index, item in enumerate(items):
        at = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise _invalid(f"{at} must be an object")
        ident = item.get("id")
        if not _is_id(ident):
            raise _invalid(f"{at}.id must be a positive integer")
        if ident in seen:
            raise _invalid(f"{at}.id {ident} is the id of an earlier message too")
        parent_id = item.get("parent_id", _MISSING)
        if parent_id is _MISSING:
            raise _invalid(
                f"{at}.parent_id is missing: give the id of the message it follows, "
                "or null for a first message"
            )
        if parent_id is not None and not _is_id(parent_id):
            raise _invalid(f"{at}.parent_id must be a message id or null")
        if parent_id is not None and parent_id not in seen:
            raise _invalid(
                f"{at}.parent_id {parent_id} is not the id of an earlier message: "
                "list every message after the one it follows"
            )
        role = item.get("role")
        if not (isinstance(role, str) and role in _ROLES):
            raise _invalid(f"{at}.role must be user or assistant")
        status = item.get("status")
        if not (isinstance(status, str) and status in _STATUSES):
            raise _invalid(f"{at}.status must be complete, cancelled, error or in_progress")
        content = item.get("content")
        if not isinstance(content, str):
            raise _invalid(f"{at}.content must be a string")
        if not is_utf8(content):
            raise _invalid(f"{at}.content holds a lone surrogate, which is not text")
        seen.add(ident)
        messages.append(
            ImportedMessage(
                key=str(ident),
                parent_key=None if parent_id is None else str(parent_id),
                role="user" if role == "user" else "assistant",
                content=content,
                status=_STATUSES[status],
                created_at=_rfc3339(item.get("created_at", _MISSING), f"{at}.created_at"),
                backend=_optional_text(item, "backend", at),
                model=_optional_text(item, "model", at),
                usage=_usage(item.get("usage"), f"{at}.usage"),
            )
        )
    return tuple(messages)


def _usage(value: object, where: str) -> dict[str, Any] | None:
    """Token counts: an object of non-negative integers, as replies store them."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid(f"{where} must be an object of token counts or null")
    for name, count in value.items():
        if not isinstance(name, str) or not is_utf8(name):
            raise _invalid(f"{where} must be an object of token counts or null")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= _MAX_ID:
            raise _invalid(f"{_member(where, name)} must be a non-negative integer")
    return dict(value)


# ChatGPT -----------------------------------------------------------------------------------


class _NodeAt:
    """Where a node of a mapping is, for an error message; formatted only when one is
    raised, since quoting every node's id would slow down a large import."""

    __slots__ = ("key", "mapping")

    def __init__(self, mapping: str, key: str) -> None:
        self.mapping = mapping
        self.key = key

    def __str__(self) -> str:
        return f"{self.mapping}[{_quote(self.key)}]"


@dataclass(frozen=True)
class _Text:
    """What is kept of one ChatGPT message."""

    role: Role
    content: str
    created_at: datetime
    model: str | None


def _parse_chatgpt(data: dict[Any, Any], where: str, budget: _Budget) -> ImportedSession:
    mapping = data["mapping"]
    at_mapping = _at(where, "mapping")
    if not isinstance(mapping, dict):
        raise _invalid(f"{at_mapping} must be an object of nodes")
    title = _optional_text(data, "title", where)
    started = _unix_time(data.get("create_time"))
    if started is None:
        raise _invalid(f"{_at(where, 'create_time')} must be {_SECONDS}")
    current = data.get("current_node")
    if current is not None and not isinstance(current, str):
        raise _invalid(f"{_at(where, 'current_node')} must be a node id or null")
    if current is not None and current not in mapping:
        raise _invalid(
            f"{_at(where, 'current_node')} {_quote(current)} is not a node of {at_mapping}"
        )

    parents: dict[str, str | None] = {}
    kept: dict[str, _Text] = {}
    for key, node in mapping.items():
        if not isinstance(key, str) or not is_utf8(key):
            shown = f"[{_quote(key)}]" if isinstance(key, str) else ""
            raise _invalid(f"{at_mapping}{shown} has a node id that is not text")
        at = _NodeAt(at_mapping, key)
        if not isinstance(node, dict):
            raise _invalid(f"{at} must be an object")
        parent = node.get("parent")
        if parent is not None and not isinstance(parent, str):
            raise _invalid(f"{at}.parent must be a node id or null")
        parents[key] = parent
        message = node.get("message")
        if message is None:
            continue
        if not isinstance(message, dict):
            raise _invalid(f"{at}.message must be an object or null")
        text = _chatgpt_text(message, at, started)
        if text is not None:
            budget.take(1)
            kept[key] = text
    for key, parent in parents.items():
        if parent is not None and parent not in parents:
            at = _NodeAt(at_mapping, key)
            raise _invalid(f"{at}.parent {_quote(parent)} is not a node of {at_mapping}")

    nearest = _nearest_kept(parents, kept, at_mapping)
    kept_parent = {
        key: None if (parent := parents[key]) is None else nearest[parent] for key in kept
    }
    messages = tuple(
        ImportedMessage(
            key=key,
            parent_key=kept_parent[key],
            role=kept[key].role,
            content=kept[key].content,
            status="complete",
            created_at=kept[key].created_at,
            backend=None,
            model=kept[key].model,
            usage=None,
        )
        for key in _parents_first(kept, kept_parent)
    )
    leaf_key = nearest[current] if current is not None else None
    return ImportedSession(
        title=title or None,
        # A ChatGPT model means nothing to this server's backends: the session goes on
        # with the default ones, and each reply keeps the model that wrote it.
        backend=None,
        model=None,
        system_prompt=None,
        created_at=started,
        messages=messages,
        leaf_key=leaf_key if leaf_key is not None else _newest(messages),
    )


def _chatgpt_text(message: dict[Any, Any], at: _NodeAt, started: datetime) -> _Text | None:
    """The user or assistant text a reader of the conversation saw, or None."""
    author = message.get("author")
    if not isinstance(author, dict):
        raise _invalid(f"{at}.message.author must be an object")
    role = author.get("role")
    if not isinstance(role, str):
        raise _invalid(f"{at}.message.author.role must be a string")
    if role not in _ROLES:
        return None  # system, tool
    metadata = message.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise _invalid(f"{at}.message.metadata must be an object or null")
    if metadata.get("is_visually_hidden_from_conversation") is True:
        return None
    if role == "assistant" and message.get("recipient", "all") not in ("all", None):
        return None  # a call to a tool (code, a search, an image), not a reply
    content = message.get("content")
    if not isinstance(content, dict):
        raise _invalid(f"{at}.message.content must be an object")
    parts = content.get("parts")
    if parts is None:
        return None  # code, browsing output, custom instructions...
    if not isinstance(parts, list):
        raise _invalid(f"{at}.message.content.parts must be an array or null")
    # Other parts (images, audio) are objects; this server stores text only.
    text = "\n\n".join(part for part in parts if isinstance(part, str) and part)
    if not text.strip():
        return None
    if not is_utf8(text):
        raise _invalid(f"{at}.message.content.parts holds a lone surrogate, which is not text")
    model = metadata.get("model_slug")
    sent = message.get("create_time")
    created_at = started if sent is None else _unix_time(sent)
    if created_at is None:
        raise _invalid(f"{at}.message.create_time must be {_SECONDS} or null")
    return _Text(
        role="user" if role == "user" else "assistant",
        content=text,
        created_at=created_at,
        model=model if role == "assistant" and isinstance(model, str) and is_utf8(model) else None,
    )


def _nearest_kept(
    parents: Mapping[str, str | None], kept: Mapping[str, object], where: str
) -> dict[str, str | None]:
    """For every node, the nearest kept node among itself and its ancestors (None when
    there is none), found by walking up without recursion; raises on a cycle."""
    nearest: dict[str, str | None] = {}
    for start in parents:
        path: list[str] = []
        on_path: set[str] = set()
        node: str | None = start
        while node is not None and node not in nearest:
            if node in on_path:
                raise _invalid(f"{where} has a cycle: node {_quote(node)} is its own ancestor")
            on_path.add(node)
            path.append(node)
            node = parents[node]
        found = None if node is None else nearest[node]
        for step in reversed(path):
            if step in kept:
                found = step
            nearest[step] = found
    return nearest


def _parents_first(kept: Mapping[str, _Text], kept_parent: Mapping[str, str | None]) -> list[str]:
    """The kept nodes breadth first from the roots, siblings oldest first (then by key)."""
    children: dict[str | None, list[str]] = collections.defaultdict(list)
    for key, parent in kept_parent.items():
        children[parent].append(key)
    for siblings in children.values():
        siblings.sort(key=lambda key: (kept[key].created_at, key))
    order: list[str] = []
    queue = collections.deque(children[None])
    while queue:
        key = queue.popleft()
        order.append(key)
        queue.extend(children[key])
    return order


# Values --------------------------------------------------------------------------------------


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest("invalid_import", message)


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _member(where: str, name: str) -> str:
    """``where.name``, or ``where["name"]`` for a name that would not read as one."""
    if name.isidentifier() and len(name) <= _QUOTE_CHARS:
        return f"{where}.{name}"
    return f"{where}[{_quote(name)}]"


def _quote(text: str) -> str:
    """A string from the input for an error message: short, and ASCII so that it can
    always be sent (a lone surrogate would not encode as UTF-8)."""
    return json.dumps(text if len(text) <= _QUOTE_CHARS else text[:_QUOTE_CHARS] + "...")


def _is_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _MAX_ID


def _optional_text(data: dict[Any, Any], name: str, where: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{_at(where, name)} must be a string or null")
    if not is_utf8(value):
        raise _invalid(f"{_at(where, name)} holds a lone surrogate, which is not text")
    return value


def _rfc3339(value: object, where: str) -> datetime:
    """A required RFC 3339 timestamp with its offset, in UTC."""
    if value is _MISSING:
        raise _invalid(f"{where} is missing: give an RFC 3339 time such as 2026-11-24T10:00:00Z")
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        try:
            return datetime.fromisoformat(value.upper()).astimezone(UTC)
        except (ValueError, OverflowError):
            pass  # a day or an hour out of range, or beyond year 9999 in UTC
    raise _invalid(f"{where} must be an RFC 3339 time such as 2026-11-24T10:00:00Z")


def _unix_time(value: object) -> datetime | None:
    """A time in seconds since 1970 (ChatGPT's) in UTC, or None if ``value`` is not one."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (ValueError, OverflowError, OSError):
            pass  # NaN, infinite, or beyond the years 1 to 9999
    return None


def _newest(messages: tuple[ImportedMessage, ...]) -> str | None:
    """The key of the newest message (the last listed of equally old ones)."""
    if not messages:
        return None
    index = max(range(len(messages)), key=lambda i: (messages[i].created_at, i))
    return messages[index].key
