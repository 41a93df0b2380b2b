"""Copy a whole database to another store: ``chatbot copy-store SOURCE_URL TARGET_URL``.

Every table of :data:`chatbot.stores.rows.TABLES` is copied in order, in batches, with its
keys: sessions keep their ids, messages their ids (so their order, parents and replies),
shares their ids; the usage ledger and the operators' quotas come along. The target is
migrated first; the source must be up to date (run ``chatbot migrate`` on it), and is only
read.

A row whose key the target holds is left as it is, so a second run copies nothing and a
run that was interrupted is completed by the next. Nothing may write to either database
meanwhile: stop the servers first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from chatbot.errors import ConfigError
from chatbot.stores import store_for_url
from chatbot.stores.base import SessionStore
from chatbot.stores.rows import TABLES, Rows, Table

#: Rows read, and inserted in one transaction, at a time.
BATCH = 500


@dataclass(frozen=True)
class Copied:
    """What a copy did to one table: rows inserted, and rows the target held already."""

    table: str
    copied: int
    present: int


@dataclass
class Report:
    """The migrations the copy applied to the target, and what it did to each table."""

    migrated: list[str] = field(default_factory=list)
    tables: list[Copied] = field(default_factory=list)


def rows_of(store: SessionStore) -> Rows:
    """The row access of an opened store (each store knows its own columns)."""
    from chatbot.stores.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        from chatbot.stores.sqlite_rows import SQLiteRows

        return SQLiteRows(store)
    from chatbot.stores.postgres import PostgresStore

    if isinstance(store, PostgresStore):
        from chatbot.stores.postgres_rows import PostgresRows

        return PostgresRows(store)
    raise ConfigError(f"copy-store cannot copy the tables of a {type(store).__name__}")


def _check_source(url: str) -> None:
    """A SQLite source must exist: opening a missing file would create an empty one."""
    from chatbot.stores.sqlite import path_from_url

    if urlsplit(url).scheme == "sqlite":
        path = path_from_url(url)
        if path == ":memory:" or not Path(path).is_file():
            raise ConfigError(
                f"there is no SQLite database at {path} to copy from; give the URL of the "
                "file the server uses (CHATBOT_DATABASE_URL)"
            )


@asynccontextmanager
async def _opened(url: str) -> AsyncIterator[SessionStore]:
    store = store_for_url(url, pool_size=2)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def copy_store(
    source_url: str,
    target_url: str,
    *,
    batch: int = BATCH,
    progress: Callable[[Copied], None] | None = None,
) -> Report:
    """Copy every table from the database of ``source_url`` to that of ``target_url``."""
    if source_url == target_url:
        raise ConfigError("the source and the target are the same database; name two")
    _check_source(source_url)
    report = Report()
    async with AsyncExitStack() as stack:
        source = await stack.enter_async_context(_opened(source_url))
        target = await stack.enter_async_context(_opened(target_url))
        reader, writer = rows_of(source), rows_of(target)
        pending = await reader.pending_migrations()
        if pending:
            raise ConfigError(
                f"the source database lacks the migrations {', '.join(pending)}; run "
                "`chatbot migrate` with CHATBOT_DATABASE_URL set to it, then copy again"
            )
        report.migrated = await target.migrate()
        for table in TABLES:
            copied = await _copy_table(table, reader, writer, batch)
            report.tables.append(copied)
            if progress is not None:
                progress(copied)
    return report


async def _copy_table(table: Table, reader: Rows, writer: Rows, batch: int) -> Copied:
    copied = present = 0
    after = None
    while rows := await reader.read(table, after, batch):
        inserted = await writer.write(table, rows)
        copied += inserted
        present += len(rows) - inserted
        after = table.key_of(rows[-1])
    await writer.finish(table)
    return Copied(table.name, copied, present)
