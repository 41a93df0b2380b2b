"""HTTP for the benchmark: a lean keep-alive GET client for the measured requests, and plain
urllib for the set-up calls.

The measured client speaks just enough HTTP/1.1 (one request at a time on one keep-alive
connection, responses with a ``Content-Length``) to keep its own cost per request small
next to the server's: a general-purpose client would spend more CPU than the bare server
does, and the figures would measure the client.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from typing import Any

from bench.stats import Load

READ_TIMEOUT = 60.0


class HttpError(RuntimeError):
    """A response the benchmark did not expect."""


class KeepAliveClient:
    """One keep-alive HTTP/1.1 connection to ``host:port``."""

    def __init__(self, host: str, port: int, headers: dict[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> KeepAliveClient:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()

    async def get(self, path: str) -> tuple[int, bytes]:
        """``GET path``: the status and the body."""
        assert self._reader is not None and self._writer is not None
        request = f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.headers}\r\n"
        self._writer.write(request.encode("ascii"))
        head = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        if length is None:
            raise HttpError(f"GET {path}: a response without Content-Length ({lines[0]})")
        body = await asyncio.wait_for(self._reader.readexactly(length), READ_TIMEOUT)
        return status, body


def request_json(
    method: str, url: str, headers: dict[str, str], body: dict[str, Any] | None = None
) -> Any:
    """One set-up request (not measured): its JSON answer, or ``HttpError``."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback)
    request.add_header("Content-Type", "application/json")
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=READ_TIMEOUT) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise HttpError(f"{method} {url}: {exc.code} {exc.read()[:200]!r}") from None


async def gets(host: str, port: int, path: str, headers: dict[str, str], duration: float) -> Load:
    """``GET path`` again and again on one keep-alive connection for ``duration`` seconds;
    anything but a 200 raises ``HttpError``."""
    async with KeepAliveClient(host, port, headers) as client:
        start = time.perf_counter()
        until = start + duration
        load = Load()
        while (sent := time.perf_counter()) < until:
            status, body = await client.get(path)
            if status != 200:
                raise HttpError(f"GET {path}: {status} {body[:200]!r}")
            load.latencies.append(time.perf_counter() - sent)
        load.elapsed = time.perf_counter() - start
        load.count = len(load.latencies)
        return load
