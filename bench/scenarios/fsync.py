"""``fsync``: what one durable SQLite commit costs on this disk, whatever the server does.

chatbot commits twice per round trip (the user's message, then the reply), each with
``synchronous = FULL`` in WAL mode: that is a floor no server code can go below. It is
measured in the run's own scratch folder, where the servers keep their databases.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from pathlib import Path

from bench.context import Context
from bench.report import Outcome, Row


def commit_ms(folder: Path, commits: int) -> float:
    """The median time of one INSERT + COMMIT (WAL, synchronous = FULL), in milliseconds."""
    db = sqlite3.connect(folder / "fsync.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        times = []
        for index in range(commits):
            began = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (body) VALUES (?)", (f"row {index}",))
            db.execute("COMMIT")
            times.append(time.perf_counter() - began)
    finally:
        db.close()
    return statistics.median(times) * 1000


async def run(ctx: Context) -> Outcome:
    value = ctx.fsync_ms()
    row = Row(
        "fsync",
        "one SQLite commit, WAL + synchronous=FULL, median",
        "ms",
        chatbot=value,
        reference=None,
    )
    return Outcome([row], {"commit_ms": value, "commits": ctx.profile.fsync_commits})
