"""The WebSocket load generator: round trips, streams, handshakes and idle sockets.

The same code drives the bare server and chatbot, so its own cost weighs on both sides of
a ratio. Every wait is bounded; a frame that is not what the protocol promises stops the
run with the frame in the message, rather than being counted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from bench.stats import Load

OPEN_TIMEOUT = 60.0
REPLY_TIMEOUT = 120.0
#: Handshakes in flight at once while opening many sockets.
OPENING_CONCURRENCY = 100


class BenchError(RuntimeError):
    """The server answered something the benchmark cannot count."""


async def open_socket(url: str, headers: dict[str, str] | None = None) -> ClientConnection:
    """A client socket with no compression (the servers refuse it) and no client pings."""
    return await connect(
        url,
        additional_headers=headers,
        compression=None,
        ping_interval=None,
        open_timeout=OPEN_TIMEOUT,
        close_timeout=5,
        max_size=4 * 1024 * 1024,
    )


def _frame(text: Any) -> dict[str, Any]:
    frame = json.loads(text)
    if not isinstance(frame, dict):
        raise BenchError(f"a frame that is not a JSON object: {str(text)[:200]}")
    if frame.get("type") == "error" or "error" in frame:
        raise BenchError(f"the server answered with an error frame: {str(text)[:300]}")
    return frame


async def next_frame(conn: ClientConnection) -> dict[str, Any]:
    """The next frame, as a JSON object; an error frame raises ``BenchError``."""
    return _frame(await asyncio.wait_for(conn.recv(), REPLY_TIMEOUT))


def _is_reply(frame: dict[str, Any]) -> bool:
    return "message" in frame and frame.get("type", "message") == "message"


async def _reply(conn: ClientConnection) -> None:
    # Frames of other kinds (a title, a branch) may come between; only the reply counts.
    while not _is_reply(await next_frame(conn)):
        pass


async def roundtrips(conns: Sequence[ClientConnection], payload: str, duration: float) -> Load:
    """Each socket sends ``payload`` and waits for the reply, again and again, for
    ``duration`` seconds; the round ends when the last reply in flight has come."""
    start = time.perf_counter()
    until = start + duration

    async def worker(conn: ClientConnection) -> list[float]:
        latencies: list[float] = []
        while (sent := time.perf_counter()) < until:
            await conn.send(payload)
            await _reply(conn)
            latencies.append(time.perf_counter() - sent)
        return latencies

    per_socket = await asyncio.gather(*(worker(conn) for conn in conns))
    load = Load(elapsed=time.perf_counter() - start)
    load.latencies = [value for values in per_socket for value in values]
    load.count = len(load.latencies)
    return load


async def streams(conns: Sequence[ClientConnection], payload: str, duration: float) -> Load:
    """Like :func:`roundtrips`, each reply streamed: also counts the delta frames and times
    the first delta of each reply."""
    start = time.perf_counter()
    until = start + duration
    load = Load()

    async def worker(conn: ClientConnection) -> None:
        while (sent := time.perf_counter()) < until:
            await conn.send(payload)
            first: float | None = None
            while True:
                frame = await next_frame(conn)
                if frame.get("type") == "delta":
                    load.deltas += 1
                    if first is None:
                        first = time.perf_counter() - sent
                elif _is_reply(frame):
                    break
            if first is None:
                raise BenchError("a streamed reply came without a delta frame")
            load.first_delta.append(first)
            load.latencies.append(time.perf_counter() - sent)

    await asyncio.gather(*(worker(conn) for conn in conns))
    load.elapsed = time.perf_counter() - start
    load.count = len(load.latencies)
    return load


async def handshakes(
    target: Callable[[int], tuple[str, dict[str, str]]], concurrency: int, duration: float
) -> Load:
    """Open a socket, wait for its first frame (a new session's id), close it; again and
    again from ``concurrency`` clients. ``target(n)`` gives the n-th socket's URL and headers.
    The latency is the time to the first frame."""
    start = time.perf_counter()
    until = start + duration
    numbers = itertools.count()
    load = Load()

    async def worker() -> None:
        while (began := time.perf_counter()) < until:
            url, headers = target(next(numbers))
            conn = await open_socket(url, headers)
            frame = await next_frame(conn)
            if "session_id" not in frame:
                raise BenchError(f"the first frame holds no session_id: {frame}")
            load.latencies.append(time.perf_counter() - began)
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    load.elapsed = time.perf_counter() - start
    load.count = len(load.latencies)
    return load


async def open_many(
    targets: Sequence[tuple[str, dict[str, str]]], *, first_frame: bool, tolerate: bool = False
) -> list[ClientConnection]:
    """Open one socket per (URL, headers), a bounded number of handshakes at a time; with
    ``first_frame``, each waits for its first frame (a new session's id). With ``tolerate``,
    sockets that fail to open are left out instead of failing the whole."""
    gate = asyncio.Semaphore(OPENING_CONCURRENCY)

    async def one(url: str, headers: dict[str, str]) -> ClientConnection:
        async with gate:
            conn = await open_socket(url, headers)
            if first_frame:
                await next_frame(conn)
            return conn

    opened = await asyncio.gather(
        *(one(url, headers) for url, headers in targets), return_exceptions=tolerate
    )
    return [conn for conn in opened if isinstance(conn, ClientConnection)]


def still_open(conns: Sequence[ClientConnection]) -> int:
    """How many of ``conns`` the server has not closed."""
    return sum(1 for conn in conns if conn.state is State.OPEN)


def drop_all(conns: Sequence[ClientConnection]) -> None:
    """Drop every socket at once (no closing handshake: thousands would take a while)."""
    for conn in conns:
        conn.transport.abort()
