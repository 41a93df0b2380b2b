"""Two ``chatbot serve`` processes on one database, behind nginx configured as
docs/deployment.md says: what an operator deploys, started by the tests.

Which process served a request is read from the processes' own access logs, as an operator
would find out: nothing is added to the responses to tell the processes apart.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.conftest import bearer, wait_for
from tests.nginx import Nginx
from tests.processes import ServeProcess

#: The echo backend, slow enough that a reply is still being written when a test acts.
SLOW_ECHO = '[backends.slow]\ntype = "echo"\ndelay = 0.1\n'


@dataclass
class Cluster:
    """Two processes and nginx in front of them."""

    processes: tuple[ServeProcess, ServeProcess]
    nginx: Nginx

    def ws(self, token: str, query: str = "") -> ClientConnection:
        """A chat socket through nginx (wss), as the token's user."""
        return connect(
            self.nginx.ws_url + (f"?{query}" if query else ""),
            ssl=self.nginx.ssl_context(),
            additional_headers=bearer(token),
            open_timeout=10,
        )

    def logs(self) -> list[str]:
        """What each process has printed so far."""
        return [p.log.read_text(encoding="utf-8", errors="replace") for p in self.processes]

    def counts(self, line: str) -> list[int]:
        """How many times each process's log holds ``line`` (an access log line's request)."""
        return [log.count(line) for log in self.logs()]

    def served_by(self, before: list[int], line: str) -> int:
        """The index of the process that logged ``line`` once more since ``before`` was
        counted, waiting for the line; exactly one must have."""

        def logged() -> list[int] | None:
            now = self.counts(line)
            return now if now != before else None

        after: list[int] = wait_for(logged, f"a process to log {line!r}", 10)
        grew = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
        assert len(grew) == 1 and after[grew[0]] == before[grew[0]] + 1, (before, after)
        return grew[0]


def websocket_line(query: str = "") -> str:
    """How uvicorn's access log shows an accepted chat socket."""
    path = "/ws/chat/" + (f"?{query}" if query else "")
    return f'"WebSocket {path}" [accepted]'


def drop(ws: ClientConnection) -> None:
    """End the connection without a close frame, as a network failure would."""
    ws.socket.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):  # the socket is already gone: nothing to report
        ws.close()


@contextlib.contextmanager
def cluster(directory: Path, database_url: str, **env: str) -> Iterator[Cluster]:
    """Start two processes on ``database_url`` and nginx in front of them; stop all after."""
    config = directory / "chatbot.toml"
    directory.mkdir(parents=True, exist_ok=True)
    config.write_text(SLOW_ECHO, encoding="utf-8")
    settings: dict[str, Any] = {
        "CHATBOT_DATABASE_URL": database_url,
        "CHATBOT_CONFIG": str(config),
        # nginx connects from the loopback address: its X-Forwarded-* are believed.
        "CHATBOT_FORWARDED_ALLOW_IPS": "127.0.0.1",
        **env,
    }
    homes = [directory / name for name in ("one", "two")]
    for home in homes:
        home.mkdir(exist_ok=True)
    with (
        ServeProcess(homes[0], **settings) as one,
        ServeProcess(homes[1], **settings) as two,
        Nginx(directory / "nginx", [one.port, two.port]) as nginx,
    ):
        yield Cluster((one, two), nginx)
