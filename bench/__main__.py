"""``python -m bench``: run the scenarios, write the JSON results, print the Markdown table."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.context import FULL, QUICK, Context
from bench.report import Row, markdown, write_json
from bench.scenarios import ON_POSTGRES, SCENARIOS
from bench.servers import ROOT, CpuPlan, raise_open_files_limit

RESULTS = Path(__file__).resolve().parent / "results"
#: Seconds one scenario may take before it is stopped and reported as failed.
TIMEOUTS = {"full": 420.0, "quick": 60.0}
#: Scenarios given more: ``search`` first writes and indexes a million messages of text
#: (about 100 s of CPU; several minutes when the machine is shared).
LONGER = {"search": 2.0}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure chatbot against the bare Starlette/uvicorn stack, in one run.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: small and short")
    parser.add_argument(
        "--only", help=f"comma-separated scenarios to run (default: all): {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="folder of the JSON results (bench/results)"
    )
    parser.add_argument(
        "--workdir", type=Path, help="where the scratch folder goes (default: the system's temp)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder and logs")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the client and the servers to CPUs"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL database (postgresql://...) to also run "
        f"{', '.join(ON_POSTGRES)} on; each in schemas of its own, dropped afterwards",
    )
    return parser.parse_args(argv)


def chosen(only: str | None, postgres: bool = False) -> list[str]:
    """The scenarios to run, in the suite's order; an unknown name exits naming the known,
    and one on PostgreSQL without ``--postgres`` says to give it."""
    known = {**SCENARIOS, **ON_POSTGRES}
    if not only:
        return list(known) if postgres else list(SCENARIOS)
    names = {name.strip() for name in only.split(",") if name.strip()}
    unknown = sorted(names - set(known))
    if unknown:
        raise SystemExit(f"unknown scenario {unknown[0]!r}; choose from {', '.join(known)}")
    needing = sorted(names & set(ON_POSTGRES))
    if needing and not postgres:
        raise SystemExit(
            f"scenario {needing[0]!r} runs on PostgreSQL: give --postgres postgresql://..."
        )
    return [name for name in known if name in names]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        # Before this process pins itself to one of them.
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Other work on the machine (runnable processes): a high figure makes every rate lower.
        "load_average": os.getloadavg(),
    }


def commit() -> str | None:
    """The checked-out commit of the code measured, when it is a git checkout."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 (git from PATH, as a developer runs it)
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return None


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    # The servers run on uvloop (uvicorn's choice when it is installed); the client too, so
    # that its own cost per frame stays small.
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(argv: Sequence[str] | None = None) -> tuple[dict[str, Any], list[Row]]:
    """Run the suite as ``python -m bench`` would; the JSON document and the rows."""
    args = parse_args(argv)
    names = chosen(args.only, postgres=args.postgres is not None)
    profile = QUICK if args.quick else FULL
    host = machine()
    cpus = CpuPlan.split(pin=not args.no_pin)
    if cpus.client is not None:
        os.sched_setaffinity(0, {cpus.client})
    raise_open_files_limit()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="chatbot-bench-", dir=args.workdir))
    ctx = Context(profile, workdir, cpus, postgres=args.postgres)
    started = datetime.now(UTC)
    document: dict[str, Any] = {
        "format": "chatbot.bench.v1",
        "started_at": started.isoformat(timespec="seconds"),
        "profile": profile.name,
        "commit": commit(),
        "machine": host,
        "cpus": {"client": cpus.client, "server": cpus.server},
        "scenarios": {},
    }
    rows: list[Row] = []
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            for name in names:
                print(f"bench: {name}...", file=sys.stderr, flush=True)
                began = time.monotonic()
                entry: dict[str, Any] = {"rows": [], "details": {}, "error": None}
                try:
                    timeout = TIMEOUTS[profile.name] * LONGER.get(name, 1.0)
                    scenario = SCENARIOS.get(name) or ON_POSTGRES[name]
                    outcome = runner.run(asyncio.wait_for(scenario(ctx), timeout))
                    entry["rows"] = [row.to_json() for row in outcome.rows]
                    entry["details"] = outcome.details
                    rows += outcome.rows
                except Exception as exc:
                    entry["error"] = f"{type(exc).__name__}: {exc}"
                    print(f"bench: {name} failed: {entry['error']}", file=sys.stderr, flush=True)
                entry["seconds"] = round(time.monotonic() - began, 1)
                document["scenarios"][name] = entry
                print(f"bench: {name} took {entry['seconds']} s", file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"bench: scratch folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    finished = datetime.now(UTC)
    document["finished_at"] = finished.isoformat(timespec="seconds")
    document["seconds"] = round((finished - started).total_seconds(), 1)
    document["load_average_at_end"] = os.getloadavg()
    table = markdown(rows)
    document["markdown"] = table
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    path = args.results / f"{stamp}-{profile.name}.json"
    write_json(path, document)
    document["path"] = str(path)
    if args.markdown is not None:
        args.markdown.write_text(table)
    return document, rows


def main(argv: Sequence[str] | None = None) -> int:
    document, _rows = run(argv)
    print(document["markdown"], end="")
    print(f"bench: results in {document['path']}", file=sys.stderr)
    failed = [name for name, entry in document["scenarios"].items() if entry["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
