"""CORS on the HTTP API: CHATBOT_ALLOWED_ORIGINS lets front ends on other origins call it,
with a bearer token and never with cookies; without it, no CORS header is sent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from tests.browser import ConsoleLog
from tests.conftest import LiveServer, ServerFactory, make_token

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytest_plugins = ["tests.browser"]

FRONT_END = "https://chat.example.com"
FOREIGN = "https://evil.example"


def preflight(server: LiveServer, origin: str, method: str = "GET") -> dict[str, str]:
    """What a browser asks before a cross-origin request with a bearer token."""
    with server.http() as http:
        response = http.options(
            "/api/sessions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
    return {"status": str(response.status_code), **response.headers}


def test_same_origin_only_by_default(server: LiveServer) -> None:
    answer = preflight(server, FRONT_END)
    assert answer["status"] == "405"
    assert not any(name.startswith("access-control-") for name in answer)
    with server.http(make_token()) as http:
        response = http.get("/api/sessions", headers={"Origin": FRONT_END})
    assert response.status_code == 200
    assert not any(name.startswith("access-control-") for name in response.headers)


def test_a_preflight_from_an_allowed_origin_is_answered(start_server: ServerFactory) -> None:
    server = start_server(allowed_origins=(FRONT_END,))
    for method in ("GET", "POST", "PATCH", "DELETE"):
        answer = preflight(server, FRONT_END, method)
        assert answer["status"] == "200"
        assert answer["access-control-allow-origin"] == FRONT_END
        assert method in answer["access-control-allow-methods"].split(", ")
        allowed_headers = answer["access-control-allow-headers"].lower().split(", ")
        assert {"authorization", "content-type"} <= set(allowed_headers)
        assert answer["access-control-max-age"] == "600"
        assert "Origin" in answer["vary"].split(", ")
        # No cookies: the API authenticates with the Authorization header only.
        assert "access-control-allow-credentials" not in answer


def test_a_preflight_from_another_origin_is_refused(start_server: ServerFactory) -> None:
    server = start_server(allowed_origins=(FRONT_END,))
    answer = preflight(server, FOREIGN)
    assert answer["status"] == "400"
    assert "access-control-allow-origin" not in answer


def test_responses_name_the_allowed_origin(start_server: ServerFactory) -> None:
    server = start_server(allowed_origins=(FRONT_END,))
    with server.http(make_token()) as http:
        allowed = http.get("/api/sessions", headers={"Origin": FRONT_END})
        foreign = http.get("/api/sessions", headers={"Origin": FOREIGN})
    assert allowed.status_code == 200
    assert allowed.json() == {"sessions": [], "next_cursor": None}
    assert allowed.headers["access-control-allow-origin"] == FRONT_END
    assert allowed.headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in allowed.headers
    # The server answers, but without the header the browser keeps the body from the page.
    assert foreign.status_code == 200
    assert "access-control-allow-origin" not in foreign.headers


def test_errors_carry_the_cors_headers(start_server: ServerFactory) -> None:
    server = start_server(allowed_origins=(FRONT_END,), max_body_bytes=1024)
    origin = {"Origin": FRONT_END}
    with server.http() as http:
        unauthorized = http.get("/api/sessions", headers=origin)
    assert unauthorized.status_code == 401
    assert unauthorized.headers["access-control-allow-origin"] == FRONT_END
    # The page may read why it was refused.
    assert unauthorized.headers["www-authenticate"] == "Bearer"
    assert unauthorized.headers["access-control-expose-headers"] == (
        "WWW-Authenticate, X-Request-ID"
    )
    with server.http(make_token()) as http:
        too_large = http.post(
            "/api/sessions",
            content=b'{"title": "' + b"x" * 2048 + b'"}',
            headers={**origin, "Content-Type": "application/json"},
        )
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "body_too_large"
    assert too_large.headers["access-control-allow-origin"] == FRONT_END


def test_any_origin_with_a_star(start_server: ServerFactory) -> None:
    server = start_server(allowed_origins=("*",))
    answer = preflight(server, FOREIGN, "POST")
    assert answer["status"] == "200"
    assert answer["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in answer
    with server.http(make_token()) as http:
        response = http.get("/api/sessions", headers={"Origin": FOREIGN})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


def test_the_setting_matches_origins_as_browsers_write_them(start_server: ServerFactory) -> None:
    server = start_server(allowed_origins=("HTTPS://Chat.Example.com:443/",))
    with server.http(make_token()) as http:
        response = http.get("/api/sessions", headers={"Origin": FRONT_END})
    assert response.headers["access-control-allow-origin"] == FRONT_END


# -- in a browser --------------------------------------------------------------------------


@pytest.fixture
def front_end() -> Iterator[LiveServer]:
    """Another origin: a page of its own, as a front end hosted elsewhere would have."""

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(
            '<!doctype html><title>front end</title><link rel="icon" href="data:,"><p>front end</p>'
        )

    server = LiveServer(Starlette(routes=[Route("/", home)])).start()
    yield server
    server.stop()


FETCH_SESSIONS = """async ([url, token]) => {
    try {
        const response = await fetch(url, {headers: {Authorization: "Bearer " + token}});
        return {status: response.status, body: await response.json()};
    } catch (error) {
        return {error: String(error)};
    }
}"""


def test_a_page_on_an_allowed_origin_reads_the_history(
    start_server: ServerFactory, front_end: LiveServer, page: Page
) -> None:
    api = start_server(allowed_origins=(front_end.url,))
    with api.http(make_token("alice")) as http:
        created = http.post("/api/sessions", json={"title": "from afar"})
    assert created.status_code == 201
    page.goto(front_end.url + "/")
    result = page.evaluate(FETCH_SESSIONS, [api.url + "/api/sessions", make_token("alice")])
    assert result["status"] == 200
    assert [s["title"] for s in result["body"]["sessions"]] == ["from afar"]


def test_a_page_on_another_origin_is_kept_out(
    start_server: ServerFactory,
    front_end: LiveServer,
    page: Page,
    console: ConsoleLog,
) -> None:
    api = start_server()
    # Chromium reports the refusal on the console; that is the behaviour under test.
    console.allow(r"blocked by CORS policy")
    console.allow(r"Failed to load resource")
    page.goto(front_end.url + "/")
    result = page.evaluate(FETCH_SESSIONS, [api.url + "/api/sessions", make_token("alice")])
    assert result == {"error": "TypeError: Failed to fetch"}
