"""The PostgreSQL session store.

Each write is one transaction (READ COMMITTED) that starts by updating the session's row,
whose lock orders the writes to one session across every process; each read of several
statements is one REPEATABLE READ, READ ONLY transaction, so it sees one snapshot (see
:mod:`chatbot.stores.postgres_db` for the pool, and what a commit guarantees).
"""

from __future__ import annotations

from typing import Any, Literal

from chatbot.errors import MessageNotFound, NotFound, TooManySessions
from chatbot.search import SearchQuery
from chatbot.stores import postgres_migrations as migrations
from chatbot.stores import postgres_sql as sql
from chatbot.stores import postgres_tree as tree
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
from chatbot.stores.postgres_db import DATABASE_ERRORS, DEFAULT_POOL_SIZE, Database
from chatbot.stores.postgres_search import search_query, search_vector, terms_query
from chatbot.stores.postgres_usage import PostgresUsage, record
from chatbot.transfer import ImportedSession


class PostgresStore(PostgresUsage, SessionStore):
    """Sessions and messages in a PostgreSQL database (``postgresql://`` URLs).

    Any query parameter of the URL that libpq does not define is sent to the server as a
    setting of each connection: ``?search_path=chat`` keeps the tables in the schema
    ``chat``.
    """

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.db = Database(url, pool_size)
        self.url = url
        self.pool_size = pool_size

    @property
    def pool(self) -> Any:
        """The ``asyncpg.Pool``, for other state the server keeps in this database (its
        connections exchange ``jsonb`` as Python objects, and any string as text: see
        :mod:`chatbot.stores.postgres_codecs`)."""
        return self.db.pool

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    async def migrate(self) -> list[str]:
        try:
            async with self.pool.acquire() as db:
                return await migrations.migrate(db)
        except DATABASE_ERRORS as exc:
            raise self.db.unusable(exc) from None

    async def applied_migrations(self) -> list[str]:
        try:
            async with self.pool.acquire() as db:
                return await migrations.applied_migrations(db)
        except DATABASE_ERRORS as exc:
            raise self.db.unusable(exc) from None

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")

    # -- sessions -------------------------------------------------------------------------

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
            id=new_session_id(), owner=owner, title=title, backend=backend, model=model,
            system_prompt=system_prompt, created_at=now, updated_at=now,
        )  # fmt: skip
        async with self.db.write() as db:
            if limit is not None:
                await sql.lock_owner_sessions(db, owner)
                count = await db.fetchval("SELECT count(*) FROM sessions WHERE owner = $1", owner)
                if count >= limit:
                    raise TooManySessions(limit)
            await db.execute(
                "INSERT INTO sessions (id, owner, title, backend, model, system_prompt, "
                "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                session.id, owner, title, backend, model, system_prompt, now,
            )  # fmt: skip
        return session

    async def get_session(self, owner: str, session_id: str) -> Session:
        row = await self.pool.fetchrow(
            f"SELECT {sql.SESSION_COLUMNS} FROM sessions WHERE id = $1 AND owner = $2",
            session_id, owner,
        )  # fmt: skip
        if row is None:
            raise NotFound()
        return sql.session_of(row)

    async def list_sessions(
        self, owner: str, *, limit: int, cursor: str | None = None
    ) -> SessionPage:
        query = f"SELECT {sql.SESSION_COLUMNS} FROM sessions WHERE owner = $1"
        params: tuple[Any, ...] = (owner,)
        if cursor is not None:
            when, last_id = decode_cursor(cursor)
            query += " AND (updated_at, id) < ($3, $4)"
            params += (when, last_id)
        query += " ORDER BY updated_at DESC, id DESC LIMIT $2"
        rows = await self.pool.fetch(query, params[0], limit + 1, *params[1:])
        sessions = [sql.session_of(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = sessions[-1]
            next_cursor = encode_cursor(last.updated_at, last.id)
        return SessionPage(sessions=sessions, next_cursor=next_cursor)

    async def count_sessions(self, owner: str) -> int:
        count = await self.pool.fetchval("SELECT count(*) FROM sessions WHERE owner = $1", owner)
        return int(count)

    async def rename_session(self, owner: str, session_id: str, title: str | None) -> Session:
        row = await self.pool.fetchrow(
            f"UPDATE sessions SET title = $1 WHERE id = $2 AND owner = $3 "
            f"RETURNING {sql.SESSION_COLUMNS}",
            title, session_id, owner,
        )  # fmt: skip
        if row is None:
            raise NotFound()
        return sql.session_of(row)

    async def delete_session(self, owner: str, session_id: str) -> None:
        deleted = await self.pool.fetchval(
            "DELETE FROM sessions WHERE id = $1 AND owner = $2 RETURNING true", session_id, owner
        )
        if deleted is None:
            raise NotFound()

    async def set_title(
        self, owner: str, session_id: str, title: str, *, only_if_untitled: bool
    ) -> Session | None:
        query = "UPDATE sessions SET title = $1 WHERE id = $2 AND owner = $3"
        if only_if_untitled:
            query += " AND title IS NULL"
        async with self.db.write() as db:
            row = await db.fetchrow(
                f"{query} RETURNING {sql.SESSION_COLUMNS}", title, session_id, owner
            )
            if row is None:
                if not only_if_untitled or not await sql.owns(db, owner, session_id):
                    raise NotFound()
                return None
            return sql.session_of(row)

    # -- messages -------------------------------------------------------------------------

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
        async with self.db.write() as db:
            message, leaf = await sql.insert_message(
                db, owner, session_id, now, role="user", content=content,
                client_id=client_id, parent=parent,
            )  # fmt: skip
        return UserMessage(message, leaf)

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
        async with self.db.write() as db:
            message, _ = await sql.insert_message(
                db, owner, session_id, now, role=role, content=content, status=status,
                client_id=client_id, reply_to=reply_to, backend=backend, model=model,
                usage=usage,
            )  # fmt: skip
        return message

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
        now = utcnow()
        async with self.db.write() as db:
            await sql.touch(db, owner, session_id, now, 0)
            row = await db.fetchrow(
                "UPDATE messages SET content = $1, status = $2, backend = $3, model = $4, "
                "usage = $5, created_at = $6, search_vector = $7::text::tsvector "
                "WHERE id = $8 AND session_id = $9 AND role = 'assistant' "
                f"RETURNING {sql.MESSAGE_COLUMNS}",
                content, status, backend, model, usage, now,
                search_vector(owner, content), message_id, session_id,
            )  # fmt: skip
            if row is None:
                raise NotFound()
            # The failed reply's tokens were used too: the new ones add to them.
            await record(db, owner, now, backend, model, usage)
            return sql.message_of(row)

    async def find_user_message(
        self, owner: str, session_id: str, client_id: str, role: Role = "user"
    ) -> Message | None:
        async with self.db.snapshot() as db:
            if not await sql.owns(db, owner, session_id):
                return None
            return await sql.find_user_message(db, session_id, client_id, role)

    async def find_reply(self, owner: str, session_id: str, message_id: int) -> Message | None:
        async with self.db.snapshot() as db:
            if not await sql.owns(db, owner, session_id):
                return None
            return await sql.find_reply(db, session_id, message_id)

    async def get_message(self, owner: str, session_id: str, message_id: int) -> Message:
        async with self.db.snapshot() as db:
            if not await sql.owns(db, owner, session_id):
                raise NotFound()
            return await sql.get_message(db, session_id, message_id)

    async def all_messages(self, owner: str, session_id: str) -> list[Message]:
        async with self.db.snapshot() as db:
            if not await sql.owns(db, owner, session_id):
                raise NotFound()
            rows = await db.fetch(
                f"SELECT {sql.MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 ORDER BY id",
                session_id,
            )
            return [sql.message_of(row) for row in rows]

    # -- the tree -------------------------------------------------------------------------

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
        async with self.db.snapshot() as db:
            return await tree.page(
                db, owner, session_id, limit=limit, before=before, after=after, leaf_id=leaf_id
            )

    async def branch_to(
        self, owner: str, session_id: str, message_id: int, *, limit: int
    ) -> list[Message]:
        async with self.db.snapshot() as db:
            if not await sql.owns(db, owner, session_id):
                raise NotFound()
            ids = await sql.branch_ids(db, session_id, message_id, below=sql.NO_BOUND, want=limit)
            if not ids:
                raise MessageNotFound()
            ids.reverse()
            return await sql.messages_by_id(db, ids)

    async def newest_reply(self, owner: str, session_id: str) -> Message | None:
        async with self.db.snapshot() as db:
            return await tree.newest_reply(db, owner, session_id)

    async def switch_branch(
        self, owner: str, session_id: str, message_id: int, *, descend: bool = True
    ) -> Session:
        now = utcnow()
        async with self.db.write() as db:
            await sql.touch(db, owner, session_id, now, 0)
            if not await sql.has_message(db, session_id, message_id):
                raise MessageNotFound()
            leaf = message_id
            if descend:
                leaf = await sql.newest_descendant(db, session_id, message_id)
            return await tree.set_leaf(db, session_id, leaf)

    async def delete_message(self, owner: str, session_id: str, message_id: int) -> Session:
        now = utcnow()
        async with self.db.write() as db:
            return await tree.delete(db, owner, session_id, message_id, now)

    # -- search, import, shares -----------------------------------------------------------

    async def search(
        self, owner: str, query: SearchQuery, *, limit: int, offset: int
    ) -> list[SearchHit]:
        terms = None if query.empty else terms_query(query)
        if terms is None:
            return []
        # The matches come from the GIN index alone (the owner's scope lexeme is in the
        # query), whatever the planner would guess for an owner it cannot see in a generic
        # plan; the owner is checked again on the session. Equal matches newest first by
        # when they were written, not by id: an import stores an old conversation under new
        # ids. The id only settles exact ties.
        rows = await self.pool.fetch(
            f"WITH found AS MATERIALIZED (SELECT {sql.MESSAGE_COLUMNS}, "
            "ts_rank(search_vector, $3::text::tsquery, 1) AS rank FROM messages "
            "WHERE search_vector @@ $1::text::tsquery) "
            f"SELECT {', '.join('m.' + c for c in sql.MESSAGE_COLUMNS.split(', '))}, s.title "
            "FROM found m JOIN sessions s ON s.id = m.session_id WHERE s.owner = $2 "
            "ORDER BY m.rank DESC, m.created_at DESC, m.id DESC LIMIT $4 OFFSET $5",
            search_query(owner, terms), owner, terms, limit, offset,
        )  # fmt: skip
        return [SearchHit(sql.message_of(row), row["title"]) for row in rows]

    async def import_sessions(
        self,
        owner: str,
        sessions: list[ImportedSession],
        *,
        backend: str,
        limit: int | None = None,
    ) -> list[Session]:
        # One transaction: an import is whole or not at all.
        async with self.db.write() as db:
            if limit is not None:
                await sql.lock_owner_sessions(db, owner)
            created = [await sql.import_session(db, owner, s, backend) for s in sessions]
            if limit is not None:
                count = await db.fetchval("SELECT count(*) FROM sessions WHERE owner = $1", owner)
                if count > limit:
                    raise TooManySessions(limit)
            return created

    async def create_share(
        self, owner: str, session_id: str, share_id: str, messages: list[dict[str, Any]]
    ) -> Share:
        now = utcnow()
        title = await self.pool.fetchrow(
            "INSERT INTO shares (id, session_id, owner, title, created_at, messages) "
            "SELECT $1, id, owner, title, $2, $3 FROM sessions WHERE id = $4 AND owner = $5 "
            "RETURNING title",
            share_id, now, messages, session_id, owner,
        )  # fmt: skip
        if title is None:
            raise NotFound()
        return Share(share_id, session_id, title["title"], now, messages)

    async def list_shares(self, owner: str, session_id: str) -> list[Share]:
        async with self.db.snapshot() as db:
            if not await sql.owns(db, owner, session_id):
                raise NotFound()
            rows = await db.fetch(
                "SELECT id, session_id, title, created_at, messages FROM shares "
                "WHERE session_id = $1 AND owner = $2 ORDER BY created_at DESC, id",
                session_id, owner,
            )  # fmt: skip
            return [sql.share_of(row) for row in rows]

    async def delete_share(self, owner: str, session_id: str, share_id: str) -> None:
        async with self.db.write() as db:
            if not await sql.owns(db, owner, session_id):
                raise NotFound()
            deleted = await db.fetchval(
                "DELETE FROM shares WHERE id = $1 AND session_id = $2 AND owner = $3 "
                "RETURNING true",
                share_id, session_id, owner,
            )  # fmt: skip
            if deleted is None:
                raise NotFound("share not found")

    async def get_share(self, share_id: str) -> Share:
        row = await self.pool.fetchrow(
            "SELECT id, session_id, title, created_at, messages FROM shares WHERE id = $1",
            share_id,
        )
        if row is None:
            raise NotFound("share not found")
        return sql.share_of(row)

    # -- for the hub across processes (chatbot.hub.postgres) --------------------------------
    # Not scoped by owner: the ids come from notifications this server's processes sent,
    # never from a client, and what is read goes only to the sockets on that session.

    async def message_by_id(self, message_id: int) -> Message | None:
        """A stored message by its id (a reply another process announced)."""
        row = await self.pool.fetchrow(
            f"SELECT {sql.MESSAGE_COLUMNS} FROM messages WHERE id = $1", message_id
        )
        return sql.message_of(row) if row is not None else None

    async def newest_replies(self, session_ids: list[str]) -> dict[str, tuple[Message, str | None]]:
        """For each session whose current branch ends with a reply: that reply, and the
        client id of the message it answers (what a socket may have missed in a gap)."""
        columns = ", ".join(f"m.{c}" for c in sql.MESSAGE_COLUMNS.split(", "))
        rows = await self.pool.fetch(
            f"SELECT {columns}, q.client_id AS asked_id FROM sessions s "
            "JOIN messages m ON m.id = s.leaf_id "
            "LEFT JOIN messages q ON q.id = COALESCE(m.reply_to, m.parent_id) "
            "WHERE s.id = ANY($1::text[]) AND m.role = 'assistant'",
            session_ids,
        )
        return {row["session_id"]: (sql.message_of(row), row["asked_id"]) for row in rows}
