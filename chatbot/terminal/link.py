"""The chat socket of ``chatbot chat``: a message (or an edit, or a regeneration) and its
reply as it streams, a cancel, and a socket reopened when it drops, picking up the reply in
progress."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
)
from websockets.typing import Subprotocol

from chatbot.terminal.api import why
from chatbot.terminal.endpoint import Credentials, Server
from chatbot.terminal.errors import ChatError, Refused, Unreachable
from chatbot.terminal.screen import REPLY, Screen, duration, printable, status_mark

OPEN_TIMEOUT = 10.0
#: /quit waits at most this long for a server that does not answer the close.
CLOSE_TIMEOUT = 2.0
#: Close codes after which reopening the socket cannot help.
_FATAL_CLOSES = {4401, 4403, 4404, 4429}


def message(text: str) -> dict[str, Any]:
    """A message that continues the current branch."""
    return {"message": text}


def edit(text: str, parent_id: int | None) -> dict[str, Any]:
    """A message in place of the one that follows ``parent_id`` (``None``: the first one):
    the server keeps the old one as a sibling, and the new branch becomes current."""
    return {"message": text, "parent_id": parent_id}


def regenerate() -> dict[str, Any]:
    """A new reply in place of the newest one of the current branch, which is kept."""
    return {"type": "regenerate"}


@dataclass
class Turn:
    """One request sent (:func:`message`, :func:`edit` or :func:`regenerate`) and the reply
    shown for it."""

    request: dict[str, Any]
    done: asyncio.Future[None]
    id: str = field(default_factory=lambda: "t-" + secrets.token_urlsafe(12))
    sent: bool = False
    #: The socket it was last sent on: sent once per socket.
    sent_on: ClientConnection | None = None
    shown: str = ""
    started: bool = False
    #: The socket was reopened: the next delta holds the whole reply so far.
    resumed: bool = False
    cancel_sent: bool = False
    #: The status of the reply once its final frame has come; None while there is none
    #: (still streaming, an error, or given up on).
    status: str | None = None

    def finish(self, error: ChatError | None = None) -> None:
        if self.done.done():
            return
        if error is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(error)


class Link:
    """The chat socket of the current session: sends a message, shows its reply as it
    streams, and reopens the socket when it drops, picking up the reply in progress."""

    def __init__(self, server: Server, credentials: Credentials, screen: Screen) -> None:
        self.server = server
        self.credentials = credentials
        self.screen = screen
        self.session_id: str | None = None
        #: Set when the chat cannot go on; the main thread then exits with it.
        self.fatal: ChatError | None = None
        self._ws: ClientConnection | None = None
        self._turn: Turn | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: Called (in the loop's thread) once ``fatal`` is set.
        self.on_fatal: Callable[[], None] = lambda: None

    def failed(self) -> bool:
        """True once the chat cannot go on (``fatal`` says why)."""
        return self.fatal is not None

    # -- opening ---------------------------------------------------------------------------

    async def connect(self, session_id: str | None) -> str:
        """Open a socket on a session, a new one when ``session_id`` is None, and make it
        the current one; the session's id. The previous socket is closed once it is open."""
        ws = await self._open(session_id)
        old, self._ws = self._ws, ws
        if old is not None:
            await old.close()
        return self.session_id or ""

    async def _open(self, session_id: str | None) -> ClientConnection:
        url = self.server.ws_url(session_id)
        try:
            ws = await connect(
                url,
                subprotocols=[Subprotocol("chatbot.v1")],
                additional_headers={"Authorization": f"Bearer {self.credentials.token()}"},
                open_timeout=OPEN_TIMEOUT,
                close_timeout=CLOSE_TIMEOUT,
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status >= 500:  # a proxy in front of a server that is restarting
                raise Unreachable(self.server.unreachable(f"HTTP {status}")) from None
            raise ChatError(
                f"{self.server.base} has no chat socket (HTTP {status}); give --url the "
                "chatbot server's base URL, with its mount prefix if it has one"
            ) from None
        except InvalidMessage as exc:
            # The connection was closed before a response: a server starting or stopping.
            raise Unreachable(self.server.unreachable(why(exc))) from None
        except (InvalidHandshake, InvalidURI) as exc:
            raise ChatError(f"{self.server.base} did not answer as chatbot does: {exc}") from None
        except (OSError, TimeoutError) as exc:
            raise Unreachable(self.server.unreachable(why(exc))) from None
        ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._read(ws, ready, session_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if session_id is not None:
            # Nothing is sent on opening an existing session; a pong proves it was accepted
            # (a refused socket is closed with 4401 or 4404 first).
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"type": "ping"}))
        try:
            self.session_id = await asyncio.wait_for(ready, OPEN_TIMEOUT)
        except TimeoutError:
            await ws.close()
            raise Unreachable(self.server.unreachable("no answer in time")) from None
        return ws

    def _refusal(self, code: int, reason: str, session_id: str | None) -> ChatError:
        if code == 4401:
            return Refused(code, self.credentials.refused(reason or "unauthorized"))
        if code == 4404:
            return Refused(
                code, f"session {session_id} not found: it was deleted or belongs to another user"
            )
        if code in _FATAL_CLOSES:
            return Refused(code, f"the server refused the chat socket: {code} {reason}".strip())
        return Unreachable(f"the server closed the chat socket: {code} {reason}".strip())

    # -- reading ---------------------------------------------------------------------------

    async def _read(
        self, ws: ClientConnection, ready: asyncio.Future[str], session_id: str | None
    ) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(frame, dict):
                    self._handle(frame, ready, session_id)
        code = ws.close_code if ws.close_code is not None else 1006
        # Shown to the user: inert, like everything else a server sends (--url may name any).
        reason = printable(ws.close_reason or "")
        if not ready.done():
            ready.set_exception(self._refusal(code, reason, session_id))
        elif ws is self._ws:
            self._dropped(code, reason)

    def _handle(self, frame: dict[str, Any], ready: asyncio.Future[str], asked: str | None) -> None:
        kind = frame.get("type")
        if kind is None and set(frame) == {"session_id"}:
            if not ready.done():
                ready.set_result(str(frame["session_id"]))
            return
        if kind == "pong":
            if not ready.done():
                ready.set_result(asked or "")
            return
        turn = self._turn
        if turn is None or frame.get("reply_to") != turn.id:
            # A reply to someone else's message on this session, or a frame that answers
            # nothing: a branch or title frame (sent from the first edit or regeneration
            # on), or a newer frame type. None of them is shown.
            return
        if kind == "delta" and isinstance(frame.get("delta"), str):
            if turn.resumed:
                self._restart(turn, frame["delta"])
            self._show(turn, frame["delta"])
        elif kind == "message" and isinstance(frame.get("message"), str):
            self._final(turn, frame["message"], frame.get("status"))
        elif kind == "error":
            self._error(turn, frame.get("error"))

    def _restart(self, turn: Turn, text: str) -> None:
        """Show a resumed reply again from its start, on a line of its own."""
        turn.resumed = False
        if not text.startswith(turn.shown):
            self.screen.line("[the reply starts over]")
        turn.shown = ""
        turn.started = False
        self.screen.end_line()

    def _show(self, turn: Turn, text: str) -> None:
        if not turn.started:
            self.screen.end_line()
            self.screen.write(REPLY)
            turn.started = True
        self.screen.write(printable(text))
        turn.shown += text

    def _final(self, turn: Turn, text: str, status: Any) -> None:
        if turn.resumed:
            self._restart(turn, text)
        if text.startswith(turn.shown):
            self._show(turn, text[len(turn.shown) :])
        else:
            self.screen.end_line()
            turn.started, turn.shown = False, ""
            self._show(turn, text)
        mark = status_mark(turn.shown, status) if isinstance(status, str) else ""
        self.screen.write(mark + "\n")
        turn.status = status if isinstance(status, str) else "complete"
        turn.finish()

    def _error(self, turn: Turn, error: Any) -> None:
        error = error if isinstance(error, dict) else {}
        message = printable(str(error.get("message") or error.get("code") or "unknown error"))
        wait = error.get("retry_after")
        if isinstance(wait, int) and not isinstance(wait, bool) and f"{wait} s" not in message:
            message += f" (retry in {duration(wait)})"
        self.screen.line(f"error: {message}")
        turn.finish()

    # -- losing the socket -----------------------------------------------------------------

    def _dropped(self, code: int, reason: str) -> None:
        self._ws = None
        turn = self._turn if self._turn is not None and not self._turn.done.done() else None
        if turn is not None and turn.sent:
            turn.resumed = True
        if code == 1000 and turn is None:
            return  # closed for idling: reopened when there is something to send
        if code == 4401 and self.credentials.renewable:
            self._reconnect(None)  # the token expired: a fresh one is minted
        elif code == 4404:
            self.screen.line(
                f"[session {self.session_id} was deleted; your next message starts a new one]"
            )
            self.session_id = None
            if turn is not None:
                turn.finish(ChatError("the session was deleted"))
        elif code in _FATAL_CLOSES:
            self._fail(self._refusal(code, reason, self.session_id))
        else:
            why = f"{code} {reason}".strip() if code != 1006 else "no close frame"
            self._reconnect(f"[connection lost ({why}); reconnecting to {self.server.base}]")

    def _reconnect(self, notice: str | None) -> None:
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.create_task(self._reconnect_loop(notice))
            self._tasks.add(self._reconnecting)
            self._reconnecting.add_done_callback(self._tasks.discard)

    async def _reconnect_loop(self, notice: str | None) -> None:
        if notice is not None:
            self.screen.line(notice)
        delay = 0.25
        while True:
            try:
                await self.connect(self.session_id)
                break
            except Unreachable:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 4.0)
            except Refused as exc:
                if exc.code == 4404:
                    self._dropped(4404, "")
                else:
                    self._fail(exc)
                return
            except ChatError as exc:
                self._fail(exc)
                return
        if notice is not None:
            self.screen.line("[reconnected]")
        turn = self._turn
        if turn is not None and not turn.done.done():
            # Sent again with its id: answered once, whether it was lost, is being answered
            # (the socket's stream=1 brings the text so far) or was stored meanwhile.
            await self._send(turn)

    def _fail(self, error: ChatError) -> None:
        self.fatal = error
        self.screen.line(f"chatbot: error: {error}", error=True)
        if self._turn is not None:
            self._turn.finish(error)
        self.on_fatal()

    # -- what the main thread calls --------------------------------------------------------

    async def ask(self, request: dict[str, Any]) -> Turn:
        """Send a request (:func:`message`, :func:`edit`, :func:`regenerate`) and show its
        reply; returns, with how it ended, when the reply has ended."""
        turn = Turn(request, asyncio.get_running_loop().create_future())
        self._turn = turn
        try:
            if self.fatal is not None:
                raise self.fatal
            if self.session_id is None:
                session_id = await self.connect(None)
                self.screen.line(f"session: {session_id} (new)")
            if self._ws is not None:
                await self._send(turn)
            else:
                self._reconnect(None)  # it sends the message once the socket is open
            await turn.done
        finally:
            self._turn = None
        return turn

    async def _send(self, turn: Turn) -> None:
        ws = self._ws
        if ws is None or turn.sent_on is ws:
            return
        frame = dict(turn.request)
        if "message" in frame:
            frame["session_id"] = self.session_id
        frame.update(id=turn.id, stream=True)
        with contextlib.suppress(ConnectionClosed):  # the reader sees it and reconnects
            await ws.send(json.dumps(frame, ensure_ascii=False))
            turn.sent, turn.sent_on = True, ws

    async def interrupt(self) -> None:
        """Ctrl-C during a reply: cancel it; a second Ctrl-C stops waiting for it."""
        turn = self._turn
        if turn is None or turn.done.done():
            return
        if self._ws is not None and turn.sent and not turn.cancel_sent:
            turn.cancel_sent = True
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(json.dumps({"type": "cancel"}))
                return
        if turn.sent:
            self.screen.line("[stopped waiting; the reply, if any, will be in the history]")
        else:
            self.screen.line("[not sent]")
        turn.finish()

    async def close(self) -> None:
        """Close the socket and stop every task of the link."""
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
