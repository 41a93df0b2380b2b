"""``idle``: what an idle authenticated socket costs the server in memory, up to 10,000.

Each chatbot socket is its own user reopening their own session (seeded before the server
starts, so that the ramp measures sockets, not session creation); each bare socket sits on
the echo route. The servers run one at a time: resident memory does not suffer from a
neighbour's CPU the way latencies do, and two servers of 10,000 sockets each would need
20,000 client sockets at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection

from bench.clients import drop_all, open_many, still_open
from bench.context import Context
from bench.report import Outcome, Row
from bench.seed import seed_owners
from bench.servers import Server

TARGET = 1.3
#: A reading of resident memory counts once two in a row, this far apart, differ by < 1%.
SETTLE_STEP = 0.2
SETTLE_LIMIT = 5.0


async def _settled_rss(server: Server) -> int:
    """Resident memory (KiB) once it stops moving (or after SETTLE_LIMIT seconds)."""
    last = server.rss_kib()
    deadline = time.monotonic() + SETTLE_LIMIT
    while time.monotonic() < deadline:
        await asyncio.sleep(SETTLE_STEP)
        now = server.rss_kib()
        if abs(now - last) <= last * 0.01:
            return now
        last = now
    return last


async def _ramp(
    server: Server,
    targets: Sequence[tuple[str, dict[str, str]]],
    levels: Sequence[int],
    hold: float,
) -> list[dict[str, Any]]:
    """Open sockets up to each level in turn; the memory and the sockets held at each."""
    # One socket first, so that code loaded on first use is not counted per socket.
    for conn in await open_many(targets[:1], first_frame=False):
        await conn.close()
    base = await _settled_rss(server)
    conns: list[ClientConnection] = []
    figures = []
    try:
        for level in levels:
            conns += await open_many(targets[len(conns) : level], first_frame=False, tolerate=True)
            await asyncio.sleep(hold)
            server.check_running()
            rss = await _settled_rss(server)
            figures.append(
                {
                    "sockets": level,
                    "held": still_open(conns),
                    "base_rss_kib": base,
                    "rss_kib": rss,
                    "per_socket_kib": (rss - base) / level,
                }
            )
    finally:
        drop_all(conns)
    return figures


async def run(ctx: Context) -> Outcome:
    profile = ctx.profile
    levels = sorted(profile.idle_levels)
    top = levels[-1]
    folder = ctx.folder("idle")
    database = ctx.migrated(folder)
    owners = [f"idle-{n}" for n in range(top)]
    sessions = seed_owners(database, owners)
    bare, chatbot = ctx.bare(folder), ctx.chatbot(folder, database)
    sides: dict[str, tuple[Server, list[tuple[str, dict[str, str]]]]] = {
        "bare": (bare, [(bare.ws_url("/ws/echo"), {})] * top),
        "chatbot": (
            chatbot,
            [
                (chatbot.ws_url(f"/ws/chat/?session_id={session}"), ctx.tokens.header(owner))
                for owner, session in zip(owners, sessions, strict=True)
            ],
        ),
    }
    figures: dict[str, list[dict[str, Any]]] = {}
    for side, (server, targets) in sides.items():
        with ctx.running(server):
            figures[side] = await _ramp(server, targets, levels, profile.hold)
    rows = []
    for index, level in enumerate(levels):
        row = Row(
            "idle",
            f"RSS growth per idle socket, {level:,} sockets",
            "KiB",
            chatbot=figures["chatbot"][index]["per_socket_kib"],
            bare=figures["bare"][index]["per_socket_kib"],
        )
        rows.append(row.at_most(TARGET) if level == top else row)
    held = figures["chatbot"][-1]["held"]
    rows.append(
        Row(
            "idle",
            f"idle sockets held, of {top:,}",
            "",
            chatbot=held,
            bare=figures["bare"][-1]["held"],
        ).held_to(f"all {top:,} held", held == top)
    )
    return Outcome(rows, figures)
