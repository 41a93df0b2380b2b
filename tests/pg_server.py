"""A PostgreSQL server of a test's own, which the test may stop and restart (the shared one
must not be): Debian's server binaries, a data directory in a temporary folder, a free port.

Run as root (as CI does), the server runs as the ``postgres`` user, which it insists on.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.processes import free_port

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
needs_postgres_binaries = pytest.mark.skipif(
    not BINARIES, reason="needs the PostgreSQL server binaries (Debian's postgresql package)"
)


class PostgresServer:
    """``initdb`` once, then :meth:`start`, :meth:`stop` and :meth:`start` again."""

    def __init__(self) -> None:
        self.bin = Path(BINARIES[-1])
        self.root = Path(tempfile.mkdtemp(prefix="chatbot-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self._as, str(self.bin / tool), *args],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.root,
        )  # fmt: skip

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            "-c fsync=off -c max_connections=100"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w",
            "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
