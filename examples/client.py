"""A command-line client for a chatbot server: chat over the WebSocket, read history over HTTP.

    CHATBOT_TOKEN=$(chatbot token --sub you) python examples/client.py
    CHATBOT_TOKEN=$(chatbot token --sub you) python examples/client.py --message "Hello AI!"

It speaks exactly the frames of the original API document: it sends
``{"message": ..., "session_id": ...}`` and reads ``{"message": ..., "session_id": ...}``
back. See docs/protocol.md for the whole protocol, and ``chatbot chat`` (docs/terminal.md)
for a full terminal client. It needs only ``websockets`` and ``httpx``, which chatbot
installs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake


class ClientError(Exception):
    """Something the user has to fix; printed as one line, exit status 1."""


def http_base(ws_url: str) -> str:
    """``ws://host:port/mount`` -> ``http://host:port/mount`` (``wss`` -> ``https``)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme)
    if scheme is None:
        raise ClientError(f"--url must start with ws:// or wss://, got {ws_url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def explain_close(exc: ConnectionClosed, session_id: str | None) -> ClientError:
    """Turn the server's close code into what the user should do next."""
    code = exc.rcvd.code if exc.rcvd is not None else None
    reason = exc.rcvd.reason if exc.rcvd is not None else ""
    if code == 4401:
        return ClientError(
            f"the server refused the token ({reason or 'unauthorized'}); get a new one with "
            "`chatbot token --sub you` and pass it with --token or CHATBOT_TOKEN"
        )
    if code == 4404:
        return ClientError(
            f"session {session_id!r} not found: it was deleted or belongs to another user; "
            "run without --session to start a new one"
        )
    if code is None:
        return ClientError("the connection dropped without a close frame")
    return ClientError(f"the server closed the connection: {code} {reason}".rstrip())


async def receive_json(ws: ClientConnection) -> dict[str, Any]:
    frame = await ws.recv()
    data = json.loads(frame)
    if not isinstance(data, dict):
        raise ClientError(f"unexpected frame from the server: {frame!r}")
    return data


async def ask(ws: ClientConnection, session_id: str, text: str) -> str:
    """Send one message and wait for its reply; raise ``ClientError`` on an error frame."""
    await ws.send(json.dumps({"message": text, "session_id": session_id}))
    while True:
        data = await receive_json(ws)
        if data.get("type") == "error":
            error = data.get("error") or {}
            raise ClientError(f"{error.get('code')}: {error.get('message')}")
        if isinstance(data.get("message"), str):
            return str(data["message"])
        # Anything else (a pong, a frame this client does not know) is not the reply.


def start_stdin_reader(loop: asyncio.AbstractEventLoop) -> asyncio.Queue[str | None]:
    """Lines of stdin in a queue, ``None`` at end of input.

    A daemon thread reads, so that a server closing the socket is noticed at once, not only
    after the next line is typed.
    """
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    return lines


async def chat_interactively(ws: ClientConnection, session_id: str) -> None:
    lines = start_stdin_reader(asyncio.get_running_loop())
    prompt = sys.stdin.isatty()
    while True:
        if prompt:
            print("> ", end="", flush=True)
        next_line = asyncio.ensure_future(lines.get())
        closed = asyncio.ensure_future(ws.wait_closed())
        await asyncio.wait({next_line, closed}, return_when=asyncio.FIRST_COMPLETED)
        if not next_line.done():
            next_line.cancel()
            while True:
                await ws.recv()  # raises ConnectionClosed with the server's close code
        closed.cancel()
        line = next_line.result()
        if line is None:
            if prompt:
                print()  # end the prompt's line
            return
        if not line.strip():
            continue
        try:
            print(f"assistant: {await ask(ws, session_id, line)}")
        except ClientError as exc:
            # An error frame: the connection stays open, so the user can go on.
            print(f"error: {exc}", file=sys.stderr)


def print_history(base: str, token: str, session_id: str) -> None:
    """Every stored message of the session, oldest first, paging back with ``before``."""
    url = f"{base}/api/sessions/{session_id}/messages"
    messages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
        while True:
            response = http.get(url, params=params)
            if response.status_code != 200:
                error = response.json().get("error", {})
                raise ClientError(
                    f"GET {url}: {response.status_code} {error.get('message', response.text)}"
                )
            page = response.json()
            messages[:0] = page["messages"]
            if not page["has_more"] or not page["messages"]:
                break
            params["before"] = page["messages"][0]["id"]
    print(f"--- history of {session_id} ({len(messages)} messages) ---")
    for message in messages:
        status = "" if message["status"] == "complete" else f" [{message['status']}]"
        print(f"{message['role']}: {message['content']}{status}")


async def run(args: argparse.Namespace) -> None:
    token = args.token
    if not token:
        raise ClientError(
            "no token: pass --token or set CHATBOT_TOKEN (get one with: chatbot token --sub you)"
        )
    base = http_base(args.url)
    ws_url = args.url.rstrip("/") + "/ws/chat/"
    if args.session:
        ws_url += "?" + urlencode({"session_id": args.session})
    session_id: str | None = args.session
    try:
        async with connect(
            ws_url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10
        ) as ws:
            if session_id is None:
                # A new session: the server's first frame is {"session_id": "..."}.
                session_id = str((await receive_json(ws))["session_id"])
                print(f"session: {session_id}")
            else:
                print(f"session: {session_id} (continued)")
            if args.message is not None:
                print(f"assistant: {await ask(ws, session_id, args.message)}")
            else:
                await chat_interactively(ws, session_id)
    except ConnectionClosed as exc:
        raise explain_close(exc, session_id) from None
    except InvalidHandshake as exc:
        raise ClientError(
            f"{ws_url} is not a chatbot socket ({exc}); give --url the server's base URL, "
            "with its mount prefix if it has one"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise ClientError(
            f"cannot connect to {ws_url}: {exc}; is `chatbot serve` running?"
        ) from None
    if not args.no_history and session_id is not None:
        print_history(base, token, session_id)


def main() -> int:
    parser = argparse.ArgumentParser(description="Chat with a chatbot server.")
    parser.add_argument(
        "--url",
        default="ws://127.0.0.1:8000",
        help="the server's WebSocket base URL, mount prefix included (default: %(default)s)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CHATBOT_TOKEN"),
        help="a JWT (default: the CHATBOT_TOKEN environment variable)",
    )
    parser.add_argument("--session", help="continue this session instead of starting one")
    parser.add_argument("--message", help="send this one message, print the reply and exit")
    parser.add_argument(
        "--no-history", action="store_true", help="do not print the session's history at exit"
    )
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except ClientError as exc:
        print(f"client.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
