"""``stream``: streamed replies. How long the first delta takes, what the server adds to a
reply's length, and how many delta frames per second it sustains at most.

Replies come from the echo backend, one chunk per word; the bare stream route sends as many
frames with the same pause between them. A reply of N chunks 10 ms apart lasts at least
(N - 1) x 10 ms: the "added total time" is what it takes beyond that.
"""

from __future__ import annotations

import json
from functools import partial

from bench.clients import drop_all, open_many, streams
from bench.context import Context
from bench.http import request_json
from bench.report import Outcome, Row
from bench.scenarios.common import across, summaries, watched
from bench.servers import Server
from bench.stats import interleaved

DELAY = 0.01
#: With this many streams, the first delta should come less than TTFD_ADDED_MS after the
#: bare stack's.
TTFD_LEVEL = 100
TTFD_ADDED_MS = 1.0
FRAMES_TARGET = 0.5


def _message(words: int) -> str:
    return json.dumps({"message": " ".join(f"w{n}" for n in range(words)), "stream": True})


def _streams(count: int) -> str:
    return "1 stream" if count == 1 else f"{count:,} streams"


def _chunks(words: int) -> int:
    # The echo streams "Echo: " and then each word.
    return words + 1


def _slow_sessions(ctx: Context, chatbot: Server, users: list[str]) -> list[str]:
    """A session on the 10 ms echo for each user, made through the HTTP API."""
    url = f"{chatbot.base_url}/api/sessions"
    return [
        request_json("POST", url, ctx.tokens.header(user), {"backend": "echo10ms"})["session_id"]
        for user in users
    ]


async def run(ctx: Context) -> Outcome:
    profile = ctx.profile
    folder = ctx.folder("stream")
    bare, chatbot = ctx.bare(folder), ctx.chatbot(folder)
    words = profile.stream_words
    inherent_ms = (_chunks(words) - 1) * DELAY * 1000
    message = _message(words)
    bare_request = json.dumps({"chunks": _chunks(words), "delay": DELAY})
    rows: list[Row] = []
    details: dict[str, object] = {"chunks": _chunks(words), "inherent_ms": inherent_ms}
    with ctx.running(bare, chatbot):
        for level in profile.stream_levels:
            users = [f"st{level}-{n}" for n in range(level)]
            sessions = _slow_sessions(ctx, chatbot, users)
            bare_conns = await open_many(
                [(bare.ws_url("/ws/stream"), {})] * level, first_frame=False
            )
            chat_conns = await open_many(
                [
                    (chatbot.ws_url(f"/ws/chat/?session_id={session}"), ctx.tokens.header(user))
                    for user, session in zip(users, sessions, strict=True)
                ],
                first_frame=False,
            )
            try:
                results = await interleaved(
                    profile.rounds,
                    {
                        "bare": watched(
                            bare, partial(streams, bare_conns, bare_request, profile.duration)
                        ),
                        "chatbot": watched(
                            chatbot, partial(streams, chat_conns, message, profile.duration)
                        ),
                    },
                )
            finally:
                drop_all(bare_conns + chat_conns)
            details[f"{level} streams"] = summaries(results)
            first = Row(
                "stream",
                f"time to first delta p50, {_streams(level)}",
                "ms",
                chatbot=across(results["chatbot"], "first_delta_p50_ms"),
                bare=across(results["bare"], "first_delta_p50_ms"),
            )
            if level == TTFD_LEVEL and first.bare is not None:
                added = first.chatbot - first.bare
                first.held_to(f"chatbot - bare < {TTFD_ADDED_MS:g} ms", added < TTFD_ADDED_MS)
            added_total = Row(
                "stream",
                f"added total time p50, {_streams(level)} ({_chunks(words)} chunks, 10 ms apart)",
                "ms",
                chatbot=across(results["chatbot"], "p50_ms") - inherent_ms,
                bare=across(results["bare"], "p50_ms") - inherent_ms,
            )
            rows += [first, added_total]
        rows.append(await _frames(ctx, bare, chatbot, details))
    return Outcome(rows, details)


async def _frames(ctx: Context, bare: Server, chatbot: Server, details: dict[str, object]) -> Row:
    """The most delta frames per second: long replies, no pause, many streams at once."""
    profile = ctx.profile
    count, words = profile.frames_streams, profile.frames_words
    bare_request = json.dumps({"chunks": _chunks(words), "delay": 0})
    message = _message(words)
    bare_conns = await open_many([(bare.ws_url("/ws/stream"), {})] * count, first_frame=False)
    chat_conns = await open_many(
        [(chatbot.ws_url("/ws/chat/"), ctx.tokens.header(f"fr-{n}")) for n in range(count)],
        first_frame=True,
    )
    try:
        results = await interleaved(
            profile.rounds,
            {
                "bare": watched(bare, lambda: streams(bare_conns, bare_request, profile.duration)),
                "chatbot": watched(chatbot, lambda: streams(chat_conns, message, profile.duration)),
            },
        )
    finally:
        drop_all(bare_conns + chat_conns)
    details["frames"] = summaries(results)
    return Row(
        "stream",
        f"delta frames/s, {count} streams of {_chunks(words)} chunks",
        "/s",
        chatbot=across(results["chatbot"], "deltas_per_s"),
        bare=across(results["bare"], "deltas_per_s"),
    ).at_least(FRAMES_TARGET)
