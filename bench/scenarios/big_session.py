"""``big-session``: round trips at one connection in a session that already holds a million
messages, beside the same in a new session of the same server and the bare echo.

A session's size should not slow its next message down: only the newest messages matter
to a reply. The session is seeded into the database before the server starts.
"""

from __future__ import annotations

from bench.clients import drop_all, open_many, roundtrips
from bench.context import Context
from bench.report import Outcome, Row
from bench.scenarios.common import across, summaries, watched
from bench.scenarios.roundtrip import PAYLOAD
from bench.stats import interleaved

#: Round trips in the big session should reach this fraction of a new session's.
TARGET = 1 / 1.2


async def run(ctx: Context) -> Outcome:
    profile = ctx.profile
    history = ctx.history()
    owner, session_id, count = history.big
    folder = ctx.folder("big-session")
    bare, chatbot = ctx.bare(folder), ctx.chatbot(folder, history.database)
    headers = ctx.tokens.header(owner)
    with ctx.running(bare, chatbot):
        bare_conns = await open_many([(bare.ws_url("/ws/echo"), {})], first_frame=False)
        big_conns = await open_many(
            [(chatbot.ws_url(f"/ws/chat/?session_id={session_id}"), headers)], first_frame=False
        )
        new_conns = await open_many([(chatbot.ws_url("/ws/chat/"), headers)], first_frame=True)
        try:
            results = await interleaved(
                profile.rounds,
                {
                    "bare": watched(
                        bare, lambda: roundtrips(bare_conns, PAYLOAD, profile.duration)
                    ),
                    "big": watched(
                        chatbot, lambda: roundtrips(big_conns, PAYLOAD, profile.duration)
                    ),
                    "new": watched(
                        chatbot, lambda: roundtrips(new_conns, PAYLOAD, profile.duration)
                    ),
                },
            )
        finally:
            drop_all(bare_conns + big_conns + new_conns)
    bare_rate = across(results["bare"], "rate_per_s")
    big_rate = across(results["big"], "rate_per_s")
    new_rate = across(results["new"], "rate_per_s")
    size = f"{count:,}-message session"
    rows = [
        Row(
            "big-session",
            f"round trips/s, 1 connection, {size}",
            "/s",
            chatbot=big_rate,
            bare=bare_rate,
        ),
        Row(
            "big-session",
            f"round-trip p50, 1 connection, {size}",
            "ms",
            chatbot=across(results["big"], "p50_ms"),
            bare=across(results["bare"], "p50_ms"),
        ),
        Row(
            "big-session",
            "round trips/s, 1 connection, new session",
            "/s",
            new_rate,
            bare=bare_rate,
        ),
        Row(
            "big-session",
            f"round trips/s, {size} vs new session",
            "/s",
            chatbot=big_rate,
            bare=new_rate,
            reference="new session",
        ).at_least(TARGET, "1/1.2"),
    ]
    return Outcome(rows, {"messages": count, **summaries(results)})
