"""Two SQLite connections, each on its own thread: one that writes with group commit, one
that reads.

Writes from all sessions go to one thread, which takes whatever is waiting, runs the pieces
inside one ``BEGIN IMMEDIATE`` transaction and commits once: one fsync for the lot. When a
piece fails, the group is run again with a savepoint around each piece, so that the
failing piece rolls back alone. Each caller's future resolves
only after that commit, so a frame that acknowledges a write is still sent only once the
write is on disk. Reads go to another thread and connection; in WAL mode they never wait
for the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
#: The most writes committed together; more stay queued for the next commit.
MAX_BATCH = 512

PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
)

Work = Callable[[sqlite3.Connection], Any]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


def connect(path: str, synchronous: str) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves) with our pragmas."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.row_factory = sqlite3.Row
    for pragma in PRAGMAS:
        connection.execute(pragma)
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    return connection


class _Thread:
    """A thread that owns one connection and runs the work queued for it."""

    def __init__(self, connection: sqlite3.Connection, name: str, *, batches: bool) -> None:
        self.connection = connection
        self._batches = batches
        self._queue: queue.SimpleQueue[tuple[Work, asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, work: Work) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put((work, future))
        return future

    async def stop(self) -> None:
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self.connection.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while self._batches and len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            outcomes = self._commit(batch) if self._batches else [self._read(*item)]
            _resolve_all(outcomes)
            if stop:
                return

    def _read(self, work: Work, future: asyncio.Future[Any]) -> _Outcome:
        try:
            return future, work(self.connection), None
        except BaseException as exc:  # handed to the awaiting coroutine
            return future, None, exc

    def _begin(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> list[_Outcome] | None:
        """Take the write lock; the whole group's failure if the database refuses it."""
        try:
            self.connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return [(future, None, exc) for _, future in batch]
        return None

    def _commit(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> list[_Outcome]:
        db = self.connection
        refused = self._begin(batch)
        if refused is not None:
            return refused
        # The usual group: every piece succeeds, and none needs a savepoint of its own.
        outcomes: list[_Outcome] = []
        for work, future in batch:
            try:
                outcomes.append((future, work(db), None))
            except BaseException as exc:
                db.execute("ROLLBACK")
                if len(batch) == 1:
                    return [(future, None, exc)]
                # A piece failed (a repeated id, a deleted session): run the group again,
                # each piece in a savepoint, so that only the failing ones are undone. The
                # pieces are functions of the database alone, so running one twice is safe.
                return self._commit_pieces(batch)
        return self._finish(outcomes)

    def _commit_pieces(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> list[_Outcome]:
        db = self.connection
        refused = self._begin(batch)
        if refused is not None:
            return refused
        outcomes: list[_Outcome] = []
        for work, future in batch:
            db.execute("SAVEPOINT piece")
            try:
                outcomes.append((future, work(db), None))
            except BaseException as exc:
                # Only this piece is undone; the others still commit.
                db.execute("ROLLBACK TO piece")
                outcomes.append((future, None, exc))
            db.execute("RELEASE piece")
        return self._finish(outcomes)

    def _finish(self, outcomes: list[_Outcome]) -> list[_Outcome]:
        db = self.connection
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            return [(future, None, exc) for future, _, _ in outcomes]
        return outcomes


def _resolve_all(outcomes: list[_Outcome]) -> None:
    """Hand every result to its loop in one call per loop (one thread hop per batch)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, mine in by_loop.items():
        # A closed loop: nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_resolve, mine)


def _resolve(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class Database:
    """The store's two connections: :meth:`write` (group-committed) and :meth:`read`."""

    def __init__(self, path: str, synchronous: str = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._writer: _Thread | None = None
        self._reader: _Thread | None = None

    async def open(self) -> None:
        writer = await asyncio.to_thread(connect, self.path, self.synchronous)
        try:
            reader = await asyncio.to_thread(connect, self.path, self.synchronous)
        except BaseException:
            writer.close()
            raise
        self._writer = _Thread(writer, "chatbot-sqlite-writer", batches=True)
        self._reader = _Thread(reader, "chatbot-sqlite-reader", batches=False)

    async def close(self) -> None:
        for thread in (self._writer, self._reader):
            if thread is not None:
                await thread.stop()
        self._writer = self._reader = None

    def _thread(self, thread: _Thread | None) -> _Thread:
        if thread is None:
            raise RuntimeError("the store is not open")
        return thread

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in the next group commit; its result once that commit is durable."""
        # Not shielded: a caller cancelled while it waits stops waiting, and the write is
        # still committed with its group (the thread skips a cancelled future).
        result: T = await self._thread(self._writer).submit(work)
        return result

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the reading connection (wrap several statements in BEGIN/COMMIT
        for one snapshot)."""
        result: T = await self._thread(self._reader).submit(work)
        return result

    @property
    def reader(self) -> sqlite3.Connection:
        """The reading connection, for tests that inspect pragmas and query plans."""
        return self._thread(self._reader).connection

    @property
    def writer(self) -> sqlite3.Connection:
        """The writing connection, for tests that trace its statements."""
        return self._thread(self._writer).connection
