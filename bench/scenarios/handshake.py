"""``handshake``: authenticated handshakes per second, each creating a session, against the
bare stack accepting a socket and sending its first frame.

A chatbot handshake checks the token, creates and stores a session, and sends its id. The
clients cycle through many users, as many people signing in would.
"""

from __future__ import annotations

from bench.clients import handshakes
from bench.context import Context
from bench.report import Outcome, Row
from bench.scenarios.common import across, summaries, watched
from bench.stats import interleaved

USERS = 1000
TARGET = 0.7


async def run(ctx: Context) -> Outcome:
    profile = ctx.profile
    folder = ctx.folder("handshake")
    bare, chatbot = ctx.bare(folder), ctx.chatbot(folder)
    headers = [ctx.tokens.header(f"hs-{n}") for n in range(USERS)]
    bare_url, chat_url = bare.ws_url("/ws/echo?hello=1"), chatbot.ws_url("/ws/chat/")

    def bare_target(n: int) -> tuple[str, dict[str, str]]:
        return bare_url, {}

    def chat_target(n: int) -> tuple[str, dict[str, str]]:
        return chat_url, headers[n % USERS]

    concurrency = profile.handshake_concurrency
    with ctx.running(bare, chatbot):
        results = await interleaved(
            profile.rounds,
            {
                "bare": watched(
                    bare, lambda: handshakes(bare_target, concurrency, profile.duration)
                ),
                "chatbot": watched(
                    chatbot, lambda: handshakes(chat_target, concurrency, profile.duration)
                ),
            },
        )
    rows = [
        Row(
            "handshake",
            f"handshakes/s, {concurrency} clients",
            "/s",
            chatbot=across(results["chatbot"], "rate_per_s"),
            bare=across(results["bare"], "rate_per_s"),
        ).at_least(TARGET),
        Row(
            "handshake",
            "handshake p50 (to the first frame)",
            "ms",
            chatbot=across(results["chatbot"], "p50_ms"),
            bare=across(results["bare"], "p50_ms"),
        ),
    ]
    return Outcome(rows, {"concurrency": concurrency, **summaries(results)})
