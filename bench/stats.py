"""Figures from samples: what one round of load produced, its percentiles, medians across
rounds, and the rounds themselves, bare and chatbot taking turns."""

from __future__ import annotations

import math
import statistics
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` 0.5: the median); NaN without samples."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The median of the finite values; NaN when there are none."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


async def interleaved(
    rounds: int, measures: Mapping[str, Callable[[], Awaitable[T]]]
) -> dict[str, list[T]]:
    """Run every measure once per round, in turns, the order reversed every other round, so
    that a neighbour's burst or a slow drift of the machine falls on both sides alike."""
    results: dict[str, list[T]] = {name: [] for name in measures}
    names = list(measures)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            results[name].append(await measures[name]())
    return results


@dataclass
class Load:
    """What one round of load produced: operations completed, wall time, latencies (s)."""

    count: int = 0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    #: Streams only: delta frames received, and the times to the first delta (s).
    deltas: int = 0
    first_delta: list[float] = field(default_factory=list)
    #: CPU seconds the server and the client spent on the round (set by whoever watched).
    server_cpu: float = math.nan
    client_cpu: float = math.nan

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0

    def ms(self, fraction: float, values: Sequence[float] | None = None) -> float:
        """A percentile of the latencies (or of ``values``), in milliseconds."""
        return percentile(self.latencies if values is None else values, fraction) * 1000
