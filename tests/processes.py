"""``python -m chatbot serve`` as a real subprocess, for the tests that need a signal to
reach the server, or everything it prints, exactly as an operator would see them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import SECRET, wait_for

#: Variables of the test runner's own environment that could change what a server does.
FOREIGN_PREFIXES = ("CHATBOT_", "OPENAI_", "ANTHROPIC_")


def free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServeProcess:
    """``python -m chatbot serve`` (or ``command``, given the port) on a free port, its
    stdout and stderr in one file."""

    def __init__(
        self,
        tmp_path: Path,
        command: Callable[[int], list[str]] | None = None,
        *,
        port: int | None = None,
        **env: str,
    ) -> None:
        self.command = command or (lambda port: ["-m", "chatbot", "serve", "--port", str(port)])
        # A given port restarts a server where its clients expect it (their reconnects).
        self.port = port if port is not None else free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
        # A SQLite file of the test's own unless ``env`` names another database.
        self.env.update(
            {
                "CHATBOT_JWT_SECRET": SECRET,
                "CHATBOT_DATABASE_URL": f"sqlite:///{tmp_path / 'chat.db'}",
                "CHATBOT_DATA_DIR": str(tmp_path / "data"),
                **env,
            }
        )
        self.cwd = tmp_path
        self.log = tmp_path / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat/"

    def __enter__(self) -> ServeProcess:
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, *self.command(self.port)],
                cwd=self.cwd, env=self.env, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        process = self.process

        def healthy() -> bool:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return True
            assert process.poll() is None, self.log.read_text()  # it died: say why
            return False

        try:
            wait_for(healthy, "the server to start", 20)
        except BaseException:
            # A server that never became healthy would otherwise outlive the test run.
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        """Wait for the process to end; its exit status."""
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> str:
        """Stop the server (SIGTERM, as an init system would) and return all it printed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.log.read_text(encoding="utf-8", errors="replace")
