"""The SQLite session store.

WAL journal, a busy timeout for other processes, foreign keys on, and
``synchronous=FULL`` by default so that a committed message survives a crash of the
process or of the machine. Writes are group-committed on one thread and reads run on
another (see :mod:`chatbot.stores.sqlite_db`); each store method is one unit of work there,
so a message costs one trip to each thread at most.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from chatbot.errors import (
    ConfigError,
    MessageNotFound,
    NotFound,
    TooManySessions,
    why_not_created,
)
from chatbot.search import SearchQuery, match_expression
from chatbot.stores import sqlite_sql as sql
from chatbot.stores.base import (
    LEAF,
    Message,
    MessagePage,
    Role,
    SearchHit,
    Session,
    SessionPage,
    SessionStore,
    Share,
    Status,
    UserMessage,
    decode_cursor,
    encode_cursor,
    new_session_id,
    utcnow,
)
from chatbot.stores.sqlite_db import Database
from chatbot.stores.sqlite_usage import SQLiteUsage, record
from chatbot.transfer import ImportedSession

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


class SQLiteStore(SQLiteUsage, SessionStore):
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
        self,
        owner: str,
        session_id: str,
        *,
        content: str,
        client_id: str | None = None,
        parent: int | Literal["leaf"] | None = LEAF,
    ) -> UserMessage:
        now = utcnow()

        def add(db: sqlite3.Connection) -> UserMessage:
            message, leaf = sql.insert_message(
                db, owner, session_id, now, role="user", content=content,
                client_id=client_id, parent=parent,
            )  # fmt: skip
            return UserMessage(message, leaf)

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
        client_id: str | None = None,
    ) -> Message:
        if replacing is not None:
            return await self.replace_reply(
                owner, session_id, replacing, content=content, status=status,
                backend=backend, model=model, usage=usage,
            )  # fmt: skip
        return await self.add_message(
            owner, session_id, role="assistant", content=content, status=status,
            reply_to=reply_to, backend=backend, model=model, usage=usage, client_id=client_id,
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
        when = utcnow()
        now = sql.stamp(when)

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
            # The failed reply's tokens were used too: the new ones add to them.
            record(db, owner, when, backend, model, usage)
            return sql.message_of(row)

        return await self.db.write(replace)

    async def find_user_message(
        self, owner: str, session_id: str, client_id: str, role: Role = "user"
    ) -> Message | None:
        def find(db: sqlite3.Connection) -> Message | None:
            if not sql.owns(db, owner, session_id):
                return None
            return sql.find_user_message(db, session_id, client_id, role)

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
        leaf_id: int | None = None,
    ) -> MessagePage:
        def page(db: sqlite3.Connection) -> MessagePage:
            # One snapshot: the session cannot change between the walk and the rows.
            db.execute("BEGIN")
            try:
                leaf = self._leaf(db, owner, session_id, leaf_id)
                want = limit + 1
                if leaf is None:
                    ids: list[int] = []
                elif after is not None:
                    ids = sql.branch_ids_after(db, session_id, leaf, after=after, want=want)
                elif before is not None:
                    # Paging up through a message of the session continues from its
                    # parent; any other id bounds the branch's ids.
                    row = db.execute(
                        "SELECT parent_id FROM messages WHERE id = ? AND session_id = ?",
                        (before, session_id),
                    ).fetchone()
                    if row is not None:
                        parent = row[0]
                        ids = []
                        if parent is not None:
                            ids = sql.branch_ids(
                                db, session_id, parent, below=sql.NO_BOUND, want=want
                            )
                    else:
                        ids = sql.branch_ids(db, session_id, leaf, below=before, want=want)
                else:
                    ids = sql.branch_ids(db, session_id, leaf, below=sql.NO_BOUND, want=want)
                has_more = len(ids) > limit
                ids = ids[:limit]
                if after is None:
                    ids.reverse()
                messages = sql.messages_by_id(db, ids)
                return MessagePage(messages, has_more, sql.siblings(db, session_id, messages))
            finally:
                db.execute("COMMIT")

        return await self.db.read(page)

    @staticmethod
    def _leaf(
        db: sqlite3.Connection, owner: str, session_id: str, leaf_id: int | None
    ) -> int | None:
        """The leaf of the branch to read: ``leaf_id`` (a message of the session) or the
        session's current one. ``NotFound`` for a session that is not the owner's."""
        row = db.execute(
            "SELECT leaf_id FROM sessions WHERE id = ? AND owner = ?", (session_id, owner)
        ).fetchone()
        if row is None:
            raise NotFound()
        if leaf_id is None:
            return row[0]  # type: ignore[no-any-return]
        if not sql.has_message(db, session_id, leaf_id):
            raise MessageNotFound()
        return leaf_id

    async def branch_to(
        self, owner: str, session_id: str, message_id: int, *, limit: int
    ) -> list[Message]:
        def walk(db: sqlite3.Connection) -> list[Message]:
            db.execute("BEGIN")
            try:
                if not sql.owns(db, owner, session_id):
                    raise NotFound()
                ids = sql.branch_ids(db, session_id, message_id, below=sql.NO_BOUND, want=limit)
                if not ids:
                    raise MessageNotFound()
                ids.reverse()
                return sql.messages_by_id(db, ids)
            finally:
                db.execute("COMMIT")

        return await self.db.read(walk)

    async def get_message(self, owner: str, session_id: str, message_id: int) -> Message:
        def get(db: sqlite3.Connection) -> Message:
            if not sql.owns(db, owner, session_id):
                raise NotFound()
            return sql.get_message(db, session_id, message_id)

        return await self.db.read(get)

    async def newest_reply(self, owner: str, session_id: str) -> Message | None:
        def find(db: sqlite3.Connection) -> Message | None:
            db.execute("BEGIN")
            try:
                leaf = self._leaf(db, owner, session_id, None)
                if leaf is None:
                    return None
                row = db.execute(
                    "WITH RECURSIVE up(id, parent_id, role) AS ("
                    "SELECT id, parent_id, role FROM messages WHERE id = ? AND session_id = ? "
                    "UNION ALL SELECT m.id, m.parent_id, m.role FROM messages m "
                    "JOIN up ON m.id = up.parent_id WHERE up.role != 'assistant') "
                    "SELECT id FROM up WHERE role = 'assistant'",
                    (leaf, session_id),
                ).fetchone()
                return None if row is None else sql.get_message(db, session_id, row[0])
            finally:
                db.execute("COMMIT")

        return await self.db.read(find)

    async def switch_branch(
        self, owner: str, session_id: str, message_id: int, *, descend: bool = True
    ) -> Session:
        now = sql.stamp(utcnow())

        def switch(db: sqlite3.Connection) -> Session:
            sql.touch(db, owner, session_id, now, 0)
            if not sql.has_message(db, session_id, message_id):
                raise MessageNotFound()
            leaf = sql.newest_descendant(db, session_id, message_id) if descend else message_id
            sql.set_leaf(db, session_id, leaf)
            return self._session(db, session_id)

        return await self.db.write(switch)

    @staticmethod
    def _session(db: sqlite3.Connection, session_id: str) -> Session:
        row = db.execute(
            f"SELECT {sql.SESSION_COLUMNS} FROM sessions s WHERE s.id = ?", (session_id,)
        ).fetchone()
        return sql.session_of(row)

    async def delete_message(self, owner: str, session_id: str, message_id: int) -> Session:
        now = sql.stamp(utcnow())

        def delete(db: sqlite3.Connection) -> Session:
            leaf = sql.touch(db, owner, session_id, now, 0)
            doomed = sql.get_message(db, session_id, message_id)
            ids = sql.subtree_ids(db, session_id, message_id)
            on_branch = leaf is not None and leaf in set(ids)
            marks = ",".join("?" * len(ids))
            db.execute(f"DELETE FROM messages WHERE id IN ({marks})", ids)
            db.execute(
                "UPDATE sessions SET message_count = message_count - ? WHERE id = ?",
                (len(ids), session_id),
            )
            if on_branch:
                # The current branch ran through the deleted message: the newest remaining
                # sibling's branch, else the one ending at the parent.
                if doomed.parent_id is None:
                    row = db.execute(
                        "SELECT MAX(id) FROM messages INDEXED BY messages_parent "
                        "WHERE session_id = ? AND parent_id IS NULL",
                        (session_id,),
                    ).fetchone()
                else:
                    row = db.execute(
                        "SELECT MAX(id) FROM messages INDEXED BY messages_parent "
                        "WHERE session_id = ? AND parent_id = ?",
                        (session_id, doomed.parent_id),
                    ).fetchone()
                sibling = row[0]
                if sibling is not None:
                    leaf = sql.newest_descendant(db, session_id, sibling)
                else:
                    leaf = doomed.parent_id
                sql.set_leaf(db, session_id, leaf)
            return self._session(db, session_id)

        return await self.db.write(delete)

    async def all_messages(self, owner: str, session_id: str) -> list[Message]:
        def everything(db: sqlite3.Connection) -> list[Message]:
            db.execute("BEGIN")
            try:
                if not sql.owns(db, owner, session_id):
                    raise NotFound()
                rows = db.execute(
                    f"SELECT {sql.MESSAGE_COLUMNS} FROM messages WHERE session_id = ? ORDER BY id",
                    (session_id,),
                ).fetchall()
                return [sql.message_of(row) for row in rows]
            finally:
                db.execute("COMMIT")

        return await self.db.read(everything)

    async def set_title(
        self, owner: str, session_id: str, title: str, *, only_if_untitled: bool
    ) -> Session | None:
        def set_(db: sqlite3.Connection) -> Session | None:
            query = "UPDATE sessions SET title = ? WHERE id = ? AND owner = ?"
            if only_if_untitled:
                query += " AND title IS NULL"
            row = db.execute(
                query + f" RETURNING {sql.SESSION_COLUMNS.replace('s.', '')}",
                (title, session_id, owner),
            ).fetchone()
            if row is None:
                if not only_if_untitled or not sql.owns(db, owner, session_id):
                    raise NotFound()
                return None
            return sql.session_of(row)

        return await self.db.write(set_)

    async def search(
        self, owner: str, query: SearchQuery, *, limit: int, offset: int
    ) -> list[SearchHit]:
        if query.empty:
            return []
        expression = match_expression(query, owner)

        def find(db: sqlite3.Connection) -> list[SearchHit]:
            # Equal matches newest first by when they were written, not by id: an import
            # stores an old conversation under new ids. The id only settles exact ties.
            rows = db.execute(
                f"SELECT {', '.join('m.' + c for c in sql.MESSAGE_COLUMNS.split(', '))}, "
                "s.title AS title FROM message_search "
                "JOIN messages m ON m.id = message_search.rowid "
                "JOIN sessions s ON s.id = m.session_id "
                "WHERE message_search MATCH ? AND s.owner = ? "
                "ORDER BY bm25(message_search, 1.0, 0.0), m.created_at DESC, m.id DESC "
                "LIMIT ? OFFSET ?",
                (expression, owner, limit, offset),
            ).fetchall()
            return [SearchHit(sql.message_of(row), row["title"]) for row in rows]

        return await self.db.read(find)

    async def import_sessions(
        self,
        owner: str,
        sessions: list[ImportedSession],
        *,
        backend: str,
        limit: int | None = None,
    ) -> list[Session]:
        def insert(db: sqlite3.Connection) -> list[Session]:
            # One transaction: an import is whole or not at all.
            created = [sql.import_session(db, owner, imported, backend) for imported in sessions]
            if limit is not None:
                count = db.execute(
                    "SELECT COUNT(*) FROM sessions WHERE owner = ?", (owner,)
                ).fetchone()[0]
                if count > limit:
                    raise TooManySessions(limit)
            return created

        return await self.db.write(insert)

    async def create_share(
        self, owner: str, session_id: str, share_id: str, messages: list[dict[str, Any]]
    ) -> Share:
        now = utcnow()

        def insert(db: sqlite3.Connection) -> Share:
            row = db.execute(
                "INSERT INTO shares (id, session_id, owner, title, created_at, messages) "
                "SELECT ?, id, owner, title, ?, ? FROM sessions WHERE id = ? AND owner = ? "
                "RETURNING title",
                (share_id, sql.stamp(now), json.dumps(messages), session_id, owner),
            ).fetchone()
            if row is None:
                raise NotFound()
            return Share(share_id, session_id, row[0], now, messages)

        return await self.db.write(insert)

    async def list_shares(self, owner: str, session_id: str) -> list[Share]:
        def shares(db: sqlite3.Connection) -> list[Share]:
            db.execute("BEGIN")
            try:
                if not sql.owns(db, owner, session_id):
                    raise NotFound()
                rows = db.execute(
                    "SELECT id, session_id, title, created_at, messages FROM shares "
                    "WHERE session_id = ? AND owner = ? ORDER BY created_at DESC, id",
                    (session_id, owner),
                ).fetchall()
                return [sql.share_of(row) for row in rows]
            finally:
                db.execute("COMMIT")

        return await self.db.read(shares)

    async def delete_share(self, owner: str, session_id: str, share_id: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            if not sql.owns(db, owner, session_id):
                raise NotFound()
            cursor = db.execute(
                "DELETE FROM shares WHERE id = ? AND session_id = ? AND owner = ?",
                (share_id, session_id, owner),
            )
            if cursor.rowcount == 0:
                raise NotFound("share not found")

        await self.db.write(delete)

    async def get_share(self, share_id: str) -> Share:
        def get(db: sqlite3.Connection) -> Share:
            row = db.execute(
                "SELECT id, session_id, title, created_at, messages FROM shares WHERE id = ?",
                (share_id,),
            ).fetchone()
            if row is None:
                raise NotFound("share not found")
            return sql.share_of(row)

        return await self.db.read(get)
