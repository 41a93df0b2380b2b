"""The SQLite session store.

WAL journal, a busy timeout for other processes, foreign keys on, and
``synchronous=FULL`` by default so that a committed message survives a crash of the
process or of the machine. Writes are group-committed on one thread and reads run on
another (see :mod:`chatbot.stores.sqlite_db`); each store method is one unit of work there,
so a message costs one trip to each thread at most.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from chatbot.errors import (
    ConfigError,
    NotFound,
    TooManySessions,
    why_not_created,
)
from chatbot.stores import sqlite_sql as sql
from chatbot.stores.base import (
    Message,
    MessagePage,
    Role,
    Session,
    SessionPage,
    SessionStore,
    Status,
    UserMessage,
    decode_cursor,
    encode_cursor,
    new_session_id,
    utcnow,
)
from chatbot.stores.sqlite_db import Database

#: ``?synchronous=`` values a database URL may ask for (see docs/performance.md).
SYNCHRONOUS = ("FULL", "NORMAL")


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


def synchronous_from_url(url: str) -> str:
    """``?synchronous=normal`` trades the last commits on a power loss (never on a crash of
    the process) for fewer fsyncs; FULL, the default, keeps every acknowledged message."""
    values = parse_qs(urlsplit(url).query).get("synchronous", ["FULL"])
    value = values[-1].upper()
    if value not in SYNCHRONOUS:
        raise ConfigError(
            f"the SQLite URL asks for synchronous={values[-1]!r}; write ?synchronous=full "
            "(the default) or ?synchronous=normal (see docs/performance.md)"
        )
    return value


class SQLiteStore(SessionStore):
    """Sessions and messages in one SQLite file."""

    def __init__(self, url: str) -> None:
        self.path = path_from_url(url)
        self.db = Database(self.path, synchronous_from_url(url))

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
            await self.db.open()
        except (OSError, sqlite3.Error) as exc:
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
        await self.db.close()

    async def migrate(self) -> list[str]:
        try:
            return await self.db.write(sql.migrate)
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None

    async def applied_migrations(self) -> list[str]:
        def applied(db: sqlite3.Connection) -> list[str]:
            exists = db.execute(
                "SELECT name FROM sqlite_master "
                "WHERE type = 'table' AND name = 'chatbot_migrations'"
            ).fetchall()
            if not exists:
                return []
            rows = db.execute("SELECT name FROM chatbot_migrations ORDER BY name").fetchall()
            return [row[0] for row in rows]

        try:
            return await self.db.read(applied)
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None

    async def ping(self) -> None:
        await self.db.read(lambda db: db.execute("SELECT 1").fetchall())

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
        now = utcnow()
        session = Session(
            id=new_session_id(),
            owner=owner,
            title=title,
            backend=backend,
            model=model,
            system_prompt=system_prompt,
            created_at=now,
            updated_at=now,
        )

        def insert(db: sqlite3.Connection) -> None:
            # One statement: the count and the insert cannot be split by another writer,
            # in this process or another (BEGIN IMMEDIATE holds the database's write lock).
            cursor = db.execute(
                "INSERT INTO sessions (id, owner, title, backend, model, system_prompt, "
                "created_at, updated_at, message_count) "
                "SELECT ?, ?, ?, ?, ?, ?, ?, ?, 0 "
                "WHERE ? IS NULL OR (SELECT COUNT(*) FROM sessions WHERE owner = ?) < ?",
                (
                    session.id, owner, title, backend, model, system_prompt,
                    sql.stamp(now), sql.stamp(now), limit, owner, limit,
                ),
            )  # fmt: skip
            if cursor.rowcount == 0:
                assert limit is not None
                raise TooManySessions(limit)

        await self.db.write(insert)
        return session

    async def get_session(self, owner: str, session_id: str) -> Session:
        def get(db: sqlite3.Connection) -> Session:
            row = db.execute(
                f"SELECT {sql.SESSION_COLUMNS} FROM sessions s WHERE s.id = ? AND s.owner = ?",
                (session_id, owner),
            ).fetchone()
            if row is None:
                raise NotFound()
            return sql.session_of(row)

        return await self.db.read(get)

    async def list_sessions(
        self, owner: str, *, limit: int, cursor: str | None = None
    ) -> SessionPage:
        query = f"SELECT {sql.SESSION_COLUMNS} FROM sessions s WHERE s.owner = ?"
        params: tuple[Any, ...] = (owner,)
        if cursor is not None:
            when, last_id = decode_cursor(cursor)
            query += " AND (s.updated_at < ? OR (s.updated_at = ? AND s.id < ?))"
            params += (sql.stamp(when), sql.stamp(when), last_id)
        query += " ORDER BY s.updated_at DESC, s.id DESC LIMIT ?"
        rows = await self.db.read(lambda db: db.execute(query, (*params, limit + 1)).fetchall())
        sessions = [sql.session_of(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = sessions[-1]
            next_cursor = encode_cursor(last.updated_at, last.id)
        return SessionPage(sessions=sessions, next_cursor=next_cursor)

    async def count_sessions(self, owner: str) -> int:
        rows = await self.db.read(
            lambda db: db.execute(
                "SELECT COUNT(*) FROM sessions WHERE owner = ?", (owner,)
            ).fetchall()
        )
        return int(rows[0][0])

    async def rename_session(self, owner: str, session_id: str, title: str | None) -> Session:
        def rename(db: sqlite3.Connection) -> Session:
            row = db.execute(
                "UPDATE sessions SET title = ? WHERE id = ? AND owner = ? "
                f"RETURNING {sql.SESSION_COLUMNS.replace('s.', '')}",
                (title, session_id, owner),
            ).fetchone()
            if row is None:
                raise NotFound()
            return sql.session_of(row)

        return await self.db.write(rename)

    async def delete_session(self, owner: str, session_id: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            cursor = db.execute(
                "DELETE FROM sessions WHERE id = ? AND owner = ?", (session_id, owner)
            )
            if cursor.rowcount == 0:
                raise NotFound()

        await self.db.write(delete)

    async def add_user_message(
        self, owner: str, session_id: str, *, content: str, client_id: str | None = None
    ) -> UserMessage:
        now = utcnow()

        def add(db: sqlite3.Connection) -> UserMessage:
            message, before = sql.insert_message(
                db, owner, session_id, now, role="user", content=content, client_id=client_id
            )
            return UserMessage(message, before)

        return await self.db.write(add)

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
        if replacing is not None:
            return await self.replace_reply(
                owner, session_id, replacing, content=content, status=status,
                backend=backend, model=model, usage=usage,
            )  # fmt: skip
        return await self.add_message(
            owner, session_id, role="assistant", content=content, status=status,
            reply_to=reply_to, backend=backend, model=model, usage=usage,
        )  # fmt: skip

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

        def add(db: sqlite3.Connection) -> Message:
            message, _ = sql.insert_message(
                db, owner, session_id, now, role=role, content=content, status=status,
                client_id=client_id, reply_to=reply_to, backend=backend, model=model,
                usage=usage,
            )  # fmt: skip
            return message

        return await self.db.write(add)

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
        now = sql.stamp(utcnow())

        def replace(db: sqlite3.Connection) -> Message:
            sql.touch(db, owner, session_id, now, 0)
            row = db.execute(
                "UPDATE messages SET content = ?, status = ?, backend = ?, model = ?, "
                "usage = ?, created_at = ? "
                "WHERE id = ? AND session_id = ? AND role = 'assistant' "
                f"RETURNING {sql.MESSAGE_COLUMNS}",
                (
                    content,
                    status,
                    backend,
                    model,
                    sql.usage_json(usage),
                    now,
                    message_id,
                    session_id,
                ),
            ).fetchone()
            if row is None:
                raise NotFound()
            return sql.message_of(row)

        return await self.db.write(replace)

    async def find_user_message(
        self, owner: str, session_id: str, client_id: str
    ) -> Message | None:
        def find(db: sqlite3.Connection) -> Message | None:
            if not sql.owns(db, owner, session_id):
                return None
            return sql.find_user_message(db, session_id, client_id)

        return await self.db.read(find)

    async def find_reply(self, owner: str, session_id: str, message_id: int) -> Message | None:
        def find(db: sqlite3.Connection) -> Message | None:
            if not sql.owns(db, owner, session_id):
                return None
            return sql.find_reply(db, session_id, message_id)

        return await self.db.read(find)

    async def list_messages(
        self,
        owner: str,
        session_id: str,
        *,
        limit: int,
        before: int | None = None,
        after: int | None = None,
    ) -> MessagePage:
        query = f"SELECT {sql.MESSAGE_COLUMNS} FROM messages WHERE session_id = ?"
        params: tuple[Any, ...] = (session_id,)
        if after is not None:
            query += " AND id > ? ORDER BY id ASC LIMIT ?"
            params += (after, limit + 1)
        else:
            if before is not None:
                query += " AND id < ?"
                params += (before,)
            query += " ORDER BY id DESC LIMIT ?"
            params += (limit + 1,)

        def page(db: sqlite3.Connection) -> list[sqlite3.Row]:
            # One snapshot: the session cannot vanish between the check and the page.
            db.execute("BEGIN")
            try:
                if not sql.owns(db, owner, session_id):
                    raise NotFound()
                return db.execute(query, params).fetchall()
            finally:
                db.execute("COMMIT")

        rows = await self.db.read(page)
        messages = [sql.message_of(row) for row in rows[:limit]]
        if after is None:
            messages.reverse()
        return MessagePage(messages=messages, has_more=len(rows) > limit)
