"""Big histories written straight into chatbot's SQLite file, before its server starts.

Going through the server would take hours for a million messages. The rows are written as
the server would have written them, for the schema the file holds (read from the file, not
assumed): columns the seeder knows are filled, others keep their defaults, and a required
column it does not know stops the seeding with its name.
"""

from __future__ import annotations

import random
import re
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.corpus import TextMaker


def _columns(db: sqlite3.Connection, table: str) -> dict[str, bool]:
    """The table's columns, each with whether a value must be given (NOT NULL, no default)."""
    rows = db.execute(f"PRAGMA table_info({table})").fetchall()
    if not rows:
        raise RuntimeError(f"the database has no {table} table; was it migrated?")
    # (cid, name, type, notnull, dflt_value, pk); an INTEGER PRIMARY KEY needs no value.
    return {row[1]: bool(row[3]) and row[4] is None and not row[5] for row in rows}


def _insert(
    db: sqlite3.Connection, table: str, rows: Iterator[dict[str, Any]], known: list[str]
) -> None:
    columns = _columns(db, table)
    unknown = [name for name, required in columns.items() if required and name not in known]
    if unknown:
        raise RuntimeError(
            f"{table}.{unknown[0]} must be filled and bench/seed.py does not know it; "
            "teach the seeder what the server writes there"
        )
    used = [name for name in known if name in columns]
    sql = f"INSERT INTO {table} ({', '.join(used)}) VALUES ({', '.join('?' * len(used))})"  # noqa: S608 (column names from the schema)
    db.executemany(sql, (tuple(row[name] for name in used) for row in rows))


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="microseconds")


MESSAGE_COLUMNS = [
    "id",
    "session_id",
    "role",
    "content",
    "status",
    "client_id",
    "reply_to",
    "parent_id",
    "backend",
    "model",
    "usage",
    "created_at",
]
SESSION_COLUMNS = [
    "id",
    "owner",
    "title",
    "backend",
    "model",
    "system_prompt",
    "created_at",
    "updated_at",
    "message_count",
    "leaf_id",
]


class Seeder:
    """Adds sessions and their messages to one database, all in one transaction
    (committed by :meth:`commit`), unsynced: a crash would only lose the benchmark's own
    data.

    Work a server does row by row is done once at the end, in bulk, which gives the same
    database several times faster: the messages' indexes are dropped while seeding and
    created again after it (one sort instead of a million inserts at random places), and
    the triggers that index each message for search are set aside and replaced by one
    ``rebuild`` of the full-text index. The million-message session of ``history`` takes
    40 s of CPU so, 115 s with the triggers; the search corpus, whose sessions all go on at
    once, a quarter less than with its indexes kept.
    """

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA synchronous = OFF")
        # Room for the indexes' sorts and the full-text index's rebuild (only what is used).
        self.db.execute("PRAGMA cache_size = -262144")
        self.db.execute("BEGIN")
        self._search_tables = _search_tables(self.db)
        self._indexes = _set_aside_indexes(self.db, "messages")
        self._triggers = _set_aside_insert_triggers(self.db, self._search_tables)
        last = self.db.execute("SELECT MAX(id) FROM messages").fetchone()[0]
        self.next_id = (last or 0) + 1

    def allocate(self, count: int) -> int:
        """Reserve ``count`` message ids; the first of them."""
        first = self.next_id
        self.next_id += count
        return first

    def add_session(
        self,
        owner: str,
        *,
        count: int,
        leaf_id: int | None,
        start: datetime,
        title: str,
        session_id: str | None = None,
    ) -> str:
        """The row of a new session of ``owner`` holding ``count`` messages; its id (a new
        one unless given)."""
        session_id = session_id or secrets.token_urlsafe(16)
        session = {
            "id": session_id,
            "owner": owner,
            "title": title,
            "backend": "echo",
            "model": "echo",
            "system_prompt": None,
            "created_at": _stamp(start),
            "updated_at": _stamp(datetime.now(UTC)),
            "message_count": count,
            "leaf_id": leaf_id,
        }
        _insert(self.db, "sessions", iter([session]), SESSION_COLUMNS)
        return session_id

    def add_messages(self, rows: Iterable[dict[str, Any]]) -> None:
        """Message rows as :func:`message_row` makes them, their ids from :meth:`allocate`."""
        _insert(self.db, "messages", iter(rows), MESSAGE_COLUMNS)

    def session(self, owner: str, count: int) -> str:
        """A new session of ``owner`` holding one branch of ``count`` messages; its id."""
        first_id = self.allocate(count)
        start = datetime.now(UTC) - timedelta(seconds=count)
        session_id = self.add_session(
            owner,
            count=count,
            leaf_id=first_id + count - 1 if count else None,
            start=start,
            title=f"seeded, {count} messages",
        )
        self.add_messages(
            message_row(
                first_id + index,
                session_id,
                index,
                first_id + index - 1 if index else None,
                start + timedelta(microseconds=index * 1000),
            )
            for index in range(count)
        )
        return session_id

    def commit(self) -> None:
        """Index what was added, put the triggers back, commit, fold the write-ahead log
        into the file, and close."""
        for sql in self._indexes:
            self.db.execute(sql)
        for table in self._search_tables:
            # The table's name comes from the schema.
            self.db.execute(f"INSERT INTO {table} ({table}) VALUES ('rebuild')")  # noqa: S608
        for sql in self._triggers:
            self.db.execute(sql)
        self.db.execute("COMMIT")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()


def message_row(
    message_id: int,
    session_id: str,
    depth: int,
    parent_id: int | None,
    when: datetime,
    content: str | None = None,
) -> dict[str, Any]:
    """A message as the server stores it: a user message at an even ``depth`` of its
    branch, a reply to its parent at an odd one; ``content`` by default says its depth."""
    user = depth % 2 == 0
    if content is None:
        content = f"message number {depth}" if user else f"Echo: message number {depth}"
    return {
        "id": message_id,
        "session_id": session_id,
        "role": "user" if user else "assistant",
        "content": content,
        "status": "complete",
        "client_id": None,
        # A reply answers the user message it follows.
        "reply_to": None if user else parent_id,
        "parent_id": parent_id,
        "backend": None if user else "echo",
        "model": None if user else "echo",
        "usage": None,
        "created_at": _stamp(when),
    }


def _search_tables(db: sqlite3.Connection) -> list[str]:
    """The full-text tables of the schema (FTS5), which ``rebuild`` fills from their
    content."""
    rows = db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE '%USING fts5%'"
    ).fetchall()
    return [row[0] for row in rows]


def _set_aside_indexes(db: sqlite3.Connection, table: str) -> list[str]:
    """Drop the indexes of ``table`` (those of its constraints excepted); their SQL, to
    create them again."""
    rows = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
        "AND sql IS NOT NULL",
        (table,),
    ).fetchall()
    for name, _sql in rows:
        db.execute(f"DROP INDEX {name}")
    return [sql for _name, sql in rows]


def _set_aside_insert_triggers(db: sqlite3.Connection, search_tables: list[str]) -> list[str]:
    """Drop the triggers that fire on an insert into the seeded tables; their SQL, to
    create them again. A trigger that does anything but fill a full-text table stops the
    seeding, as the rebuild would not do its work."""
    rows = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
        "AND tbl_name IN ('sessions', 'messages')"
    ).fetchall()
    kept = []
    for name, sql in rows:
        event = re.split(r"\bBEGIN\b", sql, maxsplit=1, flags=re.IGNORECASE)[0]
        if not re.search(r"\bINSERT\b", event, re.IGNORECASE):
            continue
        if not any(table in sql for table in search_tables):
            raise RuntimeError(
                f"trigger {name} runs on every insert and bench/seed.py does not know what it "
                "does; teach the seeder to do its work in bulk, as it does for the search index"
            )
        db.execute(f"DROP TRIGGER {name}")
        kept.append(sql)
    return kept


@dataclass(frozen=True)
class History:
    """The seeded database of ``big-session`` and ``history``: who owns what."""

    database: Path
    #: (owner, session id, messages) of the big session and of the smaller one.
    big: tuple[str, str, int]
    small: tuple[str, str, int]
    #: The user owning many sessions, and how many.
    many: tuple[str, int]


def seed_history(database: Path, big: int, small: int, sessions: int) -> History:
    """One big session, one smaller one, and a user with ``sessions`` sessions of 2 messages."""
    seeder = Seeder(database)
    big_session = seeder.session("seed-big", big)
    small_session = seeder.session("seed-small", small)
    for _ in range(sessions):
        seeder.session("seed-many", 2)
    seeder.commit()
    return History(
        database=database,
        big=("seed-big", big_session, big),
        small=("seed-small", small_session, small),
        many=("seed-many", sessions),
    )


def seed_owners(database: Path, owners: list[str]) -> list[str]:
    """One empty session per owner; their ids, in the same order."""
    seeder = Seeder(database)
    ids = [seeder.session(owner, 0) for owner in owners]
    seeder.commit()
    return ids


@dataclass(frozen=True)
class BranchPages:
    """Where the branch listing reads in one session of :func:`seed_branches`."""

    session_id: str
    #: A message halfway down the current branch: the page before it is further up.
    middle: int
    #: The leaf of a branch that is not the current one (in a session without branches,
    #: a message halfway down: the page of the branch that ends there).
    older_leaf: int


@dataclass(frozen=True)
class Branches:
    """The seeded database of ``branches``: one owner, a session with branches and one
    without, holding as many messages."""

    database: Path
    owner: str
    messages: int
    forks: int
    branched: BranchPages
    linear: BranchPages


def branched_rows(
    first_id: int, session_id: str, messages: int, forks: int, fork_length: int, start: datetime
) -> tuple[list[dict[str, Any]], BranchPages]:
    """The rows of a session of ``messages`` messages in which the user went back
    ``forks`` times, spread evenly along the conversation: each time, the last
    ``fork_length`` messages become an older branch, and an edited question (or a
    regenerated reply) starts the branch the conversation goes on in. Ids grow in the
    order the messages were written, as they do in the server.
    """
    main = messages - forks * fork_length
    if main < 2 or forks < 0 or fork_length < 1:
        raise ValueError(f"{forks} forks of {fork_length} do not fit in {messages} messages")
    fork_at = {(n + 1) * main // (forks + 1) for n in range(forks)}
    rows: list[dict[str, Any]] = []
    leaf: int | None = None
    middle = older_leaf = first_id
    older_wanted = sorted(fork_at)[len(fork_at) // 2] if fork_at else -1

    def add(depth: int, parent_id: int | None) -> int:
        message_id = first_id + len(rows)
        when = start + timedelta(microseconds=len(rows) * 1000)
        rows.append(message_row(message_id, session_id, depth, parent_id, when))
        return message_id

    for depth in range(main):
        if depth in fork_at:
            # Written first, then left: the branch the user went back from.
            abandoned = add(depth, leaf)
            for step in range(1, fork_length):
                abandoned = add(depth + step, abandoned)
            if depth == older_wanted:
                older_leaf = abandoned
        leaf = add(depth, leaf)
        if depth == main // 2:
            middle = leaf
    if not fork_at:
        older_leaf = middle
    return rows, BranchPages(session_id, middle, older_leaf)


def seed_branches(database: Path, messages: int, forks: int, fork_length: int = 4) -> Branches:
    """One owner's two sessions of ``messages`` messages: one with ``forks`` older
    branches of ``fork_length`` messages along its current branch, one a single branch."""
    owner = "seed-branches"
    seeder = Seeder(database)
    start = datetime.now(UTC) - timedelta(seconds=messages)
    session_id = secrets.token_urlsafe(16)
    rows, branched = branched_rows(
        seeder.allocate(messages), session_id, messages, forks, fork_length, start
    )
    seeder.add_session(
        owner,
        count=messages,
        # The branch the conversation went on in was written last.
        leaf_id=rows[-1]["id"],
        start=start,
        title=f"seeded, {messages} messages, {forks} older branches",
        session_id=session_id,
    )
    seeder.add_messages(rows)
    linear_first = seeder.next_id
    linear_id = seeder.session(owner, messages)
    seeder.commit()
    middle = linear_first + messages // 2
    return Branches(
        database=database,
        owner=owner,
        messages=messages,
        forks=forks,
        branched=branched,
        linear=BranchPages(linear_id, middle, middle),
    )


@dataclass(frozen=True)
class Corpus:
    """The seeded database of ``search``: many users' conversations in realistic words."""

    database: Path
    users: int
    #: Messages in all, and of each user.
    messages: int
    per_user: int
    #: The user whose searches are measured (every user's messages look alike).
    owner: str


def seed_search(
    database: Path, users: int, sessions_per_user: int, messages_per_session: int, seed: int = 1
) -> Corpus:
    """``users`` users of ``sessions_per_user`` sessions of ``messages_per_session``
    messages, with texts of :class:`bench.corpus.TextMaker`.

    All the sessions go on at once, one message in each per turn (in a new random order
    every turn), so that a user's messages are spread over the whole range of ids as in a
    server used by many people, not packed together where an index would find them
    faster.
    """
    rng = random.Random(seed)  # noqa: S311 (the same texts every run, not secrets)
    sessions = users * sessions_per_user
    total = sessions * messages_per_session
    maker = TextMaker(seed, pool_size=min(2**21, max(2**18, total * 2)))
    seeder = Seeder(database)
    start = datetime.now(UTC) - timedelta(seconds=total)
    first_id = seeder.allocate(total)
    owners = [f"seed-search-{n:04d}" for n in range(users)]
    ids = [
        seeder.add_session(
            owner,
            count=messages_per_session,
            # Known once its messages are written.
            leaf_id=None,
            start=start,
            title=f"{owner}, conversation {n}",
        )
        for owner in owners
        for n in range(sessions_per_user)
    ]

    last: list[int | None] = [None] * sessions

    def rows() -> Iterator[dict[str, Any]]:
        order = list(range(sessions))
        message_id = first_id
        for depth in range(messages_per_session):
            rng.shuffle(order)
            for index in order:
                when = start + timedelta(microseconds=(message_id - first_id) * 1000)
                content = maker.text(user=depth % 2 == 0)
                yield message_row(message_id, ids[index], depth, last[index], when, content)
                last[index] = message_id
                message_id += 1

    seeder.add_messages(rows())
    seeder.db.executemany(
        "UPDATE sessions SET leaf_id = ? WHERE id = ?",
        ((leaf, session_id) for leaf, session_id in zip(last, ids, strict=True)),
    )
    seeder.commit()
    return Corpus(
        database=database,
        users=users,
        messages=total,
        per_user=sessions_per_user * messages_per_session,
        owner=owners[0],
    )
