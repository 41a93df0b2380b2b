"""``history``: reading history over HTTP. A page of 50 messages from a session of 10,000 and
of 1,000,000 messages, and a user's session list when they have 1,000 sessions, against the
bare stack's JSON GET (a page of 50 message-shaped objects).

One client, one request at a time on a keep-alive connection: the latency is the server's
time for a request, and the rate follows from it.
"""

from __future__ import annotations

import json
from functools import partial

from bench.context import Context
from bench.http import HttpError, KeepAliveClient, gets
from bench.report import Outcome, Row
from bench.scenarios.common import across, summaries, watched
from bench.stats import interleaved

PAGE = 50
#: A page from the big session within this factor of the smaller session's, and this p99.
SIZE_FACTOR = 1.5
P99_MS = 5.0


async def _check(port: int, path: str, headers: dict[str, str], key: str, length: int) -> None:
    """One request before measuring: the answer holds the ``length`` items it should."""
    async with KeepAliveClient("127.0.0.1", port, headers) as client:
        status, body = await client.get(path)
    items = json.loads(body).get(key) if status == 200 else None
    if not isinstance(items, list) or len(items) != length:
        raise HttpError(f"GET {path}: {status}, not {length} {key}: {body[:200]!r}")


async def run(ctx: Context) -> Outcome:
    profile = ctx.profile
    history = ctx.history()
    folder = ctx.folder("history")
    bare, chatbot = ctx.bare(folder), ctx.chatbot(folder, history.database)
    small_owner, small_id, small_count = history.small
    big_owner, big_id, big_count = history.big
    many_owner, many_count = history.many
    requests = {
        "bare": (bare, f"/json?items={PAGE}", {}, "messages", PAGE),
        "small": (
            chatbot,
            f"/api/sessions/{small_id}/messages?limit={PAGE}",
            ctx.tokens.header(small_owner),
            "messages",
            PAGE,
        ),
        "big": (
            chatbot,
            f"/api/sessions/{big_id}/messages?limit={PAGE}",
            ctx.tokens.header(big_owner),
            "messages",
            PAGE,
        ),
        # The API's default page of sessions is 20.
        "sessions": (chatbot, "/api/sessions", ctx.tokens.header(many_owner), "sessions", 20),
    }
    with ctx.running(bare, chatbot):
        for server, path, headers, key, length in requests.values():
            await _check(server.port, path, headers, key, length)
        results = await interleaved(
            profile.rounds,
            {
                name: watched(
                    server, partial(gets, "127.0.0.1", server.port, path, headers, profile.duration)
                )
                for name, (server, path, headers, _key, _length) in requests.items()
            },
        )
    rows: list[Row] = []
    for name, what in (
        ("small", f"messages page of {PAGE}, {small_count:,}-message session"),
        ("big", f"messages page of {PAGE}, {big_count:,}-message session"),
        ("sessions", f"session list, user with {many_count:,} sessions"),
    ):
        p99 = Row(
            "history",
            f"{what}, p99",
            "ms",
            chatbot=across(results[name], "p99_ms"),
            bare=across(results["bare"], "p99_ms"),
        )
        if name == "big":
            p99.held_to(f"< {P99_MS:g} ms", p99.chatbot < P99_MS)
        rows += [
            Row(
                "history",
                f"{what}, requests/s",
                "/s",
                chatbot=across(results[name], "rate_per_s"),
                bare=across(results["bare"], "rate_per_s"),
            ),
            Row(
                "history",
                f"{what}, p50",
                "ms",
                chatbot=across(results[name], "p50_ms"),
                bare=across(results["bare"], "p50_ms"),
            ),
            p99,
        ]
    rows.append(
        Row(
            "history",
            f"messages page p50, {big_count:,} vs {small_count:,}-message session",
            "ms",
            chatbot=across(results["big"], "p50_ms"),
            bare=across(results["small"], "p50_ms"),
            reference=f"{small_count:,} messages",
        ).at_most(SIZE_FACTOR)
    )
    return Outcome(rows, summaries(results))
