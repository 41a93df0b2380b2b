"""The bare stack: Starlette served by uvicorn exactly as ``chatbot serve`` serves the chat app.

It does the least each benchmark needs and nothing else (no auth, no store, no backend), so
that a chatbot figure divided by the bare one is what chatbot adds on top of its stack. Run
it with ``python -m bench.bare --port N``.

Routes:

* ``GET /healthz``: ``ok``, for the start-up check;
* ``GET /json?items=N``: a JSON page of N message-shaped objects, built per request;
* ``WS /ws/echo``: each text frame is sent back as it came; with ``?hello=1`` the socket
  first sends a ``{"session_id": ...}`` frame, as a new chat socket does;
* ``WS /ws/stream``: each frame ``{"chunks": N, "delay": S}`` is answered by N delta frames,
  S seconds apart, then one final frame holding the whole text, as a streamed reply is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from chatbot.startup import bind

#: ``chatbot serve``'s uvicorn options (chatbot/cli.py), the chat app's own excepted.
UVICORN_OPTIONS: dict[str, Any] = {
    "ws_max_size": 1_048_576,
    "ws_per_message_deflate": False,
    "ws": "chatbot.transport:WebSocketProtocol",
    "log_level": "warning",
    "proxy_headers": False,
    "timeout_graceful_shutdown": 5,
}


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


async def json_page(request: Request) -> Response:
    items = int(request.query_params.get("items", "50"))
    messages = [
        {
            "id": index,
            "role": "user" if index % 2 == 0 else "assistant",
            "content": f"message number {index}",
            "status": "complete",
            "created_at": "2026-01-01T00:00:00.000000Z",
        }
        for index in range(items)
    ]
    return JSONResponse({"messages": messages, "has_more": True})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    if websocket.query_params.get("hello"):
        await websocket.send_text(json.dumps({"session_id": secrets.token_urlsafe(16)}))
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        return


async def stream(websocket: WebSocket) -> None:
    await websocket.accept()
    session_id = secrets.token_urlsafe(16)
    try:
        while True:
            request = json.loads(await websocket.receive_text())
            chunks, delay = int(request["chunks"]), float(request["delay"])
            words = []
            for index in range(chunks):
                if index and delay:
                    await asyncio.sleep(delay)
                word = f"w{index} "
                words.append(word)
                frame = {"type": "delta", "delta": word, "session_id": session_id}
                await websocket.send_text(json.dumps(frame))
            final = {"type": "message", "message": "".join(words), "session_id": session_id}
            await websocket.send_text(json.dumps(final))
    except WebSocketDisconnect:
        return


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/json", json_page),
        WebSocketRoute("/ws/echo", echo),
        WebSocketRoute("/ws/stream", stream),
    ]
)


def main() -> None:
    """Serve the bare app on 127.0.0.1:PORT until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # Bound as chatbot serve binds its own socket, so both listen the same way.
    sock = bind("127.0.0.1", args.port)
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, **UVICORN_OPTIONS)
    with sock:
        uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
