"""``cluster`` (needs ``--postgres``): persisted round trips on PostgreSQL, with one server
process and with two sharing the database, against the bare echo and SQLite in the same run;
and what counting the limits in PostgreSQL costs a message.

Each connection is its own user with its own session, and sends its next message when the
reply came (as in ``roundtrip``). The servers, all pinned to the servers' CPU:

* ``bare``: the bare echo; ``sqlite``: ``chatbot serve`` on its own SQLite file;
* ``pg-1``: one ``chatbot serve`` alone on a fresh schema;
* ``pg-a`` and ``pg-b``: two ``chatbot serve`` on another schema, the connections split
  between them (at 1 connection, it is on ``pg-a`` and ``pg-b`` only listens). With both
  pinned to one CPU this measures what sharing the work costs, not what a second CPU gives;
* ``pg-1-memory-limits``: as ``pg-1``, on a third schema, but counting its per-user limits
  in its own memory (:mod:`bench.memory_limits`): against ``pg-1``, the price of the
  limits' statement (``chatbot.limits_postgres.HIT``, one round trip per message).

The limits are raised so far that no message is refused (``GENEROUS_LIMITS``); on PostgreSQL
the statement still runs for every message, and its user's row then holds the time of every
message of the last minute (thousands at a benchmark's rate), which a real limit (30 a
minute by default) would cap.
"""

from __future__ import annotations

from functools import partial

from websockets.asyncio.client import ClientConnection

from bench.clients import drop_all, open_many, roundtrips
from bench.context import Context
from bench.report import Outcome, Row
from bench.scenarios.common import across, summaries, watched, watched_all
from bench.scenarios.roundtrip import PAYLOAD, connections
from bench.servers import Server
from bench.stats import Load, interleaved

#: The measures, their labels in the rows, and what each is compared with.
SIDES = {
    "sqlite": "SQLite, 1 process",
    "pg-1": "PostgreSQL, 1 process",
    "pg-2": "PostgreSQL, 2 processes",
    "pg-1-memory-limits": "PostgreSQL, 1 process, limits in memory",
}


async def _sockets(ctx: Context, servers: list[Server], level: int) -> list[ClientConnection]:
    """``level`` sockets, each its own user and new session, spread over ``servers`` in turn."""
    return await open_many(
        [
            (servers[n % len(servers)].ws_url("/ws/chat/"), ctx.tokens.header(f"cl{level}-{n}"))
            for n in range(level)
        ],
        first_frame=True,
    )


def _rows(level: int, results: dict[str, list[Load]]) -> list[Row]:
    rows: list[Row] = []
    for side, label in SIDES.items():
        what = f"{label}, {connections(level)}"
        for figure, name, unit in (
            ("rate_per_s", "round trips/s", "/s"),
            ("p50_ms", "round-trip p50", "ms"),
            ("p99_ms", "round-trip p99", "ms"),
        ):
            rows.append(
                Row(
                    "cluster",
                    f"{name}, {what}",
                    unit,
                    chatbot=across(results[side], figure),
                    bare=across(results["bare"], figure),
                )
            )
    # The same figures against chatbot's own, for what each step adds.
    for side, reference, label in (
        ("pg-1", "sqlite", "PostgreSQL vs SQLite, 1 process"),
        ("pg-2", "pg-1", "2 processes vs 1, PostgreSQL"),
        ("pg-1", "pg-1-memory-limits", "limits in PostgreSQL vs in memory"),
    ):
        for figure, name, unit in (("rate_per_s", "round trips/s", "/s"), ("p50_ms", "p50", "ms")):
            rows.append(
                Row(
                    "cluster",
                    f"{name}, {label}, {connections(level)}",
                    unit,
                    chatbot=across(results[side], figure),
                    bare=across(results[reference], figure),
                    reference=SIDES[reference],
                )
            )
    return rows


async def run(ctx: Context) -> Outcome:
    profile = ctx.profile
    folder = ctx.folder("cluster")
    rows: list[Row] = []
    details: dict[str, object] = {}
    async with (
        ctx.schema("one") as one_url,
        ctx.schema("two") as two_url,
        ctx.schema("memory") as memory_url,
    ):
        bare, sqlite = ctx.bare(folder), ctx.chatbot(folder)
        one = ctx.chatbot_on(folder, one_url, "pg-1")
        # Started one after the other: the first creates the schema's tables.
        a, b = ctx.chatbot_on(folder, two_url, "pg-a"), ctx.chatbot_on(folder, two_url, "pg-b")
        memory = ctx.chatbot_on(folder, memory_url, "pg-1-memory-limits", memory_limits=True)
        with ctx.running(bare, sqlite, one, a, b, memory):
            for level in profile.cluster_levels:
                conns = {
                    "bare": await open_many(
                        [(bare.ws_url("/ws/echo"), {})] * level, first_frame=False
                    ),
                    "sqlite": await _sockets(ctx, [sqlite], level),
                    "pg-1": await _sockets(ctx, [one], level),
                    "pg-2": await _sockets(ctx, [a, b], level),
                    "pg-1-memory-limits": await _sockets(ctx, [memory], level),
                }
                watch = {"bare": bare, "sqlite": sqlite, "pg-1": one, "pg-1-memory-limits": memory}
                measures = {
                    side: watched(
                        watch[side], partial(roundtrips, conns[side], PAYLOAD, profile.duration)
                    )
                    for side in watch
                }
                measures["pg-2"] = watched_all(
                    [a, b], partial(roundtrips, conns["pg-2"], PAYLOAD, profile.duration)
                )
                try:
                    results = await interleaved(profile.rounds, measures)
                finally:
                    drop_all([conn for side in conns.values() for conn in side])
                details[f"{level} conns"] = summaries(results)
                rows += _rows(level, results)
    return Outcome(rows, details)
