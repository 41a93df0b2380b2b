"""One open socket's way out: the frames waiting to be sent, how this client wants them, and
the single writer task that sends them; and the registry of open sockets a shutdown closes.

A :class:`Connection` is the hub's listener for its socket. It turns each session event
into this client's frame (deltas only if it asked for them, extended frames only if it
opted in), bounds what waits for a client that does not read, and drops such a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from chatbot.hub.base import Branch, Closed, Delta, Event, Failure, Reply, Started, Title
from chatbot.protocol import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    delta_frame,
    error_frame,
    reply_frame,
)
from chatbot.serialize import dumps

logger = logging.getLogger("chatbot.websocket")

#: The ASGI scope extension through which a server offers what ASGI cannot ask for:
#: ``{"drain": async callable, "abort": callable}``. See chatbot.transport.
TRANSPORT_EXTENSION = "chatbot.transport"

MAX_PENDING_FRAMES = 1024
#: What a queued frame is counted as beyond its text (keys, ids, timestamps, usage).
FRAME_OVERHEAD_BYTES = 256

_names = itertools.count(1)
#: Names sockets apart from those of the other processes (an event for one socket crosses
#: the hub of several processes under that socket's name).
_PROCESS = secrets.token_hex(4)


def _text_bytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _frame_bytes(frame: dict[str, Any]) -> int:
    """About the size of a frame once serialised: its text in UTF-8, plus an overhead."""
    size = FRAME_OVERHEAD_BYTES
    for key in ("message", "delta"):
        value = frame.get(key)
        if isinstance(value, str):
            size += _text_bytes(value)
    return size


class Connection:
    """One open socket: the frames waiting to be sent, and how this client wants them."""

    def __init__(
        self,
        websocket: WebSocket,
        session_id: str,
        *,
        extended: bool,
        wants_deltas: bool,
        max_pending_bytes: int = 1_048_576,
        send_timeout: float = 30.0,
    ) -> None:
        self.websocket = websocket
        self.session_id = session_id
        #: How events addressed to one socket (``Reply.only``) name this one.
        self.name = f"socket-{_PROCESS}-{next(_names)}"
        #: Extended reply frames (type, message_id, reply_to, usage...) are opt-in: the
        #: chatbot.v1 subprotocol, or any message that used an addition such as ``id``.
        self.extended = extended
        #: Delta frames are opt-in too: ``?stream=1`` on the URL, or a message that asked
        #: for ``"stream": true``. From then on the socket gets the deltas of every reply.
        self.wants_deltas = wants_deltas
        #: Branch and title frames are opt-in as well: ``?conversation_events=1`` on the
        #: URL, or a message that used ``parent_id`` or ``regenerate``. A client that uses
        #: none of the conversation additions sees no change.
        self.conversation_events = False
        # A list, not a deque: an idle socket's empty list is a tenth of an empty deque, and
        # the queue is short (at most MAX_PENDING_FRAMES).
        self._pending: list[dict[str, Any]] = []
        self._close: tuple[int, str] | None = None
        #: The task sending queued frames: it exists only while there is something to send,
        #: so that an idle socket holds no task of its own beyond its endpoint's.
        self._writer: asyncio.Task[None] | None = None
        #: The writer has sent the close, or given up: nothing more goes out.
        self._done = False
        #: Since when (loop time) the writer waits for one send to go through; None between.
        self._sending_since: float | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._stalled = False
        #: Called when the writer gives up on a client that stopped reading (the endpoint
        #: then stops reading too: such a client sends nothing, not even a disconnect).
        self.on_give_up: Callable[[], None] | None = None
        #: The frames waiting to be sent are bounded in number and in bytes (about).
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0
        #: Seconds one frame (or the close) may take to find room in the socket's buffers
        #: and, where the server can tell, to be taken by the client: a client that takes
        #: nothing for that long is not reading, and is dropped.
        self.send_timeout = send_timeout
        #: When the client last sent a frame (time.monotonic), for the idle timeout.
        self.last_frame_at = time.monotonic()
        #: The close code the client sent, when it closed before the server did.
        self._client_close: int | None = None

    @property
    def closing(self) -> bool:
        return self._close is not None

    def send(self, frame: dict[str, Any]) -> None:
        if self._close is not None:
            return
        size = _frame_bytes(frame)
        if len(self._pending) >= MAX_PENDING_FRAMES or (
            self._pending and self.pending_bytes + size > self.max_pending_bytes
        ):
            self._not_reading()
            return
        self._pending.append(frame)
        self._count(size)
        self._wake_writer()

    def _count(self, size: int) -> None:
        self.pending_bytes += size

    def _not_reading(self) -> None:
        # The client stopped reading; holding more would grow memory without bound. What is
        # queued is dropped too: the close goes right after the frame being sent now.
        logger.info(
            "a client is not reading its frames: closing its socket 1008, %d bytes dropped",
            self.pending_bytes,
        )
        self._pending.clear()
        self.pending_bytes = 0
        self.close(CLOSE_POLICY, "client is not reading its frames")

    def close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            self._wake_writer()

    def client_closed(self, code: int) -> None:
        """The client closed the socket with ``code`` (an answer to the server's close if
        the server closed first)."""
        if self._close is None:
            self._client_close = code

    def closed_with(self) -> tuple[int, str]:
        """The close code of a socket that is closing, and who closed it: ``client`` or
        ``server``."""
        if self._client_close is not None:
            return self._client_close, "client"
        return (self._close or (CLOSE_NORMAL, ""))[0], "server"

    def _wake_writer(self) -> None:
        if self._writer is None and not self._done:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def finished(self) -> None:
        """Wait until what was queued (and the close, if asked for) has been sent."""
        while (writer := self._writer) is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(writer)
            if self._writer is writer:
                return

    def writer(self) -> asyncio.Task[None] | None:
        """The task sending frames now, if any."""
        return self._writer

    def deliver(self, event: Event) -> None:
        """The hub's listener: turn a session event into this client's frame, if any."""
        if isinstance(event, Delta):
            if self.wants_deltas:
                self.send_delta(event.text, event.reply_to)
        elif isinstance(event, Reply):
            if event.only is None or event.only == self.name:
                frame = reply_frame(
                    event.message, self.session_id, event.reply_to, extended=self.extended
                )
                self.send(frame)
        elif isinstance(event, Failure):
            if event.only is None or event.only == self.name:
                self.send_error(
                    event.code, event.message, event.retryable, event.reply_to,
                    retry_after=event.retry_after,
                )  # fmt: skip
        elif isinstance(event, Branch):
            if self.conversation_events:
                self.send(
                    {"type": "branch", "leaf_id": event.leaf_id, "session_id": self.session_id}
                )
        elif isinstance(event, Title):
            if self.conversation_events:
                self.send({"type": "title", "title": event.title, "session_id": self.session_id})
        elif isinstance(event, Closed):
            self.close(event.code, event.reason)
        else:
            assert isinstance(event, Started)

    def send_delta(self, text: str, reply_to: str | None) -> None:
        if self._close is not None:
            return
        last = self._pending[-1] if self._pending else None
        if last is not None and last.get("type") == "delta" and last.get("reply_to") == reply_to:
            # Not sent yet: grow that frame rather than queue another, so a fast backend
            # and a slower client do not pile up thousands of tiny frames.
            size = _text_bytes(text)
            if self.pending_bytes + size > self.max_pending_bytes:
                self._not_reading()
                return
            last["delta"] += text
            self._count(size)
            return
        self.send(delta_frame(text, self.session_id, reply_to))

    def send_error(
        self,
        code: str,
        message: str,
        retryable: bool = False,
        reply_to: str | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        self.send(
            error_frame(
                code, message, self.session_id, retryable, reply_to, retry_after=retry_after
            )
        )

    async def _write(self) -> None:
        """Send queued frames in order, then the close if asked for; reset the connection
        when the client takes no frame for ``send_timeout`` seconds. Ends when nothing is
        left to send (the next frame starts a new writer)."""
        transport = (self.websocket.scope.get("extensions") or {}).get(TRANSPORT_EXTENSION)
        drain = transport.get("drain") if transport else None
        try:
            while self._pending:
                frame = self._pending.pop(0)
                self.pending_bytes -= _frame_bytes(frame)
                self._sending()
                await self.websocket.send_text(dumps(frame))
                if drain is not None:
                    # Else a client that stopped reading is noticed only when another
                    # frame is sent, which may be never.
                    await drain()
                self._sending_since = None
            if self._close is not None:
                self._done = True
                self._sending()
                # The close frame queues behind the bytes the client has not read.
                await self.websocket.close(*self._close)
        except asyncio.CancelledError:
            if not self._stalled:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            self._give_up(transport.get("abort") if transport else None)
        except (WebSocketDisconnect, RuntimeError, OSError):
            # The client went away (or the server closed the socket): nothing to send to.
            self._close = self._close or (CLOSE_NORMAL, "")
            self._done = True
        except Exception:
            # A writer that died quietly would leave a socket that reads but never answers.
            logger.exception("cannot send a frame; closing the socket")
            self._close = (CLOSE_INTERNAL_ERROR, "internal error")
            self._done = True
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.send_timeout):
                    await self.websocket.close(*self._close)
        finally:
            self._sending_since = None
            self._writer = None
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None

    def _sending(self) -> None:
        """A send begins: the watchdog fires if it takes longer than ``send_timeout``. One
        timer per writer, moved along lazily, not a timeout scope per frame."""
        loop = asyncio.get_running_loop()
        self._sending_since = loop.time()
        if self._watchdog is None:
            self._watchdog = loop.call_at(self._sending_since + self.send_timeout, self._watch)

    def _watch(self) -> None:
        self._watchdog = None
        since, writer = self._sending_since, self._writer
        if since is None or writer is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - since < self.send_timeout:
            self._watchdog = loop.call_at(since + self.send_timeout, self._watch)
            return
        self._stalled = True
        writer.cancel()

    def _give_up(self, abort: Callable[[], None] | None) -> None:
        """End a connection whose client took nothing for ``send_timeout`` seconds."""
        self._done = True
        self._pending.clear()
        self.pending_bytes = 0
        self._close = self._close or (CLOSE_POLICY, "client is not reading its frames")
        client = self.websocket.client
        logger.info(
            "%s took no frame for %g s; %s",
            f"{client.host}:{client.port}" if client else "a client",
            self.send_timeout,
            "resetting its connection" if abort else "giving up on it",
        )
        # A close frame cannot reach a client that reads nothing, and ASGI has no message
        # that drops a connection: once the endpoint returns, uvicorn waits without a bound
        # for the client to read what is buffered. The server may offer a reset (chatbot
        # serve does, see chatbot.transport); either way the endpoint now ends, which frees
        # the user's socket slot.
        if abort is not None:
            abort()
        if self.on_give_up is not None:
            self.on_give_up()


class Sockets:
    """The sockets open in this application, so that a shutdown can close them all and
    wait until each has sent its last frame and the close."""

    def __init__(self) -> None:
        self._open: dict[Connection, None] = {}

    def add(self, connection: Connection) -> None:
        self._open[connection] = None

    def discard(self, connection: Connection) -> None:
        self._open.pop(connection, None)

    async def close_all(self, code: int, reason: str, wait: float) -> None:
        """Close every socket with ``code``; return once each has sent the close, or after
        ``wait`` seconds for those that have not."""
        for connection in list(self._open):
            connection.close(code, reason)
        writers = {w for c in list(self._open) if (w := c.writer()) is not None}
        if writers:
            await asyncio.wait(writers, timeout=wait)
