"""``fsync``: what one durable SQLite commit costs on this disk, whatever the server does.

chatbot commits twice per round trip (the user's message, then the reply), each with
``synchronous = FULL`` in WAL mode: that is a floor no server code can go below. It is
measured in the run's own scratch folder, where the servers keep their databases (see
bench.disk).
"""

from __future__ import annotations

from bench.context import Context
from bench.report import Outcome, Row


async def run(ctx: Context) -> Outcome:
    times = ctx.commit_times()
    rows = [
        Row("fsync", f"one SQLite commit, {what}, median", "ms", value, reference=None)
        for what, value in (
            ("log reused (steady state)", times.reused_ms),
            ("log growing (new database)", times.growing_ms),
        )
    ]
    return Outcome(rows, {"commits": ctx.profile.fsync_commits, **vars(times)})
