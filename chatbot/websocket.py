"""The chat WebSocket endpoint, ``/ws/chat/``: the life of one socket.

The endpoint authenticates the upgrade, opens or creates the session, subscribes the socket
to the session's events on the hub, then reads frames and hands valid messages to the
session's worker (:mod:`chatbot.chat.worker`). Events come back through the socket's
:class:`~chatbot.connection.Connection`, whose single writer task is the only code that
sends on the socket. The frames themselves are :mod:`chatbot.protocol`'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from starlette.websockets import WebSocket

from chatbot.auth import SUBPROTOCOL, Identity, bearer_from_header, bearer_from_subprotocols
from chatbot.chat.turn import Job
from chatbot.connection import Connection
from chatbot.errors import AuthError, InvalidRequest, NotFound, TooManySessions
from chatbot.logs import current_request_id
from chatbot.protocol import (
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL_ERROR,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_NOT_FOUND,
    CLOSE_TOO_BIG,
    CLOSE_TOO_MANY,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNSUPPORTED,
    echoable_id,
    parse_message,
    parse_regenerate,
)
from chatbot.runtime import Runtime, runtime_of
from chatbot.settings import Settings
from chatbot.stores.base import LEAF, Session

logger = logging.getLogger("chatbot.websocket")


async def _reject(websocket: WebSocket, subprotocol: str | None, code: int, reason: str) -> None:
    # Browsers cannot read the HTTP status of a refused upgrade, but they can read a close code.
    runtime_of(websocket).observer.socket_refused(code, reason)
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
    socket_id = uuid.uuid4().hex
    try:
        counted = await limits.open_socket(identity.user_id, socket_id)
    except Exception:
        logger.exception("counting a socket failed; the socket is refused")
        await _reject(websocket, subprotocol, CLOSE_INTERNAL_ERROR, "internal error")
        return
    if not counted:
        await _reject(websocket, subprotocol, CLOSE_TOO_MANY, "too many connections")
        return
    try:
        await _chat(websocket, runtime, identity, subprotocol)
    finally:
        await limits.close_socket(identity.user_id, socket_id)


async def _open_session(runtime: Runtime, owner: str, requested: str | None) -> Session:
    if requested is not None:
        return await runtime.store.get_session(owner, requested)
    backend = runtime.backends.get(runtime.backends.default)
    return await runtime.store.create_session(
        owner,
        backend=backend.name,
        model=backend.default_model,
        limit=runtime.settings.max_sessions_per_user,
    )


async def _chat(
    websocket: WebSocket, runtime: Runtime, identity: Identity, subprotocol: str | None
) -> None:
    requested = websocket.query_params.get("session_id") or None
    try:
        session = await _open_session(runtime, identity.user_id, requested)
    except NotFound:
        await _reject(websocket, subprotocol, CLOSE_NOT_FOUND, "session not found")
        return
    except TooManySessions:
        await _reject(websocket, subprotocol, CLOSE_TOO_MANY, "too many sessions")
        return

    await websocket.accept(subprotocol=subprotocol)
    settings = runtime.settings
    connection = Connection(
        websocket,
        session.id,
        extended=subprotocol is not None,
        wants_deltas=websocket.query_params.get("stream") in ("1", "true"),
        max_pending_bytes=settings.max_pending_bytes,
        send_timeout=settings.send_timeout,
    )
    if websocket.query_params.get("conversation_events") in ("1", "true"):
        connection.conversation_events = connection.extended = True
    if requested is None:
        # Exactly the original document's frame, and no other key.
        connection.send({"session_id": session.id})
    hub = runtime.hub
    hub.subscribe(session.id, connection.deliver)
    if connection.wants_deltas:
        _catch_up(runtime, connection)
    if requested is not None:
        # A DELETE between the check above and the subscription would miss this socket.
        try:
            await runtime.store.get_session(identity.user_id, session.id)
        except NotFound:
            connection.close(CLOSE_NOT_FOUND, "session not found")
    runtime.sockets.add(connection)
    # A timer rather than tasks: an idle socket costs its endpoint's task alone.
    timers = _Timers(connection, identity.expires_at + runtime.verifier.leeway, settings)
    endpoint = asyncio.current_task()
    assert endpoint is not None
    gave_up = False

    def give_up() -> None:
        # The writer gave up on a client that stopped reading: that client sends nothing
        # either, and without a reset no disconnect reaches the reader.
        nonlocal gave_up
        gave_up = True
        endpoint.cancel()

    connection.on_give_up = give_up
    watch = runtime.observer.socket_opened(identity.user_id, session.id)
    try:
        await _read(websocket, connection, runtime, session, identity)
    except asyncio.CancelledError:
        if not gave_up or endpoint.cancelling() > 1:
            raise  # the server cancels this socket
        endpoint.uncancel()
    finally:
        connection.on_give_up = None
        hub.unsubscribe(session.id, connection.deliver)
        timers.cancel()
        connection.close(CLOSE_NORMAL, "")
        watch.closed(*connection.closed_with())
        await connection.finished()
        runtime.sockets.discard(connection)


class _Timers:
    """Closes a socket when its token expires (4401) and when its client has sent nothing
    for ``idle_timeout`` seconds (1000 ``idle timeout``). Protocol-level pings do not count
    (uvicorn answers them; the app never sees them); a ``{"type": "ping"}`` frame does.

    One loop timer for both, checked when it fires rather than rearmed on every frame: a
    busy socket costs nothing here, an idle one a timer handle."""

    def __init__(self, connection: Connection, expires_at: float, settings: Settings) -> None:
        self.connection = connection
        self.idle_seconds = settings.idle_timeout
        loop = asyncio.get_running_loop()
        self.expires = loop.time() + max(0.0, expires_at - time.time())
        self._timer = loop.call_at(min(self.expires, loop.time() + self.idle_seconds), self._fire)

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self.expires:
            self.connection.close(CLOSE_UNAUTHORIZED, "token expired")
            return
        # last_frame_at is time.monotonic()'s; the loop's clock may be another's (uvloop).
        idle_left = self.connection.last_frame_at + self.idle_seconds - time.monotonic()
        if idle_left <= 0:
            self.connection.close(CLOSE_NORMAL, "idle timeout")
            return
        self._timer = loop.call_at(min(self.expires, now + idle_left), self._fire)

    def cancel(self) -> None:
        self._timer.cancel()


def _catch_up(runtime: Runtime, connection: Connection) -> None:
    """Mid-reply, send a socket that starts streaming the text so far, so that its deltas
    still add up to the final text."""
    progress = runtime.hub.snapshot(connection.session_id)
    if progress is not None:
        connection.send_delta(progress.text, progress.reply_to)


async def _read(
    websocket: WebSocket,
    connection: Connection,
    runtime: Runtime,
    session: Session,
    identity: Identity,
) -> None:
    limit = runtime.settings.max_frame_bytes
    while not connection.closing:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            connection.client_closed(message.get("code", CLOSE_NO_STATUS))
            return
        connection.last_frame_at = time.monotonic()
        text = message.get("text")
        if text is None:
            connection.close(CLOSE_UNSUPPORTED, "binary frames are not part of the protocol")
            return
        if len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit:
            connection.close(CLOSE_TOO_BIG, f"frame larger than {limit} bytes")
            return
        await _handle(text, connection, runtime, session, identity)


async def _handle(
    text: str, connection: Connection, runtime: Runtime, session: Session, identity: Identity
) -> None:
    owner = identity.user_id
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        connection.send_error("invalid_json", "the frame is not valid JSON")
        return
    if not isinstance(data, dict):
        connection.send_error("invalid_message", "a frame must be a JSON object")
        return
    reply_to = echoable_id(data.get("id"))
    try:
        kind = data.get("type", "message")
        if kind == "ping":
            connection.send({"type": "pong"})
            return
        if kind == "cancel":
            # Nothing in progress is not an error: the reply may have just completed.
            runtime.hub.cancel(connection.session_id)
            return
        if kind == "regenerate":
            regenerate = parse_regenerate(data)
            connection.extended = connection.conversation_events = True
            job = Job(
                owner, "", regenerate.client_id, asker=connection.name, regenerate=True,
                reply_id=regenerate.message_id,
            )  # fmt: skip
            stream = regenerate.stream
        elif kind == "message":
            frame = parse_message(data, connection.session_id, runtime.settings.max_message_chars)
            if frame.extended:
                connection.extended = True
            if frame.parent != LEAF:
                connection.conversation_events = True
            job = Job(owner, frame.content, frame.client_id, asker=connection.name)
            job.parent = frame.parent
            stream = frame.stream
        else:
            raise InvalidRequest(
                "invalid_message", "type must be 'message', 'regenerate', 'ping' or 'cancel'"
            )
        job.request_id = current_request_id()
        runtime.observer.message_received(kind)
        if not await _within_rate_limit(connection, runtime, owner, reply_to):
            return
        job.plan = identity.plan
        if stream and not connection.wants_deltas:
            # From now on this socket gets the deltas of every reply.
            connection.wants_deltas = True
            _catch_up(runtime, connection)
        await runtime.workers.submit(session, job)
    except NotFound:
        # Deleted (on another process, whose close frame this socket may not have had).
        connection.close(CLOSE_NOT_FOUND, "session not found")
    except InvalidRequest as exc:
        if exc.code == "busy":
            runtime.observer.refused("busy")
        connection.send_error(exc.code, exc.message, exc.code == "busy", reply_to)


async def _within_rate_limit(
    connection: Connection, runtime: Runtime, owner: str, reply_to: str | None
) -> bool:
    """Count a message against its user's limit (all their sockets together); refuse it
    with ``rate_limited``, or close the socket 4429 when the user keeps flooding."""
    try:
        decision = await runtime.limits.hit(owner)
    except Exception:
        # The database that counts is unreachable: it would not store the message either.
        logger.exception("counting a message failed; the message is refused")
        connection.send_error(
            "internal_error", "the server failed; send the message again later", True, reply_to
        )
        return False
    if decision.allowed:
        return True
    if decision.refused > runtime.settings.flood_tolerance:
        runtime.observer.refused("flooding")
        connection.close(CLOSE_TOO_MANY, "persistent flooding")
        return False
    runtime.observer.refused("rate_limited")
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
