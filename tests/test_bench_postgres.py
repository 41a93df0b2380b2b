"""``python -m bench --postgres``: the scenarios on PostgreSQL yield their figures, each run
in schemas of its own that it drops. Only the shape of the results is checked, never a speed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import chosen

ROOT = Path(__file__).resolve().parent.parent


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def test_a_scenario_on_postgresql_without_a_database_says_what_to_give() -> None:
    with pytest.raises(SystemExit, match=r"'cluster' runs on PostgreSQL: give --postgres"):
        chosen("roundtrip,cluster")
    assert chosen(None) == chosen(None, postgres=False)
    assert "cluster" not in chosen(None)
    assert chosen(None, postgres=True)[-2:] == ["cluster", "fanout"]


@pytest.mark.e2e
def test_quick_run_on_postgresql_reports_cluster_and_fanout(tmp_path: Path) -> None:
    url = os.environ.get("CHATBOT_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("set CHATBOT_TEST_POSTGRES_URL to run the benchmark on PostgreSQL")
    import asyncpg

    async def bench_schemas() -> set[str]:
        connection = await asyncpg.connect(url)
        try:
            rows = await connection.fetch(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench\\_%'"
            )
        finally:
            await connection.close()
        return {row[0] for row in rows}

    import asyncio

    before = asyncio.run(bench_schemas())
    done = subprocess.run(
        [
            sys.executable, "-m", "bench", "--quick", "--only", "cluster,fanout",
            "--postgres", url, "--results", str(tmp_path / "results"),
            "--workdir", str(tmp_path / "scratch"),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [result] = (tmp_path / "results").glob("*-quick.json")
    document = json.loads(result.read_text())
    assert list(document["scenarios"]) == ["cluster", "fanout"]
    for name, entry in document["scenarios"].items():
        assert entry["error"] is None, f"{name}: {entry['error']}"
        assert entry["rows"], f"{name} produced no rows"
        for row in entry["rows"]:
            assert row["scenario"] == name
            assert _is_number(row["chatbot"]), row
            if row["reference"] is not None:
                assert _is_number(row["ratio"]), row
    whats = [row["what"] for row in document["scenarios"]["cluster"]["rows"]]
    assert "round trips/s, PostgreSQL, 2 processes, 10 connections" in whats
    fanout = [row["what"] for row in document["scenarios"]["fanout"]["rows"]]
    assert "time to the reply, added by the other process, p50" in fanout
    # Every schema the run made is gone.
    assert asyncio.run(bench_schemas()) == before
