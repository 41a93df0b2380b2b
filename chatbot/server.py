"""The uvicorn server ``chatbot serve`` runs, with a shutdown that lets replies finish.

On SIGTERM uvicorn stops accepting connections and then closes every WebSocket with 1012
at once. This server first stops accepting, gives the replies in flight
``CHATBOT_SHUTDOWN_GRACE`` seconds to finish (their final frames still reach the sockets),
cancels and stores what is left, and closes each socket with 1001 (going away).
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from starlette.applications import Starlette

from chatbot.runtime import Runtime

CLOSE_GOING_AWAY = 1001


class ChatServer(uvicorn.Server):
    """``uvicorn.Server`` that drains the chat app's conversations before shutting down."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.chat_app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        runtime = getattr(self.chat_app.state, "chatbot", None)
        if isinstance(runtime, Runtime) and not self.force_exit:
            await runtime.conversations.drain(
                runtime.settings.shutdown_grace, CLOSE_GOING_AWAY, "server shutting down"
            )
            # Let the sockets' writers send their last frames and the close.
            await asyncio.sleep(0.2)
        await super().shutdown(sockets)
