"""The SQLite store's statements: functions of one connection, run on the store's threads
(:mod:`chatbot.stores.sqlite_db`), each inside the transaction of its caller."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any, Literal

from chatbot.errors import DuplicateMessage, DuplicateReply, MessageNotFound, NotFound
from chatbot.stores.base import (
    LEAF,
    Message,
    Role,
    Session,
    Share,
    Status,
    new_session_id,
    utcnow,
)
from chatbot.stores.sqlite_migrations import MIGRATIONS
from chatbot.stores.sqlite_usage import record
from chatbot.transfer import ImportedSession

SESSION_COLUMNS = (
    "s.id, s.owner, s.title, s.backend, s.model, s.system_prompt, s.created_at, s.updated_at, "
    "s.message_count, s.leaf_id"
)
MESSAGE_COLUMNS = (
    "id, session_id, role, content, status, created_at, client_id, reply_to, backend, model, "
    "usage, parent_id"
)
INSERT_MESSAGE = (
    "INSERT INTO messages (session_id, role, content, status, client_id, reply_to, backend, "
    "model, usage, created_at, parent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
#: Above any message id: "no upper bound" for the branch walks below.
NO_BOUND = 2**62


def stamp(when: datetime) -> str:
    return when.isoformat(timespec="microseconds")


def usage_json(usage: dict[str, Any] | None) -> str | None:
    return json.dumps(usage) if usage is not None else None


def session_of(row: sqlite3.Row) -> Session:
    return Session(
        id=row["id"],
        owner=row["owner"],
        title=row["title"],
        backend=row["backend"],
        model=row["model"],
        system_prompt=row["system_prompt"],
        created_at=datetime.fromisoformat(row["created_at"]),
        updated_at=datetime.fromisoformat(row["updated_at"]),
        message_count=row["message_count"],
        leaf_id=row["leaf_id"],
    )


def message_of(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        session_id=row["session_id"],
        role=row["role"],
        content=row["content"],
        status=row["status"],
        created_at=datetime.fromisoformat(row["created_at"]),
        client_id=row["client_id"],
        reply_to=row["reply_to"],
        backend=row["backend"],
        model=row["model"],
        usage=json.loads(row["usage"]) if row["usage"] else None,
        parent_id=row["parent_id"],
    )


def touch(db: sqlite3.Connection, owner: str, session_id: str, now: str, added: int) -> int | None:
    """Mark the owner's session active and count ``added`` messages; the current branch's
    leaf. ``NotFound`` if the session is not theirs."""
    row = db.execute(
        "UPDATE sessions SET updated_at = ?, message_count = message_count + ? "
        "WHERE id = ? AND owner = ? RETURNING leaf_id",
        (now, added, session_id, owner),
    ).fetchone()
    if row is None:
        raise NotFound()
    return row[0]  # type: ignore[no-any-return]


def find_user_message(
    db: sqlite3.Connection, session_id: str, client_id: str, role: Role = "user"
) -> Message | None:
    """The message stored with this client id: a user message, or with ``role="assistant"``
    a regenerated reply."""
    row = db.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages "
        "WHERE session_id = ? AND client_id = ? AND role = ?",
        (session_id, client_id, role),
    ).fetchone()
    return message_of(row) if row is not None else None


def find_reply(db: sqlite3.Connection, session_id: str, message_id: int) -> Message | None:
    """The first reply to a user message (the one its client id was answered with)."""
    row = db.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE reply_to = ? AND session_id = ? "
        "ORDER BY id LIMIT 1",
        (message_id, session_id),
    ).fetchone()
    return message_of(row) if row is not None else None


def get_message(db: sqlite3.Connection, session_id: str, message_id: int) -> Message:
    """A message of the session; ``MessageNotFound`` otherwise."""
    row = db.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ? AND session_id = ?",
        (message_id, session_id),
    ).fetchone()
    if row is None:
        raise MessageNotFound()
    return message_of(row)


def has_message(db: sqlite3.Connection, session_id: str, message_id: int) -> bool:
    row = db.execute(
        "SELECT 1 FROM messages WHERE id = ? AND session_id = ?", (message_id, session_id)
    ).fetchone()
    return row is not None


def set_leaf(db: sqlite3.Connection, session_id: str, leaf_id: int | None) -> None:
    db.execute("UPDATE sessions SET leaf_id = ? WHERE id = ?", (leaf_id, session_id))


def newest_descendant(db: sqlite3.Connection, session_id: str, message_id: int) -> int:
    """The leaf reached from a message by following its newest child at each step."""
    row = db.execute(
        "WITH RECURSIVE down(id) AS (SELECT ? UNION ALL "
        "SELECT (SELECT c.id FROM messages c INDEXED BY messages_parent "
        "WHERE c.session_id = ? AND c.parent_id = down.id "
        "ORDER BY c.id DESC LIMIT 1) FROM down WHERE down.id IS NOT NULL) "
        "SELECT MAX(id) FROM down",
        (message_id, session_id),
    ).fetchone()
    return int(row[0])


def branch_ids(
    db: sqlite3.Connection, session_id: str, start: int, *, below: int, want: int
) -> list[int]:
    """Walk up a branch from ``start`` (towards the root, each step a primary-key lookup)
    and return the ids of at most ``want`` messages with an id under ``below``, newest
    first. Ids grow along a branch, so the walk stops as soon as it has them."""
    rows = db.execute(
        "WITH RECURSIVE up(id, parent_id, n) AS ("
        "SELECT id, parent_id, id < ? FROM messages WHERE id = ? AND session_id = ? "
        "UNION ALL SELECT m.id, m.parent_id, up.n + (m.id < ?) FROM messages m "
        "JOIN up ON m.id = up.parent_id WHERE up.n < ?) "
        "SELECT id FROM up WHERE id < ? ORDER BY id DESC LIMIT ?",
        (below, start, session_id, below, want, below, want),
    ).fetchall()
    return [row[0] for row in rows]


def branch_ids_after(
    db: sqlite3.Connection, session_id: str, leaf: int, *, after: int, want: int
) -> list[int]:
    """The ids of at most ``want`` messages of the branch ending at ``leaf`` that come
    after the id ``after``, oldest first (the walk from the leaf stops at ``after``)."""
    rows = db.execute(
        "WITH RECURSIVE up(id, parent_id) AS ("
        "SELECT id, parent_id FROM messages WHERE id = ? AND session_id = ? AND id > ? "
        "UNION ALL SELECT m.id, m.parent_id FROM messages m "
        "JOIN up ON m.id = up.parent_id WHERE m.id > ?) "
        "SELECT id FROM up ORDER BY id ASC LIMIT ?",
        (leaf, session_id, after, after, want),
    ).fetchall()
    return [row[0] for row in rows]


def messages_by_id(db: sqlite3.Connection, ids: list[int]) -> list[Message]:
    """The messages with these ids, in the order given."""
    if not ids:
        return []
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN ({marks})", ids
    ).fetchall()
    found = {row["id"]: message_of(row) for row in rows}
    return [found[i] for i in ids if i in found]


def siblings(
    db: sqlite3.Connection, session_id: str, messages: list[Message]
) -> dict[int, list[int]]:
    """For each message, the ids of all messages with the same parent, oldest first."""
    parents = {m.parent_id for m in messages}
    children: dict[int | None, list[int]] = {}
    known = sorted(p for p in parents if p is not None)
    if known:
        marks = ",".join("?" * len(known))
        for parent_id, child in db.execute(
            f"SELECT parent_id, id FROM messages INDEXED BY messages_parent "
            f"WHERE session_id = ? AND parent_id IN ({marks}) ORDER BY parent_id, id",
            (session_id, *known),
        ).fetchall():
            children.setdefault(parent_id, []).append(child)
    if None in parents:
        children[None] = [
            row[0]
            for row in db.execute(
                "SELECT id FROM messages INDEXED BY messages_parent "
                "WHERE session_id = ? AND parent_id IS NULL ORDER BY id",
                (session_id,),
            ).fetchall()
        ]
    return {m.id: children.get(m.parent_id, [m.id]) for m in messages}


def subtree_ids(db: sqlite3.Connection, session_id: str, message_id: int) -> list[int]:
    """A message and everything below it."""
    rows = db.execute(
        "WITH RECURSIVE sub(id) AS (SELECT ? UNION ALL "
        "SELECT c.id FROM sub JOIN messages c INDEXED BY messages_parent "
        "ON c.session_id = ? AND c.parent_id = sub.id) "
        "SELECT id FROM sub",
        (message_id, session_id),
    ).fetchall()
    return [row[0] for row in rows]


def owns(db: sqlite3.Connection, owner: str, session_id: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM sessions WHERE id = ? AND owner = ?", (session_id, owner)
    ).fetchone()
    return row is not None


def insert_message(
    db: sqlite3.Connection,
    owner: str,
    session_id: str,
    now: datetime,
    *,
    role: Role,
    content: str,
    status: Status = "complete",
    client_id: str | None = None,
    reply_to: int | None = None,
    backend: str | None = None,
    model: str | None = None,
    usage: dict[str, Any] | None = None,
    parent: int | Literal["leaf"] | None = LEAF,
) -> tuple[Message, int | None]:
    """Add a message to the owner's session: it, and the current branch's leaf before it.

    The parent is the current leaf (``LEAF``, a plain message), the user message a reply
    answers (``reply_to``), or the one given (an edit; ``None`` makes a new root). A message
    whose parent is the leaf becomes the leaf; an edit always does.

    A user message whose client id the session holds raises :class:`DuplicateMessage` with
    the stored message and its reply, a regeneration's :class:`DuplicateReply`; the caller's
    transaction (or savepoint) is then rolled back, and nothing is written. The unique
    indexes decide, in the insert itself: no lookup before it. A parent that is not a
    message of the session (deleted meanwhile) raises :class:`MessageNotFound`.
    """
    when = stamp(now)
    leaf = touch(db, owner, session_id, when, 1)
    parent_id = parent if parent != LEAF else (reply_to if reply_to is not None else leaf)
    if parent_id is not None and parent_id != leaf and not has_message(db, session_id, parent_id):
        raise MessageNotFound()
    cursor = db.execute(
        INSERT_MESSAGE + " ON CONFLICT DO NOTHING",
        (session_id, role, content, status, client_id, reply_to, backend, model,
         usage_json(usage), when, parent_id),
    )  # fmt: skip
    if cursor.rowcount == 0:
        assert client_id is not None
        if role == "assistant":
            raise DuplicateReply(find_user_message(db, session_id, client_id, "assistant"))
        found = find_user_message(db, session_id, client_id)
        assert found is not None
        raise DuplicateMessage(found, find_reply(db, session_id, found.id))
    assert cursor.lastrowid is not None
    if role == "assistant":
        # The reply and the tokens it used are committed together.
        record(db, owner, now, backend, model, usage)
    message = Message(
        id=cursor.lastrowid, session_id=session_id, role=role, content=content,
        status=status, created_at=now, client_id=client_id, reply_to=reply_to,
        backend=backend, model=model, usage=usage, parent_id=parent_id,
    )  # fmt: skip
    if parent_id == leaf or parent != LEAF:
        set_leaf(db, session_id, message.id)
    return message, leaf


def migrate(db: sqlite3.Connection) -> list[str]:
    db.execute(
        "CREATE TABLE IF NOT EXISTS chatbot_migrations "
        "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in db.execute("SELECT name FROM chatbot_migrations").fetchall()}
    applied_now: list[str] = []
    for name, statements in MIGRATIONS:
        if name in done:
            continue
        for statement in statements:
            db.execute(statement)
        db.execute(
            "INSERT INTO chatbot_migrations (name, applied_at) VALUES (?, ?)",
            (name, stamp(utcnow())),
        )
        applied_now.append(name)
    return applied_now


def share_of(row: sqlite3.Row) -> Share:
    return Share(
        id=row["id"],
        session_id=row["session_id"],
        title=row["title"],
        created_at=datetime.fromisoformat(row["created_at"]),
        messages=json.loads(row["messages"]),
    )


def import_session(
    db: sqlite3.Connection, owner: str, imported: ImportedSession, backend: str
) -> Session:
    """Insert an imported conversation as a new session of ``owner``: its tree with new
    ids, its timestamps, and its leaf as the current branch."""
    session_id = new_session_id()
    created = stamp(imported.created_at)
    db.execute(
        "INSERT INTO sessions (id, owner, title, backend, model, system_prompt, created_at, "
        "updated_at, message_count) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, 0)",
        (session_id, owner, imported.title, backend, imported.system_prompt, created, created),
    )
    ids: dict[str, int] = {}
    roles: dict[int, str] = {}
    newest = created
    for message in imported.messages:
        parent_id = ids[message.parent_key] if message.parent_key is not None else None
        reply_to = None
        if message.role == "assistant" and parent_id is not None and roles[parent_id] == "user":
            reply_to = parent_id
        when = stamp(message.created_at)
        newest = max(newest, when)
        cursor = db.execute(
            INSERT_MESSAGE,
            (session_id, message.role, message.content, message.status, None, reply_to,
             message.backend, message.model, usage_json(message.usage), when, parent_id),
        )  # fmt: skip
        assert cursor.lastrowid is not None
        ids[message.key] = cursor.lastrowid
        roles[cursor.lastrowid] = message.role
    leaf = ids[imported.leaf_key] if imported.leaf_key is not None else None
    row = db.execute(
        "UPDATE sessions SET leaf_id = ?, message_count = ?, updated_at = ? WHERE id = ? "
        f"RETURNING {SESSION_COLUMNS.replace('s.', '')}",
        (leaf, len(ids), newest, session_id),
    ).fetchone()
    return session_of(row)
