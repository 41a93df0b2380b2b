"""``fanout`` (needs ``--postgres``): how long a reply takes to reach a socket on another
server process than the one that answered, against a socket on that same process.

Two ``chatbot serve`` share a fresh PostgreSQL schema. One user has three sockets on one
session: the sender and an observer on process A, and an observer on process B. The sender
sends a message, waits until all three have the reply, and sends the next; for each
message, the time from the send to the reply frame on each observer. A's observer gets the
reply from A's own hub; B's through ``NOTIFY`` on the database, after which B reads the
reply's row. What B adds is taken message by message (B's time minus A's).

The same with streamed replies (the 10 ms echo, ``stream_words`` words): the time to the
first delta frame and to the reply on each observer. A gathers a session's deltas for up to
30 ms before it notifies them (``chatbot.hub.postgres.FLUSH_SECONDS``), so B's first delta
comes that much later by design.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection

from bench.clients import BenchError, next_frame, open_socket
from bench.context import Context
from bench.http import request_json
from bench.report import Outcome, Row
from bench.stats import percentile

#: Messages sent and answered before the ones measured: connections and caches warm.
WARM_UP = 5


def _ms(values: list[float], fraction: float) -> float:
    return percentile(values, fraction) * 1000


async def _until(conn: ClientConnection, want: Callable[[dict[str, Any]], bool]) -> float:
    """The time the first frame ``want`` accepts arrives (earlier frames are skipped)."""
    while not want(await next_frame(conn)):
        pass
    return time.perf_counter()


def _reply(frame: dict[str, Any]) -> bool:
    return "message" in frame and frame.get("type", "message") == "message"


def _delta(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "delta"


async def _timed(conn: ClientConnection, streamed: bool) -> tuple[float, float]:
    """When the first delta (streamed; else the reply) and when the reply arrive."""
    first = await _until(conn, _delta) if streamed else 0.0
    return first, await _until(conn, _reply)


async def _exchange(
    sender: ClientConnection,
    observers: dict[str, ClientConnection],
    payload: str,
    streamed: bool,
) -> dict[str, tuple[float, float]]:
    """One message: per observer, (first delta, reply) in seconds after the send."""
    waits = {
        name: asyncio.ensure_future(_timed(conn, streamed)) for name, conn in observers.items()
    }
    own = asyncio.ensure_future(_until(sender, _reply))
    sent = time.perf_counter()
    await sender.send(payload)
    try:
        done = await asyncio.gather(*waits.values(), own)
    except BaseException:
        for wait in [*waits.values(), own]:
            wait.cancel()
        raise
    return {
        name: (first - sent if streamed else 0.0, reply - sent)
        for name, (first, reply) in zip(waits, done[:-1], strict=True)
    }


async def _series(
    sender: ClientConnection,
    observers: dict[str, ClientConnection],
    count: int,
    streamed: bool,
    text: str,
) -> dict[str, list[tuple[float, float]]]:
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in observers}
    for n in range(WARM_UP + count):
        payload = json.dumps({"message": f"{text} {n}", **({"stream": True} if streamed else {})})
        result = await _exchange(sender, observers, payload, streamed)
        if n >= WARM_UP:
            for name, pair in result.items():
                times[name].append(pair)
    return times


def _rows(what: str, same: list[float], other: list[float]) -> list[Row]:
    added = [b - a for a, b in zip(same, other, strict=True)]
    return [
        Row("fanout", f"{what} p50, observer on the other process", "ms",
            chatbot=_ms(other, 0.5), bare=_ms(same, 0.5), reference="same process"),
        Row("fanout", f"{what} p99, observer on the other process", "ms",
            chatbot=_ms(other, 0.99), bare=_ms(same, 0.99), reference="same process"),
        Row("fanout", f"{what}, added by the other process, p50", "ms",
            chatbot=_ms(added, 0.5), reference=None),
        Row("fanout", f"{what}, added by the other process, p99", "ms",
            chatbot=_ms(added, 0.99), reference=None),
    ]  # fmt: skip


async def run(ctx: Context) -> Outcome:
    profile = ctx.profile
    folder = ctx.folder("fanout")
    rows: list[Row] = []
    details: dict[str, Any] = {}
    headers = ctx.tokens.header("fanout")
    async with ctx.schema("fanout") as url:
        a, b = ctx.chatbot_on(folder, url, "pg-a"), ctx.chatbot_on(folder, url, "pg-b")
        with ctx.running(a, b):
            for streamed in (False, True):
                body = {"backend": "echo10ms"} if streamed else {}
                session = request_json("POST", f"{a.base_url}/api/sessions", headers, body)[
                    "session_id"
                ]
                query = f"/ws/chat/?session_id={session}" + ("&stream=1" if streamed else "")
                sender = await open_socket(a.ws_url(query), headers)
                observers = {
                    "same": await open_socket(a.ws_url(query), headers),
                    "other": await open_socket(b.ws_url(query), headers),
                }
                try:
                    count = profile.fanout_streams if streamed else profile.fanout_messages
                    words = " ".join(["word"] * (profile.stream_words - 1))
                    times = await _series(sender, observers, count, streamed, words)
                finally:
                    for conn in [sender, *observers.values()]:
                        conn.transport.abort()
                a.check_running()
                b.check_running()
                same, other = times["same"], times["other"]
                if streamed:
                    details["streamed"] = {"messages": count, "words": profile.stream_words}
                    rows += _rows("time to the first delta", [t[0] for t in same],
                                  [t[0] for t in other])  # fmt: skip
                    rows += _rows("time to the streamed reply", [t[1] for t in same],
                                  [t[1] for t in other])  # fmt: skip
                else:
                    details["replies"] = {"messages": count}
                    rows += _rows("time to the reply", [t[1] for t in same],
                                  [t[1] for t in other])  # fmt: skip
                details["streamed" if streamed else "replies"]["seconds"] = {
                    name: [[round(x, 6) for x in pair] for pair in pairs]
                    for name, pairs in times.items()
                }
    if not rows:
        raise BenchError("no message was measured")
    return Outcome(rows, details)
