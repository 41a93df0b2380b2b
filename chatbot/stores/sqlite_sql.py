"""The SQLite store's statements: functions of one connection, run on the store's threads
(:mod:`chatbot.stores.sqlite_db`), each inside the transaction of its caller."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from chatbot.errors import DuplicateMessage, DuplicateReply, NotFound
from chatbot.stores.base import Message, Role, Session, Status, utcnow
from chatbot.stores.sqlite_migrations import MIGRATIONS

SESSION_COLUMNS = (
    "s.id, s.owner, s.title, s.backend, s.model, s.system_prompt, s.created_at, s.updated_at, "
    "s.message_count"
)
MESSAGE_COLUMNS = (
    "id, session_id, role, content, status, created_at, client_id, reply_to, backend, model, usage"
)
INSERT_MESSAGE = (
    "INSERT INTO messages (session_id, role, content, status, client_id, reply_to, backend, "
    "model, usage, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


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
    )


def touch(db: sqlite3.Connection, owner: str, session_id: str, now: str, added: int) -> int:
    """Mark the owner's session active and count ``added`` messages; the count before.
    ``NotFound`` if the session is not theirs."""
    row = db.execute(
        "UPDATE sessions SET updated_at = ?, message_count = message_count + ? "
        "WHERE id = ? AND owner = ? RETURNING message_count",
        (now, added, session_id, owner),
    ).fetchone()
    if row is None:
        raise NotFound()
    return int(row[0]) - added


def find_user_message(db: sqlite3.Connection, session_id: str, client_id: str) -> Message | None:
    row = db.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages "
        "WHERE session_id = ? AND client_id = ? AND role = 'user'",
        (session_id, client_id),
    ).fetchone()
    return message_of(row) if row is not None else None


def find_reply(db: sqlite3.Connection, session_id: str, message_id: int) -> Message | None:
    row = db.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE reply_to = ? AND session_id = ?",
        (message_id, session_id),
    ).fetchone()
    return message_of(row) if row is not None else None


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
) -> tuple[Message, int]:
    """Append a message to the owner's session; it and the session's message count before.

    A user message whose client id the session holds raises :class:`DuplicateMessage` with
    the stored message and its reply, a second reply to a message :class:`DuplicateReply`;
    the caller's transaction (or savepoint) is then rolled back, and nothing is written.
    The unique indexes decide, in the insert itself: no lookup before it.
    """
    when = stamp(now)
    before = touch(db, owner, session_id, when, 1)
    cursor = db.execute(
        INSERT_MESSAGE + " ON CONFLICT DO NOTHING",
        (session_id, role, content, status, client_id, reply_to, backend, model,
         usage_json(usage), when),
    )  # fmt: skip
    if cursor.rowcount == 0:
        found = None
        if role == "user" and client_id is not None:
            found = find_user_message(db, session_id, client_id)
        if found is not None:
            raise DuplicateMessage(found, find_reply(db, session_id, found.id))
        raise DuplicateReply()
    assert cursor.lastrowid is not None
    message = Message(
        id=cursor.lastrowid, session_id=session_id, role=role, content=content,
        status=status, created_at=now, client_id=client_id, reply_to=reply_to,
        backend=backend, model=model, usage=usage,
    )  # fmt: skip
    return message, before


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
