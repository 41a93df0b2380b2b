"""The application as a whole: mounted in another app, run by uvicorn's factory, described."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute

from chatbot.app import create_app
from chatbot.openapi import document
from tests.conftest import (
    SECRET,
    LiveServer,
    ServerFactory,
    make_token,
    recv_json,
    wait_for,
)

ALICE = make_token("alice")


def test_mounted_under_a_prefix(start_server: ServerFactory) -> None:
    chat = create_app(start_server.settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        async with chat.router.lifespan_context(chat) as state:
            yield dict(state or {})

    async def home(request: object) -> PlainTextResponse:
        return PlainTextResponse("host app")

    host = Starlette(routes=[Route("/", home), Mount("/chat", app=chat)], lifespan=lifespan)
    server = LiveServer(host).start()
    start_server.started.append(server)
    with server.http(ALICE) as http:
        assert http.get("/").text == "host app"
        assert http.get("/chat/healthz").json() == {"status": "ok"}
        assert http.get("/chat/openapi.json").json()["servers"] == [{"url": "/chat"}]
        assert http.get("/api/sessions").status_code == 404
    with server.ws(ALICE, path="/chat/ws/chat/") as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "mounted"}))
        assert recv_json(ws) == {"message": "Echo: mounted", "session_id": session_id}
    with server.http(ALICE) as http:
        messages = http.get(f"/chat/api/sessions/{session_id}/messages").json()["messages"]
    assert [m["content"] for m in messages] == ["mounted", "Echo: mounted"]


def test_uvicorn_factory(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env.update(
        CHATBOT_JWT_SECRET=SECRET,
        CHATBOT_DATABASE_URL=f"sqlite:///{tmp_path / 'f.db'}",
    )
    command = [sys.executable, "-m", "uvicorn", "--factory", "chatbot.app:create_app",
               "--port", str(port)]  # fmt: skip
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:

        def answer() -> list[httpx.Response]:
            try:
                return [
                    httpx.get(
                        f"http://127.0.0.1:{port}/api/sessions",
                        headers={"Authorization": f"Bearer {ALICE}"},
                    )
                ]
            except httpx.TransportError:
                assert process.poll() is None, log.read_text()
                return []

        [response] = wait_for(answer, "uvicorn to serve the app", 20)
        assert response.status_code == 200
        assert response.json() == {"sessions": [], "next_cursor": None}
    finally:
        process.terminate()
        process.wait(timeout=15)
    assert (tmp_path / "f.db").is_file()


def _http_routes(app: Starlette) -> set[tuple[str, str]]:
    real: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            continue
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                real.add((route.path, method.lower()))
    return real


def test_openapi_describes_exactly_the_real_routes(server: LiveServer) -> None:
    # The HTTP API, without the chat page: the page's routes serve a browser, not clients.
    settings = replace(ServerFactory(Path("/nonexistent"), []).settings(), web_ui=False)
    real = _http_routes(create_app(settings))
    described = {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert described == real
    with server.http() as http:
        served = http.get("/openapi.json").json()
    assert served["openapi"].startswith("3.")
    assert set(served["paths"]) == {path for path, _ in real}
    # The page adds its own routes and nothing else.
    with_page = _http_routes(create_app(replace(settings, web_ui=True)))
    assert with_page - real == {
        ("/", "get"),
        ("/config.json", "get"),
        ("/static/{version}/{path:path}", "get"),
        ("/s/{share_id}", "get"),
    }


def test_openapi_document_is_valid() -> None:
    validate(document())


def test_missing_lifespan_is_a_clear_error(start_server: ServerFactory) -> None:
    chat = create_app(start_server.settings())
    host = Starlette(routes=[Mount("/chat", app=chat)])
    server = LiveServer(host).start()
    start_server.started.append(server)
    with server.http(ALICE) as http:
        response = http.get("/chat/api/sessions")
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
