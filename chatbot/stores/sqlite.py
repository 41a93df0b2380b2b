"""The SQLite session store, on aiosqlite.

One connection, WAL journal, a busy timeout for other processes, foreign keys on, and
``synchronous=FULL`` so that a committed message survives a crash of the process or the
machine. An asyncio lock serialises statements so that one coroutine's transaction never
interleaves with another's on the shared connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosqlite

from chatbot.errors import ConfigError, DuplicateMessage, NotFound, why_not_created
from chatbot.stores.base import (
    Message,
    MessagePage,
    Role,
    Session,
    SessionPage,
    SessionStore,
    Status,
    decode_cursor,
    encode_cursor,
    new_session_id,
    utcnow,
)

# Ordered, named, recorded in chatbot_migrations; never edit one that has been released.
MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "0001_initial",
        [
            """
            CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                title TEXT,
                backend TEXT NOT NULL,
                model TEXT,
                system_prompt TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )
            """,
            # "sessions of a user by last activity"
            "CREATE INDEX sessions_owner_activity ON sessions (owner, updated_at, id)",
            """
            CREATE TABLE messages (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
                role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
                content TEXT NOT NULL,
                status TEXT NOT NULL
                    CHECK (status IN ('complete', 'cancelled', 'error', 'in_progress')),
                client_id TEXT,
                reply_to INTEGER REFERENCES messages (id) ON DELETE CASCADE,
                backend TEXT,
                model TEXT,
                usage TEXT,
                created_at TEXT NOT NULL
            )
            """,
            # "messages of a session after id X, limit N"
            "CREATE INDEX messages_session ON messages (session_id, id)",
            # A client's message id is stored once per session; a reply answers one message.
            """
            CREATE UNIQUE INDEX messages_client_id ON messages (session_id, client_id)
            WHERE client_id IS NOT NULL AND role = 'user'
            """,
            "CREATE UNIQUE INDEX messages_reply_to ON messages (reply_to) "
            "WHERE reply_to IS NOT NULL",
        ],
    ),
]

_SESSION_COLUMNS = (
    "s.id, s.owner, s.title, s.backend, s.model, s.system_prompt, s.created_at, s.updated_at, "
    "(SELECT COUNT(*) FROM messages m WHERE m.session_id = s.id) AS message_count"
)
_MESSAGE_COLUMNS = (
    "id, session_id, role, content, status, created_at, client_id, reply_to, backend, model, usage"
)


def path_from_url(url: str) -> str:
    """``sqlite:///./chatbot.db`` is relative, ``sqlite:////var/x.db`` absolute."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc:
        raise ConfigError(
            f"not a SQLite URL: {parts.scheme}://{parts.netloc}...; "
            "write sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    path = unquote(parts.path)[1:]
    if not path:
        raise ConfigError("the SQLite URL names no file; write sqlite:///./chatbot.db")
    return path


def _try_to_open(path: str) -> None:
    sqlite3.connect(path).close()


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="microseconds")


def _usage(usage: dict[str, Any] | None) -> str | None:
    return json.dumps(usage) if usage is not None else None


def _session(row: sqlite3.Row) -> Session:
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


def _message(row: sqlite3.Row) -> Message:
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


class SQLiteStore(SessionStore):
    """Sessions and messages in one SQLite file."""

    def __init__(self, url: str) -> None:
        self.path = path_from_url(url)
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    async def open(self) -> None:
        if self.path != ":memory:":
            folder = Path(self.path).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                reason = why_not_created(folder, exc)
                raise ConfigError(
                    f"cannot create the folder {folder} of the SQLite database: {reason}; "
                    "point CHATBOT_DATABASE_URL at a file in a writable folder"
                ) from None
        try:
            if self.path != ":memory:":
                # When the file cannot be opened at all, aiosqlite stops its thread without
                # waiting for it, and the thread then fails on the closed event loop; an
                # open of our own finds that out first.
                await asyncio.to_thread(_try_to_open, self.path)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            for pragma in (
                "PRAGMA journal_mode = WAL",
                "PRAGMA busy_timeout = 5000",
                "PRAGMA foreign_keys = ON",
                "PRAGMA synchronous = FULL",
            ):
                await self._db.execute(pragma)
        except (OSError, sqlite3.Error) as exc:
            # Close now: aiosqlite's thread would otherwise keep the process alive after a
            # failed start.
            await self.close()
            raise self._unusable(exc) from None

    def _unusable(self, exc: OSError | sqlite3.Error) -> ConfigError:
        """The one-line error of a database file that cannot be opened or migrated."""
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if Path(self.path).is_dir():
            reason = "it is a folder"
        return ConfigError(
            f"cannot use the SQLite database {self.path}: {reason}; point "
            "CHATBOT_DATABASE_URL at a database file chatbot can read and write (a new one "
            "is created where none exists), or move a damaged file away"
        )

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        async with self._lock, self.db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE), committed or rolled back."""
        async with self._lock:
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    @staticmethod
    async def _touch(db: aiosqlite.Connection, owner: str, session_id: str, now: str) -> None:
        """Mark the owner's session active; ``NotFound`` if it is not theirs."""
        async with db.execute(
            "UPDATE sessions SET updated_at = ? WHERE id = ? AND owner = ?",
            (now, session_id, owner),
        ) as cursor:
            if cursor.rowcount == 0:
                raise NotFound()

    async def migrate(self) -> list[str]:
        try:
            return await self._migrate()
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None

    async def _migrate(self) -> list[str]:
        applied_now: list[str] = []
        async with self._write() as db:
            await db.execute(
                "CREATE TABLE IF NOT EXISTS chatbot_migrations "
                "(name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            async with db.execute("SELECT name FROM chatbot_migrations") as cursor:
                done = {row[0] for row in await cursor.fetchall()}
            for name, statements in MIGRATIONS:
                if name in done:
                    continue
                for statement in statements:
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO chatbot_migrations (name, applied_at) VALUES (?, ?)",
                    (name, _stamp(utcnow())),
                )
                applied_now.append(name)
        return applied_now

    async def applied_migrations(self) -> list[str]:
        try:
            rows = await self._fetchall(
                "SELECT name FROM sqlite_master "
                "WHERE type = 'table' AND name = 'chatbot_migrations'"
            )
            if not rows:
                return []
            rows = await self._fetchall("SELECT name FROM chatbot_migrations ORDER BY name")
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None
        return [row[0] for row in rows]

    async def ping(self) -> None:
        await self._fetchall("SELECT 1")

    async def create_session(
        self,
        owner: str,
        *,
        backend: str,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
    ) -> Session:
        now = utcnow()
        session_id = new_session_id()
        async with self._lock:
            await self.db.execute(
                "INSERT INTO sessions (id, owner, title, backend, model, system_prompt, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, owner, title, backend, model, system_prompt, _stamp(now), _stamp(now)),
            )
        return Session(
            id=session_id,
            owner=owner,
            title=title,
            backend=backend,
            model=model,
            system_prompt=system_prompt,
            created_at=now,
            updated_at=now,
        )

    async def get_session(self, owner: str, session_id: str) -> Session:
        rows = await self._fetchall(
            f"SELECT {_SESSION_COLUMNS} FROM sessions s WHERE s.id = ? AND s.owner = ?",
            (session_id, owner),
        )
        if not rows:
            raise NotFound()
        return _session(rows[0])

    async def list_sessions(
        self, owner: str, *, limit: int, cursor: str | None = None
    ) -> SessionPage:
        sql = f"SELECT {_SESSION_COLUMNS} FROM sessions s WHERE s.owner = ?"
        params: tuple[Any, ...] = (owner,)
        if cursor is not None:
            when, last_id = decode_cursor(cursor)
            sql += " AND (s.updated_at < ? OR (s.updated_at = ? AND s.id < ?))"
            params += (_stamp(when), _stamp(when), last_id)
        sql += " ORDER BY s.updated_at DESC, s.id DESC LIMIT ?"
        rows = await self._fetchall(sql, (*params, limit + 1))
        sessions = [_session(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = sessions[-1]
            next_cursor = encode_cursor(last.updated_at, last.id)
        return SessionPage(sessions=sessions, next_cursor=next_cursor)

    async def count_sessions(self, owner: str) -> int:
        rows = await self._fetchall("SELECT COUNT(*) FROM sessions WHERE owner = ?", (owner,))
        return int(rows[0][0])

    async def rename_session(self, owner: str, session_id: str, title: str | None) -> Session:
        async with (
            self._lock,
            self.db.execute(
                "UPDATE sessions SET title = ? WHERE id = ? AND owner = ?",
                (title, session_id, owner),
            ) as cursor,
        ):
            if cursor.rowcount == 0:
                raise NotFound()
        return await self.get_session(owner, session_id)

    async def delete_session(self, owner: str, session_id: str) -> None:
        async with (
            self._lock,
            self.db.execute(
                "DELETE FROM sessions WHERE id = ? AND owner = ?", (session_id, owner)
            ) as cursor,
        ):
            if cursor.rowcount == 0:
                raise NotFound()

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
        now = utcnow()
        try:
            async with self._write() as db:
                await self._touch(db, owner, session_id, _stamp(now))
                async with db.execute(
                    "INSERT INTO messages (session_id, role, content, status, client_id, "
                    "reply_to, backend, model, usage, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        session_id,
                        role,
                        content,
                        status,
                        client_id,
                        reply_to,
                        backend,
                        model,
                        _usage(usage),
                        _stamp(now),
                    ),
                ) as cursor:
                    message_id = cursor.lastrowid
        except sqlite3.IntegrityError as exc:
            if "client_id" in str(exc):
                raise DuplicateMessage() from None
            raise
        assert message_id is not None
        return Message(
            id=message_id,
            session_id=session_id,
            role=role,
            content=content,
            status=status,
            created_at=now,
            client_id=client_id,
            reply_to=reply_to,
            backend=backend,
            model=model,
            usage=usage,
        )

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
        now = _stamp(utcnow())
        async with self._write() as db:
            await self._touch(db, owner, session_id, now)
            async with db.execute(
                "UPDATE messages SET content = ?, status = ?, backend = ?, model = ?, "
                "usage = ?, created_at = ? "
                "WHERE id = ? AND session_id = ? AND role = 'assistant'",
                (content, status, backend, model, _usage(usage), now, message_id, session_id),
            ) as cursor:
                if cursor.rowcount == 0:
                    raise NotFound()
            async with db.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,)
            ) as cursor:
                row = await cursor.fetchone()
        assert row is not None
        return _message(row)

    async def find_user_message(
        self, owner: str, session_id: str, client_id: str
    ) -> Message | None:
        rows = await self._fetchall(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND role = 'user' "
            "AND client_id = ? AND session_id IN (SELECT id FROM sessions WHERE owner = ?)",
            (session_id, client_id, owner),
        )
        return _message(rows[0]) if rows else None

    async def find_reply(self, owner: str, session_id: str, message_id: int) -> Message | None:
        rows = await self._fetchall(
            f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE reply_to = ? AND session_id = ? "
            "AND session_id IN (SELECT id FROM sessions WHERE owner = ?)",
            (message_id, session_id, owner),
        )
        return _message(rows[0]) if rows else None

    async def list_messages(
        self,
        owner: str,
        session_id: str,
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
    ) -> MessagePage:
        await self.get_session(owner, session_id)
        sql = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE session_id = ?"
        params: tuple[Any, ...] = (session_id,)
        if after is not None:
            sql += " AND id > ? ORDER BY id ASC LIMIT ?"
            params += (after, limit + 1)
        else:
            if before is not None:
                sql += " AND id < ?"
                params += (before,)
            sql += " ORDER BY id DESC LIMIT ?"
            params += (limit + 1,)
        rows = await self._fetchall(sql, params)
        messages = [_message(row) for row in rows[:limit]]
        if after is None:
            messages.reverse()
        return MessagePage(messages=messages, has_more=len(rows) > limit)
