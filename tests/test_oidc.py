"""OpenID Connect: tokens of a real provider on loopback, verified with the keys its
discovery document names, over HTTP and on the chat socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import chatbot.oidc
from chatbot.errors import ConfigError
from chatbot.settings import Settings
from tests.conftest import LiveServer, ServerFactory, recv_json, wait_for
from tests.oidc_provider import QUIET_PROVIDER, Provider, run_provider
from tests.test_cli import free_port
from tests.test_identity_providers import assert_refused, http_status, rsa_key, sign

pytestmark = QUIET_PROVIDER

CLIENT_ID = "chat-page"
DISCOVERY = "/.well-known/openid-configuration"


@pytest.fixture
def start_provider(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Provider]]:
    """Start providers with ``start_provider(**run_provider_options)``; all stop at teardown."""
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # authlib's switch for plain HTTP
    with contextlib.ExitStack() as stack:
        yield lambda **options: stack.enter_context(run_provider(**options))


@pytest.fixture
def provider(start_provider: Callable[..., Provider]) -> Provider:
    return start_provider()


def start_oidc(start_server: ServerFactory, issuer: str, **overrides: Any) -> LiveServer:
    """A server that takes the chat page's OIDC tokens: ID tokens unless told otherwise."""
    fields: dict[str, Any] = {
        "jwt_secret": None,
        "jwt_algorithms": ("RS256",),
        "oidc_issuer": issuer,
        "oidc_client_id": CLIENT_ID,
        "oidc_token": "id",
        **overrides,
    }
    return start_server(**fields)


def chat(server: LiveServer, token: str, text: str) -> str:
    """Open a chat as the token's user, send ``text``, see the reply; the new session's id."""
    with server.ws(token) as ws:
        session_id = str(recv_json(ws)["session_id"])
        ws.send(f'{{"message": "{text}"}}')
        assert recv_json(ws) == {"message": f"Echo: {text}", "session_id": session_id}
    return session_id


# -- tokens from the provider --------------------------------------------------------------


def test_an_id_token_is_accepted_over_http_and_the_socket(
    start_server: ServerFactory, provider: Provider
) -> None:
    server = start_oidc(start_server, provider.url)
    alice = provider.sign_in("alice", client_id=CLIENT_ID)["id_token"]
    session_id = chat(server, alice, "Hello AI!")
    with server.http(alice) as http:
        sessions = http.get("/api/sessions").json()["sessions"]
        assert [s["session_id"] for s in sessions] == [session_id]
        messages = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", "Hello AI!"),
            ("assistant", "Echo: Hello AI!"),
        ]
    # The session belongs to the provider's subject: another of its users does not see it.
    bob = provider.sign_in("bob", client_id=CLIENT_ID)["id_token"]
    with server.http(bob) as http:
        assert http.get("/api/sessions").json()["sessions"] == []
        assert http.get(f"/api/sessions/{session_id}").status_code == 404
    # The keys were found once: one discovery request and one JWKS request for all of this.
    assert provider.count(DISCOVERY) == 1
    assert provider.count("/jwks") == 1


def test_an_access_token_is_accepted_with_the_configured_audience(
    start_server: ServerFactory, start_provider: Callable[..., Provider]
) -> None:
    provider = start_provider(access_token_audience="chat-api")
    server = start_oidc(start_server, provider.url, oidc_token="access", jwt_audience="chat-api")
    tokens = provider.sign_in("alice", client_id=CLIENT_ID)
    chat(server, tokens["access_token"], "Hi")
    # The ID token's audience is the client, not the API: not a bearer for this server.
    assert_refused(server, tokens["id_token"])


def test_an_access_token_for_another_api_is_refused(
    start_server: ServerFactory, start_provider: Callable[..., Provider]
) -> None:
    provider = start_provider(access_token_audience="billing-api")
    server = start_oidc(start_server, provider.url, oidc_token="access", jwt_audience="chat-api")
    assert_refused(server, provider.sign_in("alice", client_id=CLIENT_ID)["access_token"])


def test_an_id_token_issued_to_another_client_is_refused(
    start_server: ServerFactory, provider: Provider
) -> None:
    server = start_oidc(start_server, provider.url)
    assert_refused(server, provider.sign_in("alice", client_id="another-app")["id_token"])
    assert http_status(server, provider.sign_in("alice", client_id=CLIENT_ID)["id_token"]) == 200


def test_a_token_of_another_issuer_is_refused(
    start_server: ServerFactory, start_provider: Callable[..., Provider]
) -> None:
    provider = start_provider()
    other = start_provider()
    server = start_oidc(start_server, provider.url)
    assert http_status(server, provider.sign_in("alice")["id_token"]) == 200
    # Signed with the right key, but issued under another name of the same provider.
    port = provider.url.rsplit(":", 1)[1]
    renamed = provider.sign_in("alice", host=f"localhost:{port}")["id_token"]
    assert_refused(server, renamed)
    # Another provider: its own issuer and its own key.
    assert_refused(server, other.sign_in("alice")["id_token"])


def test_an_expired_id_token_is_refused(
    start_server: ServerFactory, start_provider: Callable[..., Provider]
) -> None:
    provider = start_provider(token_lifetime=timedelta(seconds=1))
    server = start_oidc(start_server, provider.url, jwt_leeway=0)
    token = provider.sign_in("alice")["id_token"]
    wait_for(lambda: http_status(server, token) == 401, "the refusal", 15)
    assert_refused(server, token, "token expired")


def test_pkce_is_required_by_the_provider(provider: Provider) -> None:
    """The provider the browser test relies on really checks the PKCE verifier."""
    with pytest.raises(AssertionError, match="Code challenge failed"):
        provider.sign_in("alice", verifier="x" * 50)


# -- discovery ------------------------------------------------------------------------------


def test_provider_down_at_start_then_up(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The server starts without the provider, refuses tokens, and takes them once it is up."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    with caplog.at_level(logging.WARNING, logger="chatbot.oidc"):
        # Nothing listens at the issuer: a start that waited for it would never end.
        server = start_oidc(start_server, issuer, jwt_jwks_refresh_seconds=1)
        with server.http() as http:
            assert http.get("/healthz").status_code == 200
        # What the operator reads about it.
        wait_for(lambda: "discovery document" in caplog.text, "the warning about the provider")
    [first, *_] = [r.getMessage() for r in caplog.records if r.name == "chatbot.oidc"]
    assert first.startswith(
        f"cannot read the OpenID Connect discovery document of {issuer}: cannot reach the "
        "discovery URL: "
    )
    assert first.endswith("; tokens are refused until it can be read")
    forged = sign(rsa_key(), iss=issuer, aud=CLIENT_ID)
    assert_refused(server, forged)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
        with run_provider(port) as provider:
            token = provider.sign_in("alice")["id_token"]
            wait_for(lambda: http_status(server, token) == 200, "the token to be accepted", 15)
            chat(server, token, "back")
            assert_refused(server, forged)


def test_a_discovery_document_for_another_issuer_is_refused(
    start_server: ServerFactory, provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    # The provider calls itself http://127.0.0.1:PORT, without the trailing slash.
    issuer = provider.url + "/"
    with caplog.at_level(logging.WARNING, logger="chatbot.oidc"):
        server = start_oidc(start_server, issuer)
        token = provider.sign_in("alice")["id_token"]
        assert http_status(server, token) == 401
    assert provider.count("/jwks") == 0  # its keys are never used
    assert (
        f"cannot read the OpenID Connect discovery document of {issuer}: the discovery document "
        f"names the issuer {provider.url!r}, not {issuer!r}; set CHATBOT_OIDC_ISSUER"
    ) in caplog.text


def test_discovery_starts_with_the_server(
    start_server: ServerFactory, provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="chatbot.oidc"):
        start_oidc(start_server, provider.url)
        wait_for(lambda: provider.count(DISCOVERY) == 1, "the discovery request", 15)
        wait_for(lambda: "tokens of" in caplog.text, "the log line", 15)
    assert (
        f"OpenID Connect: tokens of {provider.url} are verified with the keys at "
        f"{provider.url}/jwks"
    ) in caplog.text
    assert provider.count("/jwks") == 0  # the keys themselves come with the first token


class SilentProvider:
    """An issuer's address that accepts connections and reads their requests, but answers
    none of them: each stays open, unanswered, until the test ends."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.stack = stack
        self.requests: list[bytes] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def asked(self) -> bool:
        """Whether a connection waits to be taken (the kernel accepted it already)."""
        return bool(select.select([self.sock], [], [], 0)[0])

    def take(self) -> list[bytes]:
        """Take the connections made so far; the request line of each one, ever."""
        while self.asked():
            connection, _ = self.sock.accept()
            self.stack.enter_context(connection)
            connection.settimeout(10)
            # A client writes its request before it waits for the answer.
            self.requests.append(connection.recv(65536).split(b"\r\n", 1)[0])
        return self.requests


@pytest.fixture
def silent() -> Iterator[SilentProvider]:
    with contextlib.ExitStack() as stack:
        yield SilentProvider(stack)


def oidc_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "chatbot.oidc"]


DISCOVERY_REQUEST = f"GET {DISCOVERY} HTTP/1.1".encode()


def test_a_provider_that_does_not_answer_does_not_hold_up_the_start(
    silent: SilentProvider,  # set up first, stopped last: the server stops before it
    start_server: ServerFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Longer than the test: the discovery request can end only when the server stops.
    monkeypatch.setattr(chatbot.oidc, "FETCH_TIMEOUT", 600.0)
    with caplog.at_level(logging.WARNING, logger="chatbot.oidc"):
        # A start that waited for the discovery document would never end.
        server = start_oidc(start_server, silent.url)
        with server.http() as http:
            assert http.get("/healthz").status_code == 200
        wait_for(silent.asked, "the server to ask for the discovery document")
        assert silent.take() == [DISCOVERY_REQUEST]
        # Still waiting for the answer: the server has not given up on the provider.
        assert oidc_warnings(caplog) == []


def test_a_provider_that_does_not_answer_holds_up_a_request_only_until_the_timeout(
    silent: SilentProvider,  # set up first, stopped last: the server stops before it
    start_server: ServerFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(chatbot.oidc, "FETCH_TIMEOUT", 1.0)
    with caplog.at_level(logging.WARNING, logger="chatbot.oidc"):
        server = start_oidc(start_server, silent.url)
        result: list[int] = []
        token = sign(rsa_key(), iss=silent.url, aud=CLIENT_ID)
        waiting = threading.Thread(target=lambda: result.append(http_status(server, token)))
        waiting.start()
        waiting.join(timeout=30)
        # Answered while the provider holds the only request it got, unanswered: the
        # server's own timeout ended the wait.
        assert result == [401]
        assert silent.take() == [DISCOVERY_REQUEST]
        wait_for(lambda: oidc_warnings(caplog), "the warning about the provider")
    assert oidc_warnings(caplog) == [
        f"cannot read the OpenID Connect discovery document of {silent.url}: the discovery "
        "URL did not answer within 1 s; tokens are refused until it can be read"
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "the discovery document is not JSON"),
        (b"[]", "the discovery document is not a JSON object"),
        (b'{"issuer": "https://id.example.com"}', 'the discovery document has no "jwks_uri"'),
        (
            b'{"issuer": "https://id.example.com", "jwks_uri": "http://id.example.com/k"}',
            "the discovery document's jwks_uri must be an https:// URL",
        ),
        (
            b'{"issuer": "https://evil.example.com", "jwks_uri": "https://id.example.com/k"}',
            "names the issuer 'https://evil.example.com', not 'https://id.example.com'",
        ),
    ],
    ids=["not-json", "list", "no-jwks-uri", "http-jwks-uri", "other-issuer"],
)
def test_a_bad_discovery_document_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(chatbot.oidc.DiscoveryError, match=message.replace("(", r"\(")):
        chatbot.oidc.parse_discovery(body, "https://id.example.com")


def test_the_discovery_url() -> None:
    assert (
        chatbot.oidc.discovery_url("https://id.example.com/realms/chat")
        == "https://id.example.com/realms/chat/.well-known/openid-configuration"
    )
    assert (
        chatbot.oidc.discovery_url("https://tenant.auth0.com/")
        == "https://tenant.auth0.com/.well-known/openid-configuration"
    )


# -- settings -------------------------------------------------------------------------------

OIDC_ENV = {
    "CHATBOT_OIDC_ISSUER": "https://id.example.com/realms/chat",
    "CHATBOT_OIDC_CLIENT_ID": CLIENT_ID,
}


def from_env(**variables: str) -> Settings:
    return Settings.from_env({**OIDC_ENV, **variables}, env_file=None)


def test_oidc_settings_default_to_rs256_and_derive_the_claims() -> None:
    settings = from_env(CHATBOT_OIDC_TOKEN="id")
    assert settings.jwt_algorithms == ("RS256",)
    assert settings.token_issuer == "https://id.example.com/realms/chat"
    assert settings.token_audience == CLIENT_ID
    access = from_env(CHATBOT_JWT_AUDIENCE="chat-api")
    assert access.oidc_token == "access"
    assert access.token_audience == "chat-api"
    assert from_env(CHATBOT_OIDC_TOKEN="id", CHATBOT_JWT_ALGORITHMS="ES256").jwt_algorithms == (
        "ES256",
    )
    # Without OIDC nothing changes.
    plain = Settings.from_env({}, env_file=None)
    assert (plain.jwt_algorithms, plain.token_issuer, plain.token_audience) == (
        ("HS256",),
        None,
        None,
    )


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {},
            "CHATBOT_OIDC_TOKEN=access (the default) needs CHATBOT_JWT_AUDIENCE",
        ),
        (
            {"CHATBOT_OIDC_TOKEN": "id", "CHATBOT_JWT_ALGORITHMS": "HS256"},
            "an OpenID provider signs tokens with its own key, but CHATBOT_JWT_ALGORITHMS "
            "allows HMAC",
        ),
        (
            {"CHATBOT_OIDC_TOKEN": "id", "CHATBOT_JWT_ISSUER": "https://other.example.com"},
            "CHATBOT_JWT_ISSUER differs from CHATBOT_OIDC_ISSUER",
        ),
        (
            {"CHATBOT_OIDC_TOKEN": "id", "CHATBOT_OIDC_ISSUER": "http://id.example.com"},
            "CHATBOT_OIDC_ISSUER must be an https:// URL (plain http:// only for a loopback",
        ),
        (
            {"CHATBOT_OIDC_TOKEN": "id", "CHATBOT_OIDC_ISSUER": "https://id.example.com/?x=1"},
            "CHATBOT_OIDC_ISSUER is an issuer URL without query or fragment",
        ),
        (
            {"CHATBOT_OIDC_TOKEN": "id", "CHATBOT_JWT_SECRET": "s" * 40},
            "CHATBOT_JWT_SECRET serves HMAC (HS*) algorithms",
        ),
    ],
    ids=["access-without-audience", "hmac", "other-issuer", "plain-http", "query", "secret"],
)
def test_oidc_settings_that_cannot_work_are_refused(
    variables: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        from_env(**variables)
    assert message in str(raised.value)


def test_an_http_issuer_on_loopback_is_accepted() -> None:
    settings = from_env(CHATBOT_OIDC_TOKEN="id", CHATBOT_OIDC_ISSUER="http://127.0.0.1:8080")
    assert settings.oidc_issuer == "http://127.0.0.1:8080"


def test_keys_from_a_jwks_url_instead_of_discovery(
    start_server: ServerFactory, provider: Provider
) -> None:
    """For a server that reaches the provider under another address than browsers do."""
    server = start_oidc(start_server, provider.url, jwt_jwks_url=provider.url + "/jwks")
    token = provider.sign_in("alice")["id_token"]
    chat(server, token, "hi")
    assert_refused(server, provider.sign_in("alice", client_id="another-app")["id_token"])
    assert provider.count(DISCOVERY) == 0


def test_a_compressed_discovery_document_is_read() -> None:
    """Providers compress their answers when asked to, as httpx asks."""
    document = {"issuer": "", "jwks_uri": "http://127.0.0.1/jwks", "padding": "x" * 4000}

    async def discovery(request: Request) -> Response:
        return JSONResponse({**document, "issuer": str(request.base_url).rstrip("/")})

    app = Starlette(routes=[Route(DISCOVERY, discovery)])
    server = LiveServer(GZipMiddleware(app, minimum_size=0)).start()
    try:
        with httpx.Client() as http:
            sent = http.get(server.url + DISCOVERY, headers={"Accept-Encoding": "gzip"})
        assert sent.headers["content-encoding"] == "gzip"
        found = asyncio.run(chatbot.oidc.fetch_discovery(server.url, 5))
        assert found == chatbot.oidc.Discovery(server.url, "http://127.0.0.1/jwks")
    finally:
        server.stop()
