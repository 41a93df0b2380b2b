"""What the scenarios share: rounds watched for the server's CPU, and their summaries."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench.report import Row
from bench.servers import Server
from bench.stats import Load, median


def watched(server: Server, load: Callable[[], Awaitable[Load]]) -> Callable[[], Awaitable[Load]]:
    """``load``, also recording the CPU time ``server`` and this client spent during it."""

    async def measure() -> Load:
        server.check_running()
        before, client_before = server.cpu_seconds(), time.process_time()
        result = await load()
        result.server_cpu = server.cpu_seconds() - before
        result.client_cpu = time.process_time() - client_before
        server.check_running()
        return result

    return measure


def watched_all(
    servers: Sequence[Server], load: Callable[[], Awaitable[Load]]
) -> Callable[[], Awaitable[Load]]:
    """:func:`watched` for a load spread over several server processes: their CPU summed."""

    async def measure() -> Load:
        for server in servers:
            server.check_running()
        before, client_before = sum(s.cpu_seconds() for s in servers), time.process_time()
        result = await load()
        result.server_cpu = sum(s.cpu_seconds() for s in servers) - before
        result.client_cpu = time.process_time() - client_before
        for server in servers:
            server.check_running()
        return result

    return measure


def summary(load: Load) -> dict[str, Any]:
    """One round's figures, for the JSON file."""
    figures: dict[str, Any] = {
        "count": load.count,
        "elapsed_s": load.elapsed,
        "rate_per_s": load.rate,
        "p50_ms": load.ms(0.5),
        "p99_ms": load.ms(0.99),
        "server_cpu_s": load.server_cpu,
        "server_cpu_ms_per_op": load.server_cpu / load.count * 1000 if load.count else math.nan,
        # Near 1: the client, not the server, was the limit (it has one core).
        "client_busy": load.client_cpu / load.elapsed if load.elapsed else math.nan,
        "server_busy": load.server_cpu / load.elapsed if load.elapsed else math.nan,
    }
    if load.first_delta:
        figures.update(
            deltas=load.deltas,
            deltas_per_s=load.deltas / load.elapsed if load.elapsed else math.nan,
            first_delta_p50_ms=load.ms(0.5, load.first_delta),
            first_delta_p99_ms=load.ms(0.99, load.first_delta),
        )
    return figures


def across(loads: Sequence[Load], figure: str) -> float:
    """The median across rounds of one of :func:`summary`'s figures."""
    return median([float(summary(load).get(figure, math.nan)) for load in loads])


def summaries(results: dict[str, list[Load]]) -> dict[str, list[dict[str, Any]]]:
    """Every round's summary, by side."""
    return {name: [summary(load) for load in loads] for name, loads in results.items()}


#: The figures of a request load reported against the bare stack: (figure, label, unit).
LOAD_FIGURES = (
    ("rate_per_s", "requests/s", "/s"),
    ("p50_ms", "p50", "ms"),
    ("p99_ms", "p99", "ms"),
)


def load_rows(scenario: str, what: str, chatbot: Sequence[Load], bare: Sequence[Load]) -> list[Row]:
    """The rate, p50 and p99 of one chatbot load beside the bare stack's, one row each."""
    return [
        Row(scenario, f"{what}, {label}", unit, chatbot=across(chatbot, figure),
            bare=across(bare, figure))
        for figure, label, unit in LOAD_FIGURES
    ]  # fmt: skip
