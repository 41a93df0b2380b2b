"""``python -m bench.launch [--cpu N] -- ARGS...``: become ``python ARGS...`` with the open
files limit raised to its maximum and, with ``--cpu``, pinned to that CPU.

The servers start through this, rather than through a ``preexec_fn`` of ``subprocess``,
which is unsafe in a process that has threads (the client's resolver may have some). The
limits and the CPU set survive the ``exec``, and the process keeps its id.
"""

from __future__ import annotations

import os
import resource
import sys


def main(argv: list[str]) -> None:
    """Set the limits, then replace this process with ``python ARGS...``."""
    cpu = None
    if argv[:1] == ["--cpu"]:
        cpu, argv = int(argv[1]), argv[2:]
    if argv[:1] != ["--"] or len(argv) < 2:
        raise SystemExit("usage: python -m bench.launch [--cpu N] -- ARGS...")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *argv[1:]])  # noqa: S606 (our own interpreter)


if __name__ == "__main__":
    main(sys.argv[1:])
