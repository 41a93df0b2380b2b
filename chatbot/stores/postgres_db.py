"""The PostgreSQL store's connections: an asyncpg pool, and its two kinds of transaction.

The driver is imported here, and only when a ``postgresql://`` URL chose this store; without
it the server stops with a :class:`~chatbot.errors.ConfigError` naming the extra to install.

Durability and group commit: a write returns once PostgreSQL has committed it, and with the
server's default ``synchronous_commit = on`` that means its WAL is flushed to disk. Nothing
is batched here, unlike on SQLite: when several transactions commit at once, the first
backend to flush the WAL flushes the others' commit records with its own, and they find
theirs already on disk (PostgreSQL's own group commit; ``commit_delay`` widens the groups on
a busy server). So concurrent turns share fsyncs without waiting for one another here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from chatbot.errors import ConfigError
from chatbot.stores.postgres_codecs import prepare_connection

try:
    import asyncpg
except ImportError:
    raise ConfigError(
        "CHATBOT_DATABASE_URL names a PostgreSQL database, whose driver is not installed; "
        "install it with: pip install 'chatbot[postgres]'"
    ) from None

#: Connections of the pool unless CHATBOT_DATABASE_POOL_SIZE says otherwise.
DEFAULT_POOL_SIZE = 10
#: Seconds to wait for a connection to the server before giving up.
CONNECT_TIMEOUT = 10.0
#: What a failure to reach or use the database raises, for the one-line ConfigError.
DATABASE_ERRORS = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def describe_url(url: str) -> str:
    """The database a URL names, without its password: for messages and logs."""
    parts = urlsplit(url)
    user = f"{parts.username}@" if parts.username else ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{user}{parts.hostname or ''}{port}{parts.path}"


async def reset_connection(connection: Any) -> None:
    """What a connection needs when it goes back to the pool: only a transaction a failure
    left open rolled back. asyncpg's default runs a statement on every release (``RESET
    ALL``, ``UNLISTEN *``, unlocking advisory locks), a tenth of a busy process's time; none
    of it is needed, as nothing here changes a setting, listens on a pooled connection or
    holds a lock beyond its transaction (the migration lock is released where it is
    taken)."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


class Database:
    """A pool of at most ``pool_size`` connections to the database of ``url``."""

    def __init__(self, url: str, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        if urlsplit(url).scheme not in ("postgresql", "postgres"):
            raise ConfigError(
                f"not a PostgreSQL URL: {describe_url(url)}; write "
                "postgresql://user:password@host:5432/database"
            )
        if pool_size < 1:
            raise ConfigError(
                f"the pool of PostgreSQL connections needs 1 or more, not {pool_size}"
            )
        self.url = url
        self.pool_size = pool_size
        self._pool: Any = None

    @property
    def pool(self) -> Any:
        """The ``asyncpg.Pool``; ``RuntimeError`` before :meth:`open`."""
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    def unusable(self, exc: BaseException) -> ConfigError:
        """The one-line error of a database that cannot be reached or used (no password)."""
        reason = str(exc).strip() or type(exc).__name__
        return ConfigError(
            f"cannot use the PostgreSQL database {describe_url(self.url)}: {reason}; check "
            "CHATBOT_DATABASE_URL (user, password, host, port, database) and that the server "
            "accepts connections"
        )

    async def open(self) -> None:
        """Connect (one connection now, more as they are needed)."""
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                init=prepare_connection,
                reset=reset_connection,
                timeout=CONNECT_TIMEOUT,
            )
        except (*DATABASE_ERRORS, ValueError) as exc:
            raise self.unusable(exc) from None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[Any]:
        """A connection inside a transaction, committed when the block ends (rolled back
        if it raises)."""
        async with self.pool.acquire() as db, db.transaction():
            yield db

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Any]:
        """A connection inside a read-only transaction that sees one snapshot."""
        async with (
            self.pool.acquire() as db,
            db.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield db
