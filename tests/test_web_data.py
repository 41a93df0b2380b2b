"""The read-only page of a shared link, in Chromium and over plain HTTP (its headers and
status)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import httpx
import pytest
from playwright.sync_api import Page, expect

from chatbot.settings import Settings
from chatbot.web import Assets, content_security_policy
from tests.browser import ConsoleLog
from tests.conftest import (
    LiveServer,
    ServerFactory,
    bearer,
    make_token,
    recv_json,
)

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.browser"]

ALICE = make_token("alice")
MISSING = "This shared conversation does not exist or was revoked."


def api(server: LiveServer) -> httpx.Client:
    """The HTTP API as Alice."""
    return httpx.Client(base_url=server.url, headers=bearer(ALICE), timeout=10)


def seed(server: LiveServer, title: str | None, messages: Sequence[str] = ()) -> str:
    """A session of Alice's named ``title``, holding ``messages`` and their echoes."""
    with api(server) as http:
        response = http.post("/api/sessions", json={"title": title})
        assert response.status_code == 201, response.text
        session_id: str = response.json()["session_id"]
    if messages:
        with server.ws(ALICE, session_id=session_id) as ws:
            for text in messages:
                ws.send(json.dumps({"message": text}))
                assert recv_json(ws)["message"] == f"Echo: {text}"
    return session_id


def share_of(server: LiveServer, messages: Sequence[str]) -> str:
    """A share of a new session holding ``messages``; its id."""
    session_id = seed(server, "Shared", messages)
    with api(server) as http:
        response = http.post(f"/api/sessions/{session_id}/shares")
    assert response.status_code == 201, response.text
    share_id: str = response.json()["share_id"]
    return share_id


# The shared page ----------------------------------------------------------------------------


def test_the_share_page_shows_the_conversation_read_only(server: LiveServer, page: Page) -> None:
    share_id = share_of(server, ["**not bold** here", "a list:\n\n- one\n- two"])
    page.goto(f"{server.url}/s/{share_id}")
    expect(page).to_have_title("Shared · Shared chat")
    expect(page.get_by_role("heading", level=1)).to_have_text("Shared")
    conversation = page.get_by_role("region", name="Conversation")
    expect(conversation.locator("article.message .message-role")).to_have_text(
        ["You", "Assistant", "You", "Assistant"]
    )
    # The user's words as typed; the replies as Markdown.
    expect(conversation.locator("article.message.user .message-body")).to_have_text(
        ["**not bold** here", "a list:\n\n- one\n- two"]
    )
    expect(conversation.locator("article.message.assistant strong")).to_have_text("not bold")
    expect(conversation.locator("article.message.assistant li")).to_have_text(["one", "two"])
    expect(page.locator("#share-meta")).to_have_text(re.compile(r"^Shared .+ · 4 messages$"))
    assert page.get_by_role("textbox").count() == 0
    assert page.get_by_role("navigation").count() == 0


def test_an_unknown_share_shows_that_it_does_not_exist(
    server: LiveServer, page: Page, console: ConsoleLog
) -> None:
    console.allow(r"status of 404")
    response = page.goto(server.url + "/s/no-such-share-at-all")
    assert response is not None and response.status == 404
    expect(page.get_by_role("alert")).to_have_text(MISSING)


# The shared page over HTTP ------------------------------------------------------------------


def test_the_share_page_needs_no_token_and_holds_no_data(server: LiveServer) -> None:
    share_id = share_of(server, ["a secret recipe"])
    response = httpx.get(f"{server.url}/s/{share_id}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == content_security_policy(Settings())
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-robots-tag"] == "noindex"
    html = response.text
    # The same page for every share: the messages come from api/shares/<id>, by script.
    assert share_id not in html and "secret recipe" not in html
    assert response.content == Assets.load().share_html
    assert "config.json" not in html and "app.js" not in html
    assert "<script>" not in html and "style=" not in html
    version = Assets.load().version
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(u.startswith(f"../static/{version}/") for u in urls), urls
    for url in urls:
        asset = httpx.get(f"{server.url}/s/{url}")
        assert asset.status_code == 200, url


@pytest.mark.parametrize("share_id", ["unknown", "x" * 65])
def test_the_page_of_an_unknown_share_is_404(server: LiveServer, share_id: str) -> None:
    response = httpx.get(f"{server.url}/s/{share_id}")
    assert response.status_code == 404
    assert response.content == Assets.load().share_html
    assert response.headers["cache-control"] == "no-store"


def test_the_page_of_a_revoked_share_is_404(server: LiveServer) -> None:
    share_id = share_of(server, ["soon gone"])
    assert httpx.get(f"{server.url}/s/{share_id}").status_code == 200
    with api(server) as http:
        sessions = http.get("/api/sessions").json()["sessions"]
        response = http.delete(f"/api/sessions/{sessions[0]['session_id']}/shares/{share_id}")
        assert response.status_code == 204
    assert httpx.get(f"{server.url}/s/{share_id}").status_code == 404


def test_no_share_page_without_the_web_ui(start_server: ServerFactory) -> None:
    server = start_server(web_ui=False)
    share_id = share_of(server, ["api only"])
    assert httpx.get(f"{server.url}/s/{share_id}").status_code == 404
    assert httpx.get(f"{server.url}/api/shares/{share_id}").status_code == 200
