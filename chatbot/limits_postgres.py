"""Per-user limits counted in PostgreSQL, so that every server process on one database counts
the same messages and the same sockets.

**Messages per minute**: one row per user in ``rate_windows`` holds the times of the
messages allowed in the last window and the refused streak. :data:`HIT` is the whole
decision in one statement, one round trip per message: an upsert whose row lock serialises
the concurrent messages of one user (on any process), and whose times are the database's
``clock_timestamp()`` read after that lock, never a process's clock. Nothing is read first
and written second, so there is nothing to race.

**Sockets per user**: one row per open socket in ``socket_leases`` with the process that
holds it and an expiry. Each process renews the leases of its own sockets every
``heartbeat`` seconds in one statement (:data:`HEARTBEAT`), which also sweeps the expired
leases of others; a process killed with ``kill -9`` stops renewing, and its sockets stop
counting ``lease`` seconds later at most. A socket is counted under a transaction-scoped
advisory lock on its user, so two processes cannot both take a user's last slot: four round
trips, once per socket rather than per message.

Both tables are ``UNLOGGED``: a message's hit then waits for no WAL flush (a transaction that
wrote only unlogged tables commits without one), and what they hold is worth nothing after a
database crash, which empties them: windows restart, and each process puts its sockets' leases
back at its next heartbeat.

The tables are created by the PostgreSQL store's migration ``0003_limits``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from typing import TYPE_CHECKING, Any

from chatbot.limits import RATE_WINDOW_SECONDS, RateDecision, UserLimits
from chatbot.settings import Settings
from chatbot.stores.postgres import PostgresStore

if TYPE_CHECKING:
    from chatbot.stores.base import SessionStore

logger = logging.getLogger("chatbot.limits")

#: Seconds between two renewals of a process's leases.
HEARTBEAT_SECONDS = 10.0
#: Seconds a lease lasts unless renewed: three heartbeats, so that one slow or failed
#: renewal does not free the slots of sockets still open.
LEASE_SECONDS = 30.0
#: The first key of the two-key advisory locks taken on a user's sockets ("sock" in ASCII; the
#: second is the user id's hash): no other lock of the server's has this first key.
SOCKET_LOCK = 0x736F636B

#: $1 user, $2 limit, $3 window in seconds. Returns the refused streak (0: allowed) and the
#: whole seconds until the oldest time leaves the window.
HIT = """
INSERT INTO rate_windows AS w (user_id, stamps, refused, touched)
SELECT $1, ARRAY[c.t], 0, c.t FROM (SELECT clock_timestamp() AS t) AS c
ON CONFLICT (user_id) DO UPDATE SET (stamps, refused, touched) = (
    SELECT CASE WHEN cardinality(k.kept) < $2 THEN k.kept || k.t ELSE k.kept END,
           CASE WHEN cardinality(k.kept) < $2 THEN 0 ELSE w.refused + 1 END,
           k.t
    FROM (
        SELECT c.t, ARRAY(
            SELECT s FROM unnest(w.stamps) AS s
            WHERE s > c.t - make_interval(secs => $3) ORDER BY s
        ) AS kept
        FROM (SELECT clock_timestamp() AS t) AS c
        OFFSET 0  -- computed once, not once per use of kept
    ) AS k
)
RETURNING w.refused, CASE WHEN w.refused = 0 THEN 0 ELSE greatest(1, ceil(extract(
    epoch FROM w.stamps[1] + make_interval(secs => $3) - w.touched)))::int END
"""

#: $1 user. Held until the transaction that counts the socket ends.
LOCK_USER = f"SELECT pg_advisory_xact_lock({SOCKET_LOCK}, hashtext($1))"

#: $1 user, $2 socket, $3 process, $4 lease in seconds, $5 limit. Expired leases do not
#: count. Returns a row when the socket was counted.
OPEN_SOCKET = """
INSERT INTO socket_leases (socket_id, user_id, process_id, expires_at)
SELECT $2, $1, $3, now() + make_interval(secs => $4)
WHERE (
    SELECT count(*) FROM socket_leases WHERE user_id = $1 AND expires_at > now()
) < $5
RETURNING socket_id
"""

#: $1 socket, $2 user.
CLOSE_SOCKET = "DELETE FROM socket_leases WHERE socket_id = $1 AND user_id = $2"

#: $1 user.
COUNT_SOCKETS = "SELECT count(*) FROM socket_leases WHERE user_id = $1 AND expires_at > now()"

#: $1 process, $2 sockets it closed but could not delete, $3 lease, $4 window. Renews the
#: process's leases (returning them), deletes the leftovers, sweeps other processes' expired
#: leases and the windows of users idle for a whole window.
HEARTBEAT = """
WITH forgotten AS (
    DELETE FROM socket_leases WHERE process_id = $1 AND socket_id = ANY($2::text[])
), renewed AS (
    UPDATE socket_leases SET expires_at = now() + make_interval(secs => $3)
    WHERE process_id = $1 AND NOT socket_id = ANY($2::text[])
    RETURNING socket_id
), expired AS (
    DELETE FROM socket_leases WHERE expires_at <= now() AND process_id <> $1
), idle AS (
    DELETE FROM rate_windows WHERE touched <= now() - make_interval(secs => $4)
)
SELECT socket_id FROM renewed
"""

#: $1 sockets, $2 their users, $3 process, $4 lease: leases of open sockets that another
#: process swept while this one could not renew them (the database was away longer than a
#: lease). Returns the ones put back.
RESTORE = """
INSERT INTO socket_leases (socket_id, user_id, process_id, expires_at)
SELECT s, u, $3, now() + make_interval(secs => $4) FROM unnest($1::text[], $2::text[]) AS t(s, u)
ON CONFLICT (socket_id) DO NOTHING
RETURNING socket_id
"""

#: $1 sockets.
FORGET = "DELETE FROM socket_leases WHERE socket_id = ANY($1::text[])"

#: $1 process.
RELEASE_ALL = "DELETE FROM socket_leases WHERE process_id = $1"


def process_id() -> str:
    """This process among all those on the database: readable by an operator looking at
    ``socket_leases``, and unique even where two hosts share a name and a pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class PostgresLimits(UserLimits):
    """The limits in PostgreSQL, on the store's connection pool (see the module's text).

    ``pool`` is an ``asyncpg.Pool``; ``window``, ``heartbeat`` and ``lease`` are seconds.
    """

    def __init__(
        self,
        settings: Settings,
        pool: Any,
        *,
        window: float = RATE_WINDOW_SECONDS,
        heartbeat: float = HEARTBEAT_SECONDS,
        lease: float = LEASE_SECONDS,
    ) -> None:
        super().__init__(settings)
        self.pool = pool
        self.window = window
        self.heartbeat = heartbeat
        self.lease = lease
        self.process_id = process_id()
        #: Sockets closed whose lease could not be deleted then: the next heartbeat does.
        self._forgotten: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_store(cls, settings: Settings, store: SessionStore) -> PostgresLimits:
        """The limits on an opened PostgreSQL store's pool."""
        if not isinstance(store, PostgresStore):
            raise TypeError(f"PostgreSQL limits need a PostgresStore, not {type(store).__name__}")
        return cls(settings, store.pool)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._beat(), name="chatbot-limits-heartbeat")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._sockets.clear()
        try:
            await self.pool.execute(RELEASE_ALL, self.process_id)
        except Exception:
            logger.warning(
                "could not release this process's socket leases; they expire in %g s",
                self.lease,
                exc_info=True,
            )

    async def hit(self, user: str) -> RateDecision:
        row = await self.pool.fetchrow(HIT, user, self.settings.rate_limit_per_minute, self.window)
        assert row is not None  # an upsert always returns its row
        refused, retry_after = row
        if refused == 0:
            return RateDecision(allowed=True)
        return RateDecision(allowed=False, retry_after=retry_after, refused=refused)

    async def open_socket(self, user: str, socket_id: str) -> bool:
        cap = self.settings.max_sockets_per_user
        async with self.pool.acquire() as connection, connection.transaction():
            # Without the lock, two processes could each count the user's last free slot as
            # theirs: a count does not see a row that another transaction has yet to commit.
            await connection.execute(LOCK_USER, user)
            counted = await connection.fetchval(
                OPEN_SOCKET, user, socket_id, self.process_id, self.lease, cap
            )
        if counted is None:
            return False
        self._held(user, socket_id)
        return True

    async def close_socket(self, user: str, socket_id: str) -> None:
        if not self._released(user, socket_id):
            return
        try:
            await self.pool.execute(CLOSE_SOCKET, socket_id, user)
        except Exception:
            # Not renewed from now on; the next heartbeat deletes it.
            self._forgotten.add(socket_id)
            logger.warning("could not release a socket's lease; retrying later", exc_info=True)

    async def count_sockets(self, user: str) -> int:
        count: int = await self.pool.fetchval(COUNT_SOCKETS, user)
        return count

    async def renew(self) -> None:
        """One heartbeat: renew this process's leases, sweep what expired, and put back
        the leases of its open sockets that were swept while it could not renew them."""
        forgotten = list(self._forgotten)
        rows = await self.pool.fetch(HEARTBEAT, self.process_id, forgotten, self.lease, self.window)
        self._forgotten.difference_update(forgotten)
        renewed = {row[0] for row in rows}
        missing = [
            (socket_id, user)
            for user, sockets in self._sockets.items()
            for socket_id in sockets
            if socket_id not in renewed
        ]
        if missing:
            await self._restore(missing)

    async def _restore(self, missing: list[tuple[str, str]]) -> None:
        # Mostly sockets opened while the heartbeat ran, whose leases exist: nothing to do.
        ids, users = [s for s, _ in missing], [u for _, u in missing]
        restored = await self.pool.fetch(RESTORE, ids, users, self.process_id, self.lease)
        if not restored:
            return
        logger.warning(
            "%d socket leases of this process had expired (the database was unreachable "
            "for more than %g s); renewed",
            len(restored),
            self.lease,
        )
        # A socket that closed while its lease was being put back must not keep it.
        still_open = {s for sockets in self._sockets.values() for s in sockets}
        closed = [row[0] for row in restored if row[0] not in still_open]
        if closed:
            await self.pool.execute(FORGET, closed)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                await self.renew()
            except Exception:
                logger.warning(
                    "renewing the socket leases failed; trying again in %g s",
                    self.heartbeat,
                    exc_info=True,
                )
