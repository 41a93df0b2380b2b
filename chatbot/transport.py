"""The WebSocket protocol ``chatbot serve`` runs: uvicorn's, plus what ASGI cannot ask for.

ASGI lets an application send a frame, send ``websocket.close``, or return. None of these
can drop a client that stopped reading. uvicorn's ``websockets-sansio`` and ``wsproto``
implementations wait, without a bound, for the write buffer to drain before they write
anything, the close frame included; and when the application returns they call
``transport.close()``, which asyncio carries out only once the buffer has drained. A client
that keeps its TCP connection open but reads nothing (a zero receive window) is therefore
never disconnected: the connection, uvicorn's buffer and the kernel's (megabytes) stay for as
long as the client likes. And as a send waits for room *before* writing, the application
learns that its last frames were not taken only when it has another one to send.

:class:`WebSocketProtocol` is uvicorn's ``websockets-sansio`` implementation with one
addition, the ASGI scope extension :data:`~chatbot.websocket.TRANSPORT_EXTENSION`:

* ``drain()``, awaitable: returns once the client has taken what was written (uvicorn's
  buffer is back under its low-water mark), as asyncio's ``StreamWriter.drain()`` does;
* ``abort()``: resets the connection at once (a TCP RST; what is still buffered is
  dropped), which ends it on both sides and frees its buffers.

The chat endpoint bounds each frame, its drain included, by ``CHATBOT_SEND_TIMEOUT`` and
resets a client that took nothing for that long. Under another server the extension is
absent: the endpoint still gives up and frees the user's socket slot when a frame waits that
long, but the TCP connection stays until the client reads or goes away. Serving the app with
uvicorn directly, pass ``--ws chatbot.transport:WebSocketProtocol`` to get the reset too.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Coroutine
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from chatbot.connection import TRANSPORT_EXTENSION

#: SO_LINGER on, with a linger time of 0: closing the socket then sends a RST and frees it
#: at once, instead of leaving the kernel to retry delivering what the client never read.
_LINGER_ZERO = struct.pack("ii", 1, 0)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` WebSocket protocol, offering the application
    ``drain()`` and ``abort()`` through the :data:`TRANSPORT_EXTENSION` scope extension."""

    def run_asgi(self) -> Coroutine[Any, Any, None]:
        extensions = self.scope.setdefault("extensions", {})
        extensions[TRANSPORT_EXTENSION] = {"drain": self.drain, "abort": self.abort}
        # uvicorn's own coroutine, not one of ours awaiting it: no extra frame per socket.
        return super().run_asgi()

    async def drain(self) -> None:
        """Wait until the client has taken what was written, or the connection is lost."""
        await self.writable.wait()

    def abort(self) -> None:
        """Reset the connection now: unsent data is dropped and the client sees a reset."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        self.transport.abort()
