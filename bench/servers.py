"""The two servers under test, each a process of its own: ``chatbot serve`` and the bare app.

Both listen on a free loopback port, run single-process with the same uvicorn options, may
open as many files as the system allows (10,000 sockets), and are pinned to the CPU the load
generator leaves them (see :class:`CpuPlan`), so that the client takes its own core; both
start through ``python -m bench.launch``, which sets that up.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: The repository's root, for ``python -m bench.bare``.
ROOT = Path(__file__).resolve().parent.parent

#: Two echo backends: ``echo`` answers at once, ``echo10ms`` waits 10 ms between chunks.
CHATBOT_TOML = """\
default_backend = "echo"

[backends.echo]
type = "echo"
delay = 0.0

[backends.echo10ms]
type = "echo"
delay = 0.01
"""

#: The abuse limits, raised so far that no scenario meets them.
GENEROUS_LIMITS = {
    "CHATBOT_RATE_LIMIT_PER_MINUTE": "1000000000",
    "CHATBOT_FLOOD_TOLERANCE": "1000000000",
    "CHATBOT_MAX_SOCKETS_PER_USER": "1000000",
    "CHATBOT_MAX_SESSIONS_PER_USER": "100000000",
    "CHATBOT_IDLE_TIMEOUT": "86400",
    "CHATBOT_SESSION_QUEUE_SIZE": "1000",
}

STOP_SECONDS = 15.0
START_SECONDS = 60.0


@dataclass(frozen=True)
class CpuPlan:
    """Which CPU the load generator runs on, and which the servers run on (None: any)."""

    client: int | None
    server: int | None

    @classmethod
    def split(cls, pin: bool) -> CpuPlan:
        """The first allowed CPU for the client, the last for the servers, when there are two."""
        cpus = sorted(os.sched_getaffinity(0))
        if not pin or len(cpus) < 2:
            return cls(client=None, server=None)
        return cls(client=cpus[0], server=cpus[-1])


def free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def raise_open_files_limit() -> None:
    """Let this process open as many files as its hard limit allows (sockets are files)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _clean_environment() -> dict[str, str]:
    # The caller's own CHATBOT_* settings must not change what is measured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    # For python -m bench.launch and python -m bench.bare, from any working directory.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def sqlite_url(database: Path, synchronous: str | None = None) -> str:
    """The database URL of the SQLite file ``database`` (with ``?synchronous=`` when given)."""
    return f"sqlite:///{database}" + (f"?synchronous={synchronous}" if synchronous else "")


def chatbot_environment(workdir: Path, database_url: str, secret: str) -> dict[str, str]:
    """The environment of a benchmarked ``chatbot serve`` (and of ``chatbot migrate``) on
    ``database_url`` (SQLite or PostgreSQL)."""
    config = workdir / "chatbot.toml"
    config.write_text(CHATBOT_TOML)
    env = _clean_environment()
    env.update(GENEROUS_LIMITS)
    env.update(
        CHATBOT_CONFIG=str(config),
        CHATBOT_JWT_SECRET=secret,
        CHATBOT_DATABASE_URL=database_url,
        CHATBOT_DATA_DIR=str(workdir / "data"),
        CHATBOT_LOG_LEVEL="warning",
        # A stop need not wait for replies in flight: the clients are gone by then.
        CHATBOT_SHUTDOWN_GRACE="1",
    )
    return env


def migrate(workdir: Path, database: Path, secret: str) -> None:
    """Create the schema of ``database`` with ``chatbot migrate``."""
    env = chatbot_environment(workdir, sqlite_url(database), secret)
    done = subprocess.run(
        [sys.executable, "-m", "chatbot", "migrate"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"chatbot migrate failed:\n{done.stdout}{done.stderr}")


class Server:
    """One server process on a loopback port: start, stop, and what it uses (RSS, CPU)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.argv = [*argv, "--port", str(self.port)]
        self.env = env
        self.workdir = workdir
        self.log = workdir / f"{name}-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"the {self.name} server is not running")
        return self.process.pid

    def start(self, cpu: int | None) -> None:
        """Start the process and return once ``/healthz`` answers."""
        pin = ["--cpu", str(cpu)] if cpu is not None else []
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                [sys.executable, "-m", "bench.launch", *pin, "--", *self.argv],
                cwd=self.workdir,
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_SECONDS
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {self.name} server did not start:\n{self.log_tail()}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/healthz", timeout=2) as response:  # noqa: S310
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within STOP_SECONDS."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def check_running(self) -> None:
        """Raise, with the end of its log, when the process has exited."""
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the {self.name} server exited:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def rss_kib(self) -> int:
        """Resident memory now, from /proc/<pid>/status (VmRSS, in KiB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for the {self.name} server")

    def cpu_seconds(self) -> float:
        """CPU time used so far (user + system, all threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def chatbot_server(
    workdir: Path,
    database_url: str,
    secret: str,
    *,
    name: str = "chatbot",
    memory_limits: bool = False,
) -> Server:
    """``chatbot serve`` with the echo backends and auth on, on ``database_url``. With
    ``memory_limits``, a server on PostgreSQL counts its limits in its own memory, as on
    SQLite (see :mod:`bench.memory_limits`): what the limits shared by processes cost."""
    env = chatbot_environment(workdir, database_url, secret)
    module = "bench.memory_limits" if memory_limits else "chatbot"
    return Server(name, ["-m", module, "serve", "--no-link"], env, workdir)


def bare_server(workdir: Path) -> Server:
    """The bare Starlette app of bench.bare."""
    return Server("bare", ["-m", "bench.bare"], _clean_environment(), workdir)


@contextlib.contextmanager
def running(cpu: int | None, *servers: Server) -> Iterator[None]:
    """Start ``servers`` (in order) and stop them all on the way out."""
    try:
        for server in servers:
            server.start(cpu)
        yield
    finally:
        for server in servers:
            server.stop()
