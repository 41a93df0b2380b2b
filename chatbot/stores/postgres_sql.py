"""The PostgreSQL store's statements: coroutines of one asyncpg connection, each inside the
transaction of its caller.

Every write to a session starts with :func:`touch`, an ``UPDATE`` of the session's row:
its row lock orders the writes to one session across processes, as SQLite's single writer
does, so the leaf read there is the one the rest of the transaction builds on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from chatbot.errors import DuplicateMessage, DuplicateReply, MessageNotFound, NotFound
from chatbot.stores.base import LEAF, Message, Role, Session, Share, Status, new_session_id
from chatbot.stores.postgres_search import search_vector
from chatbot.stores.postgres_usage import record
from chatbot.transfer import ImportedSession

#: asyncpg's connection; untyped (the driver ships no annotations).
Connection = Any
Record = Any

SESSION_COLUMNS = (
    "id, owner, title, backend, model, system_prompt, created_at, updated_at, "
    "message_count, leaf_id"
)
MESSAGE_COLUMNS = (
    "id, session_id, role, content, status, created_at, client_id, reply_to, backend, model, "
    "usage, parent_id"
)
INSERT_MESSAGE = (
    "INSERT INTO messages (session_id, role, content, status, client_id, reply_to, backend, "
    "model, usage, created_at, parent_id, search_vector) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::text::tsvector)"
)
#: Above any message id: "no upper bound" for the branch walks below.
NO_BOUND = 2**62
#: The first key of the two-key advisory locks taken per owner while their sessions are
#: counted against a cap ("sess" in ASCII); the second is a hash of the owner.
SESSION_CAP_LOCK = 0x73657373


def session_of(row: Record) -> Session:
    return Session(
        id=row["id"],
        owner=row["owner"],
        title=row["title"],
        backend=row["backend"],
        model=row["model"],
        system_prompt=row["system_prompt"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        message_count=row["message_count"],
        leaf_id=row["leaf_id"],
    )


def message_of(row: Record) -> Message:
    return Message(
        id=row["id"],
        session_id=row["session_id"],
        role=row["role"],
        content=row["content"],
        status=row["status"],
        created_at=row["created_at"],
        client_id=row["client_id"],
        reply_to=row["reply_to"],
        backend=row["backend"],
        model=row["model"],
        usage=row["usage"],
        parent_id=row["parent_id"],
    )


def share_of(row: Record) -> Share:
    return Share(
        id=row["id"],
        session_id=row["session_id"],
        title=row["title"],
        created_at=row["created_at"],
        messages=row["messages"],
    )


async def lock_owner_sessions(db: Connection, owner: str) -> None:
    """Hold, until the transaction ends, the lock that makes counting ``owner``'s sessions
    and adding one a single step: under READ COMMITTED two transactions would both count
    below the cap and both insert. Owners whose hashes collide only wait for each other."""
    await db.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", SESSION_CAP_LOCK, owner)


async def touch(
    db: Connection, owner: str, session_id: str, now: datetime, added: int
) -> int | None:
    """Mark the owner's session active and count ``added`` messages; the current branch's
    leaf. Locks the session's row until the transaction ends. ``NotFound`` if the session
    is not theirs."""
    row = await db.fetchrow(
        "UPDATE sessions SET updated_at = $1, message_count = message_count + $2 "
        "WHERE id = $3 AND owner = $4 RETURNING leaf_id",
        now, added, session_id, owner,
    )  # fmt: skip
    if row is None:
        raise NotFound()
    leaf: int | None = row["leaf_id"]
    return leaf


async def owns(db: Connection, owner: str, session_id: str) -> bool:
    found = await db.fetchval(
        "SELECT true FROM sessions WHERE id = $1 AND owner = $2", session_id, owner
    )
    return found is not None


# The role is written into the text (not bound) so that each statement, prepared once,
# matches the predicate of its partial unique index.
_FIND = {
    role: f"SELECT {MESSAGE_COLUMNS} FROM messages "
    f"WHERE session_id = $1 AND client_id = $2 AND role = '{role}'"
    for role in ("user", "assistant")
}


async def find_user_message(
    db: Connection, session_id: str, client_id: str, role: Role = "user"
) -> Message | None:
    """The message stored with this client id: a user message, or with ``role="assistant"``
    a regenerated reply."""
    row = await db.fetchrow(_FIND[role], session_id, client_id)
    return message_of(row) if row is not None else None


async def find_reply(db: Connection, session_id: str, message_id: int) -> Message | None:
    """The first reply to a user message (the one its client id was answered with)."""
    row = await db.fetchrow(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE reply_to = $1 AND session_id = $2 "
        "ORDER BY id LIMIT 1",
        message_id, session_id,
    )  # fmt: skip
    return message_of(row) if row is not None else None


async def get_message(db: Connection, session_id: str, message_id: int) -> Message:
    """A message of the session; ``MessageNotFound`` otherwise."""
    row = await db.fetchrow(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND session_id = $2",
        message_id, session_id,
    )  # fmt: skip
    if row is None:
        raise MessageNotFound()
    return message_of(row)


async def has_message(db: Connection, session_id: str, message_id: int) -> bool:
    found = await db.fetchval(
        "SELECT true FROM messages WHERE id = $1 AND session_id = $2", message_id, session_id
    )
    return found is not None


async def set_leaf(db: Connection, session_id: str, leaf_id: int | None) -> None:
    await db.execute("UPDATE sessions SET leaf_id = $1 WHERE id = $2", leaf_id, session_id)


async def newest_descendant(db: Connection, session_id: str, message_id: int) -> int:
    """The leaf reached from a message by following its newest child at each step (each
    step one look-up in the parent index)."""
    leaf = await db.fetchval(
        "WITH RECURSIVE down(id) AS ("
        "SELECT id FROM messages WHERE id = $1 AND session_id = $2 UNION ALL "
        "SELECT newest.id FROM down, LATERAL (SELECT c.id FROM messages c "
        "WHERE c.parent_id = down.id AND c.session_id = $2 ORDER BY c.id DESC LIMIT 1) newest) "
        "SELECT max(id) FROM down",
        message_id, session_id,
    )  # fmt: skip
    return int(leaf)


async def branch_ids(
    db: Connection, session_id: str, start: int, *, below: int, want: int
) -> list[int]:
    """Walk up a branch from ``start`` (towards the root, each step a primary-key lookup)
    and return the ids of at most ``want`` messages with an id under ``below``, newest
    first. Ids grow along a branch, so the walk stops as soon as it has them."""
    rows = await db.fetch(
        "WITH RECURSIVE up(id, parent_id, n) AS ("
        "SELECT id, parent_id, (id < $1)::int FROM messages WHERE id = $2 AND session_id = $3 "
        "UNION ALL SELECT m.id, m.parent_id, up.n + (m.id < $1)::int FROM up "
        "JOIN messages m ON m.id = up.parent_id WHERE up.n < $4) "
        "SELECT id FROM up WHERE id < $1 ORDER BY id DESC LIMIT $4",
        below, start, session_id, want,
    )  # fmt: skip
    return [row["id"] for row in rows]


async def branch_ids_after(
    db: Connection, session_id: str, leaf: int, *, after: int, want: int
) -> list[int]:
    """The ids of at most ``want`` messages of the branch ending at ``leaf`` that come
    after the id ``after``, oldest first (the walk from the leaf stops at ``after``)."""
    rows = await db.fetch(
        "WITH RECURSIVE up(id, parent_id) AS ("
        "SELECT id, parent_id FROM messages WHERE id = $1 AND session_id = $2 AND id > $3 "
        "UNION ALL SELECT m.id, m.parent_id FROM up "
        "JOIN messages m ON m.id = up.parent_id WHERE m.id > $3) "
        "SELECT id FROM up ORDER BY id ASC LIMIT $4",
        leaf, session_id, after, want,
    )  # fmt: skip
    return [row["id"] for row in rows]


async def messages_by_id(db: Connection, ids: list[int]) -> list[Message]:
    """The messages with these ids, in the order given."""
    if not ids:
        return []
    rows = await db.fetch(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ANY($1::bigint[])", ids
    )
    found = {row["id"]: message_of(row) for row in rows}
    return [found[i] for i in ids if i in found]


async def siblings(
    db: Connection, session_id: str, messages: list[Message]
) -> dict[int, list[int]]:
    """For each message, the ids of all messages with the same parent, oldest first."""
    parents = {m.parent_id for m in messages}
    children: dict[int | None, list[int]] = {}
    known = sorted(p for p in parents if p is not None)
    if known:
        rows = await db.fetch(
            "SELECT parent_id, id FROM messages "
            "WHERE session_id = $1 AND parent_id = ANY($2::bigint[]) ORDER BY parent_id, id",
            session_id, known,
        )  # fmt: skip
        for row in rows:
            children.setdefault(row["parent_id"], []).append(row["id"])
    if None in parents:
        rows = await db.fetch(
            "SELECT id FROM messages WHERE session_id = $1 AND parent_id IS NULL ORDER BY id",
            session_id,
        )
        children[None] = [row["id"] for row in rows]
    return {m.id: children.get(m.parent_id, [m.id]) for m in messages}


async def subtree_ids(db: Connection, session_id: str, message_id: int) -> list[int]:
    """A message of the session and everything below it (children are looked up by
    parent alone, one step of the parent index each: they are in the same session)."""
    rows = await db.fetch(
        "WITH RECURSIVE sub(id) AS ("
        "SELECT id FROM messages WHERE id = $1 AND session_id = $2 UNION ALL "
        "SELECT c.id FROM sub JOIN messages c ON c.parent_id = sub.id) "
        "SELECT id FROM sub",
        message_id, session_id,
    )  # fmt: skip
    return [row["id"] for row in rows]


async def insert_message(
    db: Connection,
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
    the stored message and its reply, a regeneration's :class:`DuplicateReply`; the caller
    rolls its transaction back, and nothing is written. The unique indexes decide, in the
    insert itself: no lookup before it. A parent that is not a message of the session
    (deleted meanwhile) raises :class:`MessageNotFound`.
    """
    leaf = await touch(db, owner, session_id, now, 1)
    parent_id = parent if parent != LEAF else (reply_to if reply_to is not None else leaf)
    if (
        parent_id is not None
        and parent_id != leaf
        and not await has_message(db, session_id, parent_id)
    ):
        raise MessageNotFound()
    message_id = await db.fetchval(
        INSERT_MESSAGE + " ON CONFLICT DO NOTHING RETURNING id",
        session_id, role, content, status, client_id, reply_to, backend, model, usage, now,
        parent_id, search_vector(owner, content),
    )  # fmt: skip
    if message_id is None:
        assert client_id is not None
        if role == "assistant":
            raise DuplicateReply(await find_user_message(db, session_id, client_id, "assistant"))
        found = await find_user_message(db, session_id, client_id)
        assert found is not None
        raise DuplicateMessage(found, await find_reply(db, session_id, found.id))
    if role == "assistant":
        # The reply and the tokens it used are committed together.
        await record(db, owner, now, backend, model, usage)
    message = Message(
        id=message_id, session_id=session_id, role=role, content=content,
        status=status, created_at=now, client_id=client_id, reply_to=reply_to,
        backend=backend, model=model, usage=usage, parent_id=parent_id,
    )  # fmt: skip
    if parent_id == leaf or parent != LEAF:
        await set_leaf(db, session_id, message.id)
    return message, leaf


async def import_session(
    db: Connection, owner: str, imported: ImportedSession, backend: str
) -> Session:
    """Insert an imported conversation as a new session of ``owner``: its tree with new
    ids, its timestamps, and its leaf as the current branch."""
    session_id = new_session_id()
    created = imported.created_at
    await db.execute(
        "INSERT INTO sessions (id, owner, title, backend, model, system_prompt, created_at, "
        "updated_at, message_count) VALUES ($1, $2, $3, $4, NULL, $5, $6, $6, 0)",
        session_id, owner, imported.title, backend, imported.system_prompt, created,
    )  # fmt: skip
    count = len(imported.messages)
    # The ids first, in order (parents before children), then every row in one statement.
    new_ids: list[int] = []
    if count:
        rows = await db.fetch(
            "SELECT nextval(pg_get_serial_sequence('messages', 'id')) AS id "
            "FROM generate_series(1, $1)",
            count,
        )
        new_ids = sorted(row["id"] for row in rows)
    ids: dict[str, int] = {}
    roles: dict[int, str] = {}
    records = []
    newest = created
    for message, message_id in zip(imported.messages, new_ids, strict=True):
        parent_id = ids[message.parent_key] if message.parent_key is not None else None
        reply_to = None
        if message.role == "assistant" and parent_id is not None and roles[parent_id] == "user":
            reply_to = parent_id
        newest = max(newest, message.created_at)
        ids[message.key] = message_id
        roles[message_id] = message.role
        records.append(
            (message_id, session_id, message.role, message.content, message.status, None,
             reply_to, message.backend, message.model, message.usage, message.created_at,
             parent_id, search_vector(owner, message.content))
        )  # fmt: skip
    if records:
        await db.executemany(
            "INSERT INTO messages (id, session_id, role, content, status, client_id, reply_to, "
            "backend, model, usage, created_at, parent_id, search_vector) VALUES "
            "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::text::tsvector)",
            records,
        )
    leaf = ids[imported.leaf_key] if imported.leaf_key is not None else None
    row = await db.fetchrow(
        "UPDATE sessions SET leaf_id = $1, message_count = $2, updated_at = $3 WHERE id = $4 "
        f"RETURNING {SESSION_COLUMNS}",
        leaf, count, newest, session_id,
    )  # fmt: skip
    return session_of(row)
