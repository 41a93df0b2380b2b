"""``python -m tests.limits_holder URL USER COUNT``: a process that counts COUNT sockets of
USER in PostgreSQL, as a server whose clients keep them open would, and renews their leases
(1 s) every 0.2 s until it is killed. It prints its process id once it holds them."""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from chatbot.limits_postgres import PostgresLimits
from chatbot.settings import Settings

LEASE = 1.0
HEARTBEAT = 0.2


async def hold(url: str, user: str, count: int) -> None:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    limits = PostgresLimits(
        Settings(max_sockets_per_user=count), pool, heartbeat=HEARTBEAT, lease=LEASE
    )
    for n in range(count):
        assert await limits.open_socket(user, f"held-{n}")
    await limits.start()
    print(limits.process_id, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(hold(sys.argv[1], sys.argv[2], int(sys.argv[3])))
