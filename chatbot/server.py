"""The uvicorn server ``chatbot serve`` runs, with a shutdown that lets replies finish.

On SIGTERM uvicorn stops accepting connections and then closes every WebSocket with 1012
at once. This server first stops accepting, gives the replies in flight
``CHATBOT_SHUTDOWN_GRACE`` seconds to finish (their final frames still reach the sockets),
cancels and stores what is left, and closes each socket with 1001 (going away).

A start-up that fails with a :class:`~chatbot.errors.ChatbotError` is kept in
``startup_error`` instead of being logged as a traceback, for ``chatbot serve`` to print as
its one-line message.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Awaitable, Callable

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbot.errors import ChatbotError
from chatbot.protocol import CLOSE_GOING_AWAY
from chatbot.runtime import Runtime


class StartupErrors:
    """ASGI middleware that keeps the ``ChatbotError`` failing the lifespan's start-up."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.error: ChatbotError | None = None

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "lifespan":
            # The app's own coroutine: no frame of ours held for each open socket.
            return self.app(scope, receive, send)
        return self._lifespan(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:

        async def report(message: Message) -> None:
            # Starlette sends "startup.failed" from inside its except block, with the
            # traceback as the message uvicorn logs; the exception is the one being handled.
            failure = sys.exc_info()[1]
            if message["type"] == "lifespan.startup.failed" and isinstance(failure, ChatbotError):
                self.error = failure
                message = {**message, "message": ""}
            await send(message)

        await self.app(scope, receive, report)


class ChatServer(uvicorn.Server):
    """``uvicorn.Server`` that drains the chat app's conversations before shutting down."""

    def __init__(
        self,
        config: uvicorn.Config,
        app: Starlette,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        # ``config`` serves ``app``; wrapped before uvicorn loads it, so that its lifespan
        # reports here.
        self.startup_errors = StartupErrors(app)
        config.app = self.startup_errors
        super().__init__(config)
        self.chat_app = app
        self.on_started = on_started

    @property
    def startup_error(self) -> ChatbotError | None:
        """The error that stopped the start-up, when it was one of chatbot's own."""
        return self.startup_errors.error

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Only now does the server accept connections: a link printed earlier could fail.
        if self.started and self.on_started is not None:
            self.on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        runtime = getattr(self.chat_app.state, "chatbot", None)
        if isinstance(runtime, Runtime) and not self.force_exit:
            await runtime.drain(
                runtime.settings.shutdown_grace, CLOSE_GOING_AWAY, "server shutting down"
            )
        await super().shutdown(sockets)
