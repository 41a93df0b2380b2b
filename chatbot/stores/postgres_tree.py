"""The PostgreSQL store's message tree: a page of a branch, the newest reply of the current
branch, and deleting a subtree. Coroutines of one connection, inside the caller's
transaction (a snapshot for the reads, a write transaction for the delete)."""

from __future__ import annotations

from datetime import datetime

from chatbot.errors import MessageNotFound, NotFound
from chatbot.stores import postgres_sql as sql
from chatbot.stores.base import Message, MessagePage, Session
from chatbot.stores.postgres_sql import Connection


async def leaf_of(db: Connection, owner: str, session_id: str, leaf_id: int | None) -> int | None:
    """The leaf of the branch to read: ``leaf_id`` (a message of the session) or the
    session's current one. ``NotFound`` for a session that is not the owner's."""
    row = await db.fetchrow(
        "SELECT leaf_id FROM sessions WHERE id = $1 AND owner = $2", session_id, owner
    )
    if row is None:
        raise NotFound()
    if leaf_id is None:
        current: int | None = row["leaf_id"]
        return current
    if not await sql.has_message(db, session_id, leaf_id):
        raise MessageNotFound()
    return leaf_id


async def page(
    db: Connection,
    owner: str,
    session_id: str,
    *,
    limit: int,
    before: int | None,
    after: int | None,
    leaf_id: int | None,
) -> MessagePage:
    """A page of the branch ending at ``leaf_id`` (or the current one): see
    :meth:`chatbot.stores.base.SessionStore.list_messages`."""
    leaf = await leaf_of(db, owner, session_id, leaf_id)
    want = limit + 1
    ids: list[int] = []
    if leaf is None:
        pass
    elif after is not None:
        ids = await sql.branch_ids_after(db, session_id, leaf, after=after, want=want)
    elif before is not None:
        # Paging up through a message of the session continues from its parent; any
        # other id bounds the branch's ids.
        row = await db.fetchrow(
            "SELECT parent_id FROM messages WHERE id = $1 AND session_id = $2",
            before, session_id,
        )  # fmt: skip
        if row is None:
            ids = await sql.branch_ids(db, session_id, leaf, below=before, want=want)
        elif row["parent_id"] is not None:
            ids = await sql.branch_ids(
                db, session_id, row["parent_id"], below=sql.NO_BOUND, want=want
            )
    else:
        ids = await sql.branch_ids(db, session_id, leaf, below=sql.NO_BOUND, want=want)
    has_more = len(ids) > limit
    ids = ids[:limit]
    if after is None:
        ids.reverse()
    messages = await sql.messages_by_id(db, ids)
    return MessagePage(messages, has_more, await sql.siblings(db, session_id, messages))


async def newest_reply(db: Connection, owner: str, session_id: str) -> Message | None:
    """The newest assistant message of the current branch, walking up from its leaf."""
    leaf = await leaf_of(db, owner, session_id, None)
    if leaf is None:
        return None
    reply_id = await db.fetchval(
        "WITH RECURSIVE up(id, parent_id, role) AS ("
        "SELECT id, parent_id, role FROM messages WHERE id = $1 AND session_id = $2 "
        "UNION ALL SELECT m.id, m.parent_id, m.role FROM up "
        "JOIN messages m ON m.id = up.parent_id WHERE up.role <> 'assistant') "
        "SELECT id FROM up WHERE role = 'assistant'",
        leaf, session_id,
    )  # fmt: skip
    return None if reply_id is None else await sql.get_message(db, session_id, reply_id)


async def set_leaf(db: Connection, session_id: str, leaf_id: int | None) -> Session:
    """Make ``leaf_id`` the end of the current branch; the updated session."""
    row = await db.fetchrow(
        f"UPDATE sessions SET leaf_id = $1 WHERE id = $2 RETURNING {sql.SESSION_COLUMNS}",
        leaf_id, session_id,
    )  # fmt: skip
    return sql.session_of(row)


async def delete(
    db: Connection, owner: str, session_id: str, message_id: int, now: datetime
) -> Session:
    """Delete a message and everything below it. If the current branch ran through it, the
    newest remaining sibling's branch becomes current, else the one ending at the parent.
    The updated session."""
    leaf = await sql.touch(db, owner, session_id, now, 0)
    doomed = await sql.get_message(db, session_id, message_id)
    ids = await sql.subtree_ids(db, session_id, message_id)
    await db.execute("DELETE FROM messages WHERE id = ANY($1::bigint[])", ids)
    await db.execute(
        "UPDATE sessions SET message_count = message_count - $1 WHERE id = $2",
        len(ids), session_id,
    )  # fmt: skip
    if leaf is None or leaf not in set(ids):
        return await set_leaf(db, session_id, leaf)
    if doomed.parent_id is None:
        sibling = await db.fetchval(
            "SELECT max(id) FROM messages WHERE session_id = $1 AND parent_id IS NULL",
            session_id,
        )
    else:
        sibling = await db.fetchval(
            "SELECT max(id) FROM messages WHERE session_id = $1 AND parent_id = $2",
            session_id, doomed.parent_id,
        )  # fmt: skip
    if sibling is not None:
        leaf = await sql.newest_descendant(db, session_id, sibling)
    else:
        leaf = doomed.parent_id
    return await set_leaf(db, session_id, leaf)
