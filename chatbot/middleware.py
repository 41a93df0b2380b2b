"""HTTP request bodies: an ASGI middleware that answers ``413`` to a body larger than
``CHATBOT_MAX_BODY_BYTES``, without reading more of it than the limit."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbot.errors import ChatbotError
from chatbot.serialize import error_response


class BodyTooLarge(ChatbotError):
    """The request body went past ``CHATBOT_MAX_BODY_BYTES`` while it was being read."""


def body_too_large_response(limit: int) -> JSONResponse:
    """The ``413 body_too_large`` answer, which also closes the connection."""
    return error_response(
        413,
        "body_too_large",
        f"the request body is larger than {limit} bytes",
        # The rest of the body is not wanted: do not keep reading it for a next request.
        headers={"Connection": "close"},
    )


class BodySizeLimit:
    """Answer ``413`` to an HTTP request whose body is larger than ``max_bytes``.

    A ``Content-Length`` over the limit is refused before the application runs and before
    any of the body is read. A body without one (chunked) is counted as the application
    reads it, and refused at the first chunk past the limit; nothing beyond that chunk is
    read. WebSocket frames have their own limit (``CHATBOT_MAX_FRAME_BYTES``).
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, larger: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        #: Paths (their ends, so that a mounted app keeps them) with a limit of their own.
        self.larger = dict(larger or {})

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] != "http":
            # The app's own coroutine, not one of ours around it: a socket open for hours
            # does not keep a frame of this middleware alive.
            return self.app(scope, receive, send)
        return self._http(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.max_bytes
        path = scope.get("path", "")
        for end, own in self.larger.items():
            if path.endswith(end):
                limit = own
        for name, value in scope["headers"]:
            if name == b"content-length" and value.strip().isdigit() and int(value) > limit:
                await body_too_large_response(limit)(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await body_too_large_response(limit)(scope, receive, send)
