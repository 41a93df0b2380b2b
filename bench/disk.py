"""The disk's own time for one durable SQLite commit, in a given folder.

chatbot commits with ``synchronous = FULL`` in WAL mode. The time is taken twice: while the
write-ahead log grows (a new database; each sync also writes the file's new size) and once
the log is reused from its start after a checkpoint (a running server's steady state).
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

#: Pages in the log before a checkpoint starts it over, while measuring the reused log.
SMALL_LOG_PAGES = 64
#: Commits enough to fill such a log a few times over.
WARM_UP_COMMITS = 200


@dataclass(frozen=True)
class CommitTimes:
    """Median milliseconds of one INSERT + COMMIT, with the log growing and reused."""

    growing_ms: float
    reused_ms: float


def commit_times(folder: Path, commits: int) -> CommitTimes:
    """Time ``commits`` commits of a new database, then as many once its log is reused."""
    db = sqlite3.connect(folder / "fsync.db", isolation_level=None)

    def commit(index: int) -> float:
        began = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t (body) VALUES (?)", (f"row {index}",))
        db.execute("COMMIT")
        return time.perf_counter() - began

    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        growing = [commit(index) for index in range(commits)]
        db.execute(f"PRAGMA wal_autocheckpoint = {SMALL_LOG_PAGES}")
        for index in range(WARM_UP_COMMITS):
            commit(index)
        reused = [commit(index) for index in range(commits)]
    finally:
        db.close()
    return CommitTimes(statistics.median(growing) * 1000, statistics.median(reused) * 1000)
