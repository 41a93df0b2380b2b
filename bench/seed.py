"""Big histories written straight into chatbot's SQLite file, before its server starts.

Going through the server would take hours for a million messages. The rows are written as
the server would have written them, for the schema the file holds (read from the file, not
assumed): columns the seeder knows are filled, others keep their defaults, and a required
column it does not know stops the seeding with its name.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

#: Everything about a seeded message, by column; a column missing from the schema is skipped.
MessageFields = Callable[[int, int, str], dict[str, Any]]


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
    """Adds sessions with ``count`` alternating user/assistant messages to one database,
    all in one transaction (committed by :meth:`commit`), unsynced: a crash would only lose
    the benchmark's own data."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA synchronous = OFF")
        self.db.execute("BEGIN")
        last = self.db.execute("SELECT MAX(id) FROM messages").fetchone()[0]
        self.next_id = (last or 0) + 1

    def session(self, owner: str, count: int) -> str:
        """A new session of ``owner`` holding ``count`` messages; its id."""
        session_id = secrets.token_urlsafe(16)
        first_id = self.next_id
        self.next_id += count
        start = datetime.now(UTC) - timedelta(seconds=count)
        session = {
            "id": session_id,
            "owner": owner,
            "title": f"seeded, {count} messages",
            "backend": "echo",
            "model": "echo",
            "system_prompt": None,
            "created_at": _stamp(start),
            "updated_at": _stamp(datetime.now(UTC)),
            "message_count": count,
            "leaf_id": first_id + count - 1 if count else None,
        }
        _insert(self.db, "sessions", iter([session]), SESSION_COLUMNS)
        _insert(
            self.db, "messages", self._messages(session_id, first_id, count, start), MESSAGE_COLUMNS
        )
        return session_id

    @staticmethod
    def _messages(
        session_id: str, first_id: int, count: int, start: datetime
    ) -> Iterator[dict[str, Any]]:
        for index in range(count):
            message_id = first_id + index
            user = index % 2 == 0
            yield {
                "id": message_id,
                "session_id": session_id,
                "role": "user" if user else "assistant",
                "content": f"message number {index}" if user else f"Echo: message number {index}",
                "status": "complete",
                "client_id": None,
                # An assistant row answers the user row just before it.
                "reply_to": None if user else message_id - 1,
                "parent_id": message_id - 1 if index else None,
                "backend": None if user else "echo",
                "model": None if user else "echo",
                "usage": None,
                "created_at": _stamp(start + timedelta(microseconds=index * 1000)),
            }

    def commit(self) -> None:
        """Commit, fold the write-ahead log into the file, and close."""
        self.db.execute("COMMIT")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()


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
