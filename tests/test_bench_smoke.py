"""``python -m bench --quick`` against real servers: every scenario yields its figures.

Only the shape of the results is checked, never a speed: the machine running the tests is
shared and its timings mean nothing.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = (
    "fsync",
    "roundtrip",
    "big-session",
    "stream",
    "idle",
    "handshake",
    "history",
    "branches",
    "search",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.e2e
def test_quick_run_reports_every_scenario(tmp_path: Path) -> None:
    table = tmp_path / "table.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--results",
            str(tmp_path / "results"),
            "--workdir",
            str(tmp_path / "scratch"),
            "--markdown",
            str(table),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    [result] = (tmp_path / "results").glob("*-quick.json")
    document = json.loads(result.read_text())
    assert document["format"] == "chatbot.bench.v1"
    assert document["profile"] == "quick"
    assert list(document["scenarios"]) == list(SCENARIOS)
    for name, entry in document["scenarios"].items():
        assert entry["error"] is None, f"{name}: {entry['error']}"
        assert entry["rows"], f"{name} produced no rows"
        for row in entry["rows"]:
            assert row["scenario"] == name
            assert _is_number(row["chatbot"]), row
            if row["reference"] is not None:
                assert _is_number(row["bare"]), row
                assert _is_number(row["ratio"]), row
            if row["target"] is not None:
                assert isinstance(row["met"], bool), row
    # The table printed, written with --markdown and kept in the JSON is one and the same,
    # a line per row.
    rows = sum(len(entry["rows"]) for entry in document["scenarios"].values())
    assert table.read_text() == document["markdown"] == done.stdout
    assert len(done.stdout.splitlines()) == rows + 2
    assert not list((tmp_path / "scratch").iterdir()), "the scratch folder was not removed"
