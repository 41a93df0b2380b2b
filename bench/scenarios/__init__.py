"""The scenarios, by the name ``--only`` takes, in the order a run takes them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from bench.context import Context
from bench.report import Outcome
from bench.scenarios import (
    big_session,
    branches,
    cluster,
    fanout,
    fsync,
    handshake,
    history,
    idle,
    roundtrip,
    search,
    stream,
)

Scenario = Callable[[Context], Awaitable[Outcome]]

#: fsync first, so that its row sits next to the round-trip latencies it explains.
SCENARIOS: dict[str, Scenario] = {
    "fsync": fsync.run,
    "roundtrip": roundtrip.run,
    "big-session": big_session.run,
    "stream": stream.run,
    "idle": idle.run,
    "handshake": handshake.run,
    "history": history.run,
    "branches": branches.run,
    "search": search.run,
}

#: The scenarios on PostgreSQL: run after the others when ``--postgres`` names a database.
ON_POSTGRES: dict[str, Scenario] = {
    "cluster": cluster.run,
    "fanout": fanout.run,
}
