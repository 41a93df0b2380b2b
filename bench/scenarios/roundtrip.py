"""``roundtrip``: persisted round trips at 1 to 500 connections, against the bare echo.

Each connection sends a message, waits for the reply, and sends the next, for the round's
duration. chatbot stores both messages of every round trip; the bare echo sends the frame
back. Each chatbot connection is its own user with its own session.
"""

from __future__ import annotations

import json
from functools import partial

from bench.clients import drop_all, open_many, roundtrips
from bench.context import Context
from bench.report import Outcome, Row
from bench.scenarios.common import across, summaries, watched
from bench.stats import interleaved

PAYLOAD = json.dumps({"message": "hello there, how are you?"})
#: Round trips at this many connections should reach half of the bare echo's.
THROUGHPUT_LEVEL = 100
THROUGHPUT_TARGET = 0.5
#: Where the same server on synchronous=normal is measured too.
NORMAL_LEVELS = (1, 100)


def connections(count: int) -> str:
    return "1 connection" if count == 1 else f"{count:,} connections"


async def run(ctx: Context) -> Outcome:
    profile = ctx.profile
    folder = ctx.folder("roundtrip")
    bare, chatbot = ctx.bare(folder), ctx.chatbot(folder)
    # The same server on synchronous=normal (see docs/performance.md): what FULL costs.
    normal_folder = ctx.folder("roundtrip-normal")
    normal = ctx.chatbot(normal_folder, synchronous="normal")
    # A server past its first few thousand commits reuses its log (see fsync).
    fsync = ctx.commit_times().reused_ms
    rows: list[Row] = []
    details: dict[str, object] = {"fsync_ms": fsync}
    with ctx.running(bare, chatbot, normal):
        for level in profile.roundtrip_levels:
            with_normal = level in NORMAL_LEVELS
            bare_conns = await open_many([(bare.ws_url("/ws/echo"), {})] * level, first_frame=False)
            users = [ctx.tokens.header(f"rt{level}-{n}") for n in range(level)]
            chat_conns = await open_many(
                [(chatbot.ws_url("/ws/chat/"), headers) for headers in users], first_frame=True
            )
            normal_conns = (
                await open_many(
                    [(normal.ws_url("/ws/chat/"), headers) for headers in users],
                    first_frame=True,
                )
                if with_normal
                else []
            )
            measures = {
                "bare": watched(bare, partial(roundtrips, bare_conns, PAYLOAD, profile.duration)),
                "chatbot": watched(
                    chatbot, partial(roundtrips, chat_conns, PAYLOAD, profile.duration)
                ),
            }
            if with_normal:
                measures["normal"] = watched(
                    normal, partial(roundtrips, normal_conns, PAYLOAD, profile.duration)
                )
            try:
                results = await interleaved(profile.rounds, measures)
            finally:
                drop_all(bare_conns + chat_conns + normal_conns)
            details[f"{level} conns"] = summaries(results)
            rate = Row(
                "roundtrip",
                f"round trips/s, {connections(level)}",
                "/s",
                chatbot=across(results["chatbot"], "rate_per_s"),
                bare=across(results["bare"], "rate_per_s"),
            )
            if level == THROUGHPUT_LEVEL:
                rate.at_least(THROUGHPUT_TARGET)
            p50 = Row(
                "roundtrip",
                f"round-trip p50, {connections(level)}",
                "ms",
                chatbot=across(results["chatbot"], "p50_ms"),
                bare=across(results["bare"], "p50_ms"),
            )
            if level == 1 and p50.bare is not None:
                bound = 2 * p50.bare + 2 * fsync
                p50.held_to(f"<= 2x bare + 2x fsync = {bound:.2f} ms", p50.chatbot <= bound)
            p99 = Row(
                "roundtrip",
                f"round-trip p99, {connections(level)}",
                "ms",
                chatbot=across(results["chatbot"], "p99_ms"),
                bare=across(results["bare"], "p99_ms"),
            )
            rows += [rate, p50, p99]
            if with_normal:
                rows += [
                    Row(
                        "roundtrip",
                        f"round trips/s, {connections(level)}, synchronous=normal",
                        "/s",
                        chatbot=across(results["normal"], "rate_per_s"),
                        bare=across(results["bare"], "rate_per_s"),
                    ),
                    Row(
                        "roundtrip",
                        f"round-trip p50, {connections(level)}, synchronous=normal",
                        "ms",
                        chatbot=across(results["normal"], "p50_ms"),
                        bare=across(results["bare"], "p50_ms"),
                    ),
                ]
    return Outcome(rows, details)
