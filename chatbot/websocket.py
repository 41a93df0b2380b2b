"""The chat WebSocket endpoint: ``/ws/chat/``.

The endpoint authenticates the upgrade, opens or creates the session, then reads frames and
hands valid messages to the session's :class:`~chatbot.conversation.Conversation`. Replies
come back through :class:`Connection`, whose single writer task is the only code that sends
on the socket.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from chatbot.auth import SUBPROTOCOL, Identity, bearer_from_header, bearer_from_subprotocols
from chatbot.conversation import DeltaEvent, Event, Job, ReplyEvent
from chatbot.errors import AuthError, InvalidRequest, NotFound
from chatbot.limits import TooManySessions
from chatbot.runtime import Runtime, runtime_of
from chatbot.serialize import dumps, is_utf8, timestamp

logger = logging.getLogger("chatbot.websocket")

CLOSE_NORMAL = 1000
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY = 4429

#: The ASGI scope extension through which a server offers what ASGI cannot ask for:
#: ``{"drain": async callable, "abort": callable}``. See chatbot.transport.
TRANSPORT_EXTENSION = "chatbot.transport"

MAX_CLIENT_ID_CHARS = 128
MAX_PENDING_FRAMES = 1024
#: What a queued frame is counted as beyond its text (keys, ids, timestamps, usage).
FRAME_OVERHEAD_BYTES = 256


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
        #: Extended reply frames (type, message_id, reply_to, usage...) are opt-in: the
        #: chatbot.v1 subprotocol, or any message that used an addition such as ``id``.
        self.extended = extended
        #: Delta frames are opt-in too: ``?stream=1`` on the URL, or a message that asked
        #: for ``"stream": true``. From then on the socket gets the deltas of every reply.
        self.wants_deltas = wants_deltas
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        #: The frames waiting to be sent are bounded in number and in bytes (about).
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0
        self.peak_pending_bytes = 0
        #: Seconds one frame (or the close) may take to find room in the socket's buffers
        #: and, where the server can tell, to be taken by the client: a client that takes
        #: nothing for that long is not reading, and is dropped.
        self.send_timeout = send_timeout
        #: When the client last sent a frame (time.monotonic), for the idle timeout.
        self.last_frame_at = time.monotonic()

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
        self._wake.set()

    def _count(self, size: int) -> None:
        self.pending_bytes += size
        self.peak_pending_bytes = max(self.peak_pending_bytes, self.pending_bytes)

    def _not_reading(self) -> None:
        # The client stopped reading; holding more would grow memory without bound. What is
        # queued is dropped too: the close goes right after the frame being sent now.
        self._pending.clear()
        self.pending_bytes = 0
        self.close(CLOSE_POLICY, "client is not reading its frames")

    def close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            self._wake.set()

    def deliver(self, event: Event) -> None:
        if isinstance(event, ReplyEvent):
            self.send(self._reply_frame(event))
        elif isinstance(event, DeltaEvent):
            if self._close is not None:
                return
            last = self._pending[-1] if self._pending else None
            if (
                last is not None
                and last.get("type") == "delta"
                and (last.get("reply_to") == event.reply_to)
            ):
                # Not sent yet: grow that frame rather than queue another, so a fast
                # backend and a slower client do not pile up thousands of tiny frames.
                size = _text_bytes(event.text)
                if self.pending_bytes + size > self.max_pending_bytes:
                    self._not_reading()
                    return
                last["delta"] += event.text
                self._count(size)
                return
            frame: dict[str, Any] = {
                "type": "delta",
                "delta": event.text,
                "session_id": self.session_id,
            }
            if event.reply_to is not None:
                frame["reply_to"] = event.reply_to
            self.send(frame)
        else:
            self.send_error(event.code, event.message, event.retryable, event.reply_to)

    def send_error(
        self,
        code: str,
        message: str,
        retryable: bool = False,
        reply_to: str | None = None,
        *,
        retry_after: int | None = None,
    ) -> None:
        frame: dict[str, Any] = {
            "type": "error",
            "error": {"code": code, "message": message, "retryable": retryable},
            "session_id": self.session_id,
        }
        if retry_after is not None:
            frame["error"]["retry_after"] = retry_after
        if reply_to is not None:
            frame["reply_to"] = reply_to
        self.send(frame)

    def _reply_frame(self, event: ReplyEvent) -> dict[str, Any]:
        message = event.message
        frame: dict[str, Any]
        if not self.extended:
            frame = {"message": message.content, "session_id": self.session_id}
            if message.status != "complete":
                # Only a cancel (an addition itself) or a shutdown ends a reply early.
                frame["status"] = message.status
            return frame
        frame = {
            "type": "message",
            "message": message.content,
            "session_id": self.session_id,
            "message_id": message.id,
            "status": message.status,
            "created_at": timestamp(message.created_at),
            "backend": message.backend,
            "model": message.model,
        }
        if event.reply_to is not None:
            frame["reply_to"] = event.reply_to
        if message.usage is not None:
            frame["usage"] = message.usage
        return frame

    async def run_writer(self) -> None:
        """Send queued frames in order; close the socket when asked to; reset it when the
        client takes no frame for ``send_timeout`` seconds."""
        transport = (self.websocket.scope.get("extensions") or {}).get(TRANSPORT_EXTENSION)
        drain = transport.get("drain") if transport else None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    frame = self._pending.popleft()
                    self.pending_bytes -= _frame_bytes(frame)
                    async with asyncio.timeout(self.send_timeout):
                        await self.websocket.send_text(dumps(frame))
                        if drain is not None:
                            # Else a client that stopped reading is noticed only when
                            # another frame is sent, which may be never.
                            await drain()
                if self._close is not None:
                    code, reason = self._close
                    # The close frame queues behind the bytes the client has not read.
                    async with asyncio.timeout(self.send_timeout):
                        await self.websocket.close(code, reason)
                    return
        except TimeoutError:
            # Before OSError, of which TimeoutError is a subclass.
            self._give_up(transport.get("abort") if transport else None)
        except (WebSocketDisconnect, RuntimeError, OSError):
            # The client went away (or the server closed the socket): nothing to send to.
            self._close = self._close or (CLOSE_NORMAL, "")
        except Exception:
            # A writer that died quietly would leave a socket that reads but never answers.
            logger.exception("cannot send a frame; closing the socket")
            self._close = (CLOSE_INTERNAL_ERROR, "internal error")
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.send_timeout):
                    await self.websocket.close(*self._close)

    def _give_up(self, abort: Callable[[], None] | None) -> None:
        """End a connection whose client took nothing for ``send_timeout`` seconds."""
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


async def _reject(websocket: WebSocket, subprotocol: str | None, code: int, reason: str) -> None:
    # Browsers cannot read the HTTP status of a refused upgrade, but they can read a close code.
    await websocket.accept(subprotocol=subprotocol)
    await websocket.close(code, reason)


async def chat_endpoint(websocket: WebSocket) -> None:
    runtime = runtime_of(websocket)
    offered = list(websocket.scope.get("subprotocols") or [])
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None
    if not runtime.limits.origin_allowed(websocket.headers):
        # Before anything else: a page of another site learns nothing, not even whether
        # the token it got a browser to send is valid (cross-site WebSocket hijacking).
        await _reject(websocket, subprotocol, CLOSE_FORBIDDEN, "origin not allowed")
        return
    try:
        token = bearer_from_header(websocket.headers) or bearer_from_subprotocols(offered)
        identity = await runtime.verifier.verify(token)
    except AuthError as exc:
        await _reject(websocket, subprotocol, CLOSE_UNAUTHORIZED, exc.reason)
        return
    limits = runtime.limits
    if not limits.open_socket(identity.user_id, websocket):
        await _reject(websocket, subprotocol, CLOSE_TOO_MANY, "too many connections")
        return
    try:
        await _chat(websocket, runtime, identity, subprotocol)
    finally:
        limits.close_socket(identity.user_id, websocket)


async def _chat(
    websocket: WebSocket, runtime: Runtime, identity: Identity, subprotocol: str | None
) -> None:
    store = runtime.store
    requested = websocket.query_params.get("session_id") or None
    try:
        if requested is not None:
            session = await store.get_session(identity.user_id, requested)
        else:
            backend = runtime.backends.get(runtime.backends.default)
            session = await runtime.limits.create_session(
                store, identity.user_id, backend=backend.name, model=backend.default_model
            )
    except NotFound:
        await _reject(websocket, subprotocol, CLOSE_NOT_FOUND, "session not found")
        return
    except TooManySessions:
        await _reject(websocket, subprotocol, CLOSE_TOO_MANY, "too many sessions")
        return

    await websocket.accept(subprotocol=subprotocol)
    connection = Connection(
        websocket,
        session.id,
        extended=subprotocol is not None,
        wants_deltas=websocket.query_params.get("stream") in ("1", "true"),
        max_pending_bytes=runtime.settings.max_pending_bytes,
        send_timeout=runtime.settings.send_timeout,
    )
    if requested is None:
        # Exactly the original document's frame, and no other key.
        connection.send({"session_id": session.id})
    runtime.conversations.subscribe(session, connection)
    if requested is not None:
        # A DELETE between the check above and the subscription would miss this socket.
        try:
            await store.get_session(identity.user_id, session.id)
        except NotFound:
            connection.close(CLOSE_NOT_FOUND, "session not found")
    writer = asyncio.create_task(connection.run_writer())
    expiry = asyncio.create_task(
        _close_at_expiry(connection, identity.expires_at + runtime.verifier.leeway)
    )
    idle = asyncio.create_task(_close_when_idle(connection, runtime.settings.idle_timeout))
    reader = asyncio.create_task(_read(websocket, connection, runtime, identity.user_id))
    try:
        # The writer ends first when it gives up on a client that stopped reading: that
        # client sends nothing either, and without a reset no disconnect reaches the reader.
        await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
        if reader.done():
            reader.result()
    finally:
        reader.cancel()
        runtime.conversations.unsubscribe(session.id, connection)
        expiry.cancel()
        idle.cancel()
        connection.close(CLOSE_NORMAL, "")
        with contextlib.suppress(Exception):
            await writer


async def _close_at_expiry(connection: Connection, at: float) -> None:
    await asyncio.sleep(max(0.0, at - time.time()))
    connection.close(CLOSE_UNAUTHORIZED, "token expired")


async def _close_when_idle(connection: Connection, idle_seconds: float) -> None:
    """Close with 1000 ``idle timeout`` once the client sent no frame for ``idle_seconds``.
    Protocol-level pings do not count (uvicorn answers them; the app never sees them);
    a ``{"type": "ping"}`` frame does."""
    while not connection.closing:
        left = connection.last_frame_at + idle_seconds - time.monotonic()
        if left <= 0:
            connection.close(CLOSE_NORMAL, "idle timeout")
            return
        await asyncio.sleep(left)


async def _read(websocket: WebSocket, connection: Connection, runtime: Runtime, owner: str) -> None:
    limit = runtime.settings.max_frame_bytes
    while not connection.closing:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        connection.last_frame_at = time.monotonic()
        text = message.get("text")
        if text is None:
            connection.close(CLOSE_UNSUPPORTED, "binary frames are not part of the protocol")
            return
        if len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit:
            connection.close(CLOSE_TOO_BIG, f"frame larger than {limit} bytes")
            return
        _handle(text, connection, runtime, owner)


def _handle(text: str, connection: Connection, runtime: Runtime, owner: str) -> None:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        connection.send_error("invalid_json", "the frame is not valid JSON")
        return
    if not isinstance(data, dict):
        connection.send_error("invalid_message", "a frame must be a JSON object")
        return
    client_id = data.get("id")
    # Echo only an id that could be valid: a rejected huge one would make the error frame
    # itself larger than the frame limit.
    reply_to = (
        client_id
        if isinstance(client_id, str)
        and 0 < len(client_id) <= MAX_CLIENT_ID_CHARS
        and is_utf8(client_id)
        else None
    )
    try:
        kind = data.get("type", "message")
        if kind == "ping":
            connection.send({"type": "pong"})
            return
        if kind == "cancel":
            # Nothing in progress is not an error: the reply may have just completed.
            runtime.conversations.cancel(connection.session_id)
            return
        if kind != "message":
            raise InvalidRequest("invalid_message", "type must be 'message', 'ping' or 'cancel'")
        job = _validate(data, connection, runtime, owner)
        if not _within_rate_limit(connection, runtime, owner, reply_to):
            return
        if job.stream:
            runtime.conversations.enable_deltas(connection.session_id, connection)
        runtime.conversations.submit(connection.session_id, job)
    except InvalidRequest as exc:
        connection.send_error(exc.code, exc.message, exc.code == "busy", reply_to)


def _within_rate_limit(
    connection: Connection, runtime: Runtime, owner: str, reply_to: str | None
) -> bool:
    """Count a message against its user's limit (all their sockets together); refuse it
    with ``rate_limited``, or close the socket 4429 when the user keeps flooding."""
    decision = runtime.limits.messages.hit(owner)
    if decision.allowed:
        return True
    if decision.refused > runtime.settings.flood_tolerance:
        connection.close(CLOSE_TOO_MANY, "persistent flooding")
        return False
    limit = runtime.settings.rate_limit_per_minute
    connection.send_error(
        "rate_limited",
        f"more than {limit} messages a minute; the message was not stored, send it again "
        f"in {decision.retry_after} s",
        True,
        reply_to,
        retry_after=decision.retry_after,
    )
    return False


def _validate(data: dict[str, Any], connection: Connection, runtime: Runtime, owner: str) -> Job:
    content = data.get("message")
    if not isinstance(content, str):
        raise InvalidRequest("invalid_message", "message must be a string")
    if not content.strip():
        raise InvalidRequest("invalid_message", "message must not be empty")
    if not is_utf8(content):
        raise InvalidRequest("invalid_message", "message holds an unpaired surrogate")
    limit = runtime.settings.max_message_chars
    if len(content) > limit:
        raise InvalidRequest("message_too_long", f"message is longer than {limit} characters")
    session_id = data.get("session_id")
    if session_id is not None:
        if not isinstance(session_id, str):
            raise InvalidRequest("invalid_message", "session_id must be a string")
        if session_id != connection.session_id:
            raise InvalidRequest(
                "session_mismatch",
                "session_id is not this connection's session; open a socket on that "
                "session instead",
            )
    client_id = data.get("id")
    if client_id is not None and (
        not isinstance(client_id, str)
        or not 0 < len(client_id) <= MAX_CLIENT_ID_CHARS
        or not is_utf8(client_id)
    ):
        raise InvalidRequest(
            "invalid_message", f"id must be a string of 1 to {MAX_CLIENT_ID_CHARS} characters"
        )
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("invalid_message", "stream must be true or false")
    if client_id is not None or "stream" in data:
        connection.extended = True
    return Job(owner=owner, content=content, client_id=client_id, origin=connection, stream=stream)
