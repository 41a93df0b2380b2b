"""Signing in to the chat page through a real OpenID provider on loopback, in Chromium: the
code flow with PKCE as a public client, chatting as the provider's subject, renewal before
expiry, the sign-in again when a token cannot be renewed, and signing out."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from tests.browser import screenshot, send_message, wait_for_replies
from tests.conftest import LiveServer, ServerFactory, bearer
from tests.oidc_provider import QUIET_PROVIDER, Provider, run_provider

pytestmark = [pytest.mark.e2e, QUIET_PROVIDER]
pytest_plugins = ["tests.browser"]

CLIENT_ID = "chat-page"
TOKENS = "chatbot.oidc.tokens"  # where oidc.js keeps the tokens in sessionStorage


@pytest.fixture
def start_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Provider]]:
    """Start providers with ``start_provider(**run_provider_options)``; all stop at teardown."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # authlib's switch for plain HTTP
    with contextlib.ExitStack() as stack:
        yield lambda **options: stack.enter_context(run_provider(**options))


def start_chat(
    start_server: ServerFactory, provider: Provider, kind: str = "id", **overrides: Any
) -> LiveServer:
    """A chat server whose page signs in with ``provider``, and which the provider lets
    read its answers (CORS)."""
    server = start_server(
        jwt_secret=None,
        jwt_algorithms=("RS256",),
        oidc_issuer=provider.url,
        oidc_client_id=CLIENT_ID,
        oidc_token=kind,
        **overrides,
    )
    provider.allow_origin(server.url)
    return server


def offline(context: BrowserContext) -> None:
    """The provider's pages link a stylesheet on a CDN; nothing may leave the machine."""
    context.route(
        re.compile(r"^https?://(?!127\.0\.0\.1[:/]).*"),
        lambda route: route.fulfill(status=200, content_type="text/css", body=""),
    )


def sign_in(page: Page, server: LiveServer, provider: Provider, sub: str) -> None:
    """Open the chat page, sign in at the provider as ``sub``, and come back signed in."""
    offline(page.context)
    page.goto(server.url + "/")
    host = provider.url.removeprefix("http://")
    page.get_by_role("button", name=f"Sign in with {host}").click()
    expect(page).to_have_url(re.compile(re.escape(provider.url + "/oauth2/authorize?")))
    page.get_by_placeholder("sub").fill(sub)
    page.get_by_role("button", name="Authorize").click()
    expect(page.get_by_role("textbox", name="Message")).to_be_editable()
    expect(page.get_by_text(f"Signed in as {sub}")).to_be_visible()


def stored_tokens(page: Page) -> dict[str, Any] | None:
    raw = page.evaluate("key => sessionStorage.getItem(key)", TOKENS)
    return None if raw is None else dict(json.loads(raw))


def test_sign_in_chat_and_sign_out(
    start_server: ServerFactory, start_provider: Callable[..., Provider], page: Page
) -> None:
    provider = start_provider()
    server = start_chat(start_server, provider)
    sign_in(page, server, provider, "alice")
    # Back on the page itself: no code or state left in the address bar.
    assert page.url == server.url + "/"
    # The provider was asked as a public client with PKCE: its token endpoint checks the
    # verifier (tests/test_oidc.py shows a wrong one refused), and no secret was sent.
    assert provider.count("/oauth2/token") == 1

    send_message(page, "Hello through OpenID Connect")
    wait_for_replies(page, 1)
    expect(page.get_by_role("log")).to_contain_text("Echo: Hello through OpenID Connect")
    screenshot(page, "oidc-signed-in")

    # The session is the provider's subject's: over HTTP with alice's token from the same
    # provider, and not bob's.
    with httpx.Client(base_url=server.url, timeout=10) as http:
        alice = provider.sign_in("alice", client_id=CLIENT_ID)["id_token"]
        sessions = http.get("/api/sessions", headers=bearer(alice)).json()["sessions"]
        assert len(sessions) == 1
        messages = http.get(
            f"/api/sessions/{sessions[0]['session_id']}/messages", headers=bearer(alice)
        ).json()["messages"]
        assert [m["content"] for m in messages] == [
            "Hello through OpenID Connect",
            "Echo: Hello through OpenID Connect",
        ]
        bob = provider.sign_in("bob", client_id=CLIENT_ID)["id_token"]
        assert http.get("/api/sessions", headers=bearer(bob)).json()["sessions"] == []

    # Sign out: the tokens are gone, the provider ends its session and sends the browser
    # back to the page, which asks for a sign-in.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(re.escape(provider.url + "/oauth2/end_session?")))
    assert "id_token_hint=" in page.url
    page.get_by_role("button", name="End session").click()
    expect(page.get_by_role("button", name=re.compile("^Sign in with "))).to_be_visible()
    assert page.url == server.url + "/"
    assert stored_tokens(page) is None
    expect(page.get_by_role("textbox", name="Message")).to_be_hidden()


def test_the_access_token_is_renewed_before_it_expires(
    start_server: ServerFactory, start_provider: Callable[..., Provider], page: Page
) -> None:
    """Access tokens that live 8 s: the page renews them with the refresh token about 2 s
    before they expire, and keeps chatting past the first token's end."""
    lifetime = 8
    provider = start_provider(
        access_token_audience="chat-api", token_lifetime=timedelta(seconds=lifetime)
    )
    server = start_chat(start_server, provider, "access", jwt_audience="chat-api", jwt_leeway=0)
    sign_in(page, server, provider, "carol")
    first = stored_tokens(page)
    assert first is not None and first["kind"] == "access"
    send_message(page, "before")
    wait_for_replies(page, 1)

    # Renewed: a new access token, from a refresh at the token endpoint.
    page.wait_for_function(
        "([key, old]) => JSON.parse(sessionStorage.getItem(key) || 'null')?.access_token !== old",
        arg=[TOKENS, first["access_token"]],
        timeout=lifetime * 1000,
    )
    assert provider.count("/oauth2/token") == 2
    # Past the first token's expiry (the server closed its socket then), the page still
    # chats, on the renewed token, without asking to sign in.
    page.wait_for_function(
        "exp => Date.now() > exp + 1000", arg=first["expires_at"], timeout=lifetime * 1000
    )
    send_message(page, "after")
    wait_for_replies(page, 2)
    expect(page.get_by_role("log")).to_contain_text("Echo: after")
    expect(page.get_by_role("button", name=re.compile("^Sign in with "))).to_be_hidden()


@pytest.mark.parametrize(
    "refresh_tokens", [False, True], ids=["no-refresh-token", "no-new-id-token"]
)
def test_without_renewal_the_page_asks_to_sign_in_at_expiry(
    start_server: ServerFactory,
    start_provider: Callable[..., Provider],
    page: Page,
    refresh_tokens: bool,
) -> None:
    """ID tokens that live 4 s, from a provider that grants no refresh token, or whose
    refresh answer holds no new ID token (as this one's): signed out at expiry."""
    provider = start_provider(token_lifetime=timedelta(seconds=4), refresh_tokens=refresh_tokens)
    server = start_chat(start_server, provider, jwt_leeway=0)
    sign_in(page, server, provider, "dave")
    send_message(page, "hi")
    wait_for_replies(page, 1)
    expect(page.get_by_text("Your sign-in has expired; sign in again to go on.")).to_be_visible(
        timeout=10_000
    )
    expect(page.get_by_role("button", name=re.compile("^Sign in with "))).to_be_visible()
    assert provider.count("/oauth2/token") == (2 if refresh_tokens else 1)


def test_a_refused_sign_in_is_explained(
    start_server: ServerFactory, start_provider: Callable[..., Provider], page: Page
) -> None:
    provider = start_provider()
    server = start_chat(start_server, provider)
    offline(page.context)
    page.goto(server.url + "/")
    page.get_by_role("button", name=re.compile("^Sign in with ")).click()
    page.get_by_role("button", name="Deny").click()
    expect(
        page.get_by_text("Sign-in failed: The sign-in provider did not sign you in")
    ).to_have_text(
        "Sign-in failed: The sign-in provider did not sign you in: The resource owner or "
        "authorization server denied the request."
    )
    assert page.url == server.url + "/"
    assert provider.count("/oauth2/token") == 0


def test_a_forged_sign_in_response_is_refused(
    start_server: ServerFactory, start_provider: Callable[..., Provider], page: Page
) -> None:
    """A link that carries someone else's code (login CSRF) is not exchanged."""
    provider = start_provider()
    server = start_chat(start_server, provider)
    page.goto(server.url + "/?code=stolen-code&state=forged")
    expect(page.get_by_text("does not belong to a sign-in started in this tab")).to_be_visible()
    assert page.url == server.url + "/"
    assert provider.count("/oauth2/token") == 0
    assert stored_tokens(page) is None
