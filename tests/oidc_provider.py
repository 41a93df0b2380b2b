"""A real OpenID provider on loopback for the OIDC tests: oidc-provider-mock (authlib's
authorization server behind a sign-in form where one types the subject), served by werkzeug
in a thread.

oidc-provider-mock 0.3 lacks three things that the providers a browser app signs in with
(Keycloak, Auth0, Entra ID...) have, so they are added here, with authlib's own parts:

* public clients: the token endpoint accepts a client without a secret (``none``), with
  PKCE required and checked (authlib's ``CodeChallenge``, S256): a wrong verifier is refused;
* CORS for the origins given to :meth:`Provider.allow_origin`, as a provider's "web
  origins" setting does, so that the page can read discovery and the token endpoint;
* optionally, access tokens that are JWTs (RFC 9068) signed with the provider's key, with
  an audience, as Keycloak and Auth0 issue them for an API (the mock's are opaque).

Every request the provider receives is recorded in :attr:`Provider.requests` (paths).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import flask
import httpx
import jwt
import pytest
import werkzeug.serving
from authlib.oauth2.rfc7636 import CodeChallenge

with warnings.catch_warnings():
    # It imports authlib.jose, which authlib deprecates; nothing here uses that module.
    warnings.simplefilter("ignore", DeprecationWarning)
    import oidc_provider_mock
    from oidc_provider_mock import _app as mock_app
    from oidc_provider_mock import _storage as mock_storage

WsgiApp = Callable[..., Iterable[bytes]]

#: For the test modules that run the provider: authlib warns, while it issues ID tokens,
#: about the mock's use of an API it deprecates (warnings are errors here).
QUIET_PROVIDER = pytest.mark.filterwarnings(
    r"ignore:get_jwt_config\(self, grant\) is deprecated:DeprecationWarning"
)


@dataclasses.dataclass(kw_only=True, frozen=True)
class _PkceCode(mock_storage.AuthorizationCode):
    """An authorization code that remembers its PKCE challenge."""

    code_challenge: str | None = None
    code_challenge_method: str | None = None

    def get_code_challenge(self) -> str | None:
        return self.code_challenge

    def get_code_challenge_method(self) -> str | None:
        return self.code_challenge_method


class _PublicCodeGrant(mock_app.AuthorizationCodeGrant):  # type: ignore[misc]
    """The authorization code grant for public clients too, with PKCE required."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post"]

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        CodeChallenge(required=True)(self)

    def save_authorization_code(self, code: str, request: Any) -> None:
        super().save_authorization_code(code, request)
        store = mock_storage.storage
        saved = store.get_authorization_code(code)
        fields = {f.name: getattr(saved, f.name) for f in dataclasses.fields(saved)}
        store.store_authorization_code(
            _PkceCode(
                **fields,
                code_challenge=request.payload.data.get("code_challenge"),
                code_challenge_method=request.payload.data.get("code_challenge_method"),
            )
        )


class _PublicRefreshGrant(mock_app.RefreshTokenGrant):  # type: ignore[misc]
    """Refreshing for public clients too (the mock's refresh tokens never rotate)."""

    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post"]


def _jwt_access_tokens(audience: str, lifetime: timedelta) -> Callable[..., str]:
    """An access token generator for authlib: RFC 9068 JWTs signed with the provider's key."""

    def generate(client: Any, grant_type: str, user: Any, scope: str) -> str:
        private = flask.g.oidc_provider_mock_storage.jwk.as_dict(is_private=True)
        now = int(time.time())
        claims = {
            "iss": flask.request.host_url.rstrip("/"),
            "sub": user.sub,
            "aud": audience,
            "client_id": client.id,
            "scope": scope,
            "iat": now,
            "exp": now + int(lifetime.total_seconds()),
            "jti": secrets.token_hex(8),
        }
        key = jwt.PyJWK(private, algorithm="RS256").key
        return jwt.encode(
            claims, key, algorithm="RS256", headers={"kid": private["kid"], "typ": "at+jwt"}
        )

    return generate


@dataclasses.dataclass
class Provider:
    """A running provider: its issuer URL, and what it was asked."""

    url: str
    origins: set[str]
    requests: list[str]

    def allow_origin(self, url: str) -> None:
        """Let pages at ``url``'s origin read its answers (CORS)."""
        parts = urlsplit(url)
        self.origins.add(f"{parts.scheme}://{parts.netloc}")

    def count(self, path: str) -> int:
        """How many requests reached ``path``."""
        return self.requests.count(path)

    def sign_in(
        self,
        sub: str,
        *,
        client_id: str = "chat-page",
        redirect_uri: str = "http://127.0.0.1/",
        scope: str = "openid profile email",
        host: str | None = None,
        verifier: str | None = None,
    ) -> dict[str, Any]:
        """Sign ``sub`` in as a browser would (code flow, PKCE, no client secret) and return
        the token endpoint's answer. ``host`` reaches the provider under another name, whose
        tokens then carry another issuer; ``verifier`` sends that PKCE verifier instead."""
        base = f"http://{host}" if host else self.url
        code_verifier = secrets.token_urlsafe(48)
        challenge = hashlib.sha256(code_verifier.encode()).digest()
        query = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": secrets.token_urlsafe(8),
            "nonce": secrets.token_urlsafe(8),
            "code_challenge": base64.urlsafe_b64encode(challenge).rstrip(b"=").decode(),
            "code_challenge_method": "S256",
        }
        with httpx.Client(base_url=base, timeout=10) as http:
            answer = http.post("/oauth2/authorize", params=query, data={"sub": sub})
            assert answer.status_code == 302, answer.text
            back = parse_qs(urlsplit(answer.headers["location"]).query)
            assert back["state"] == [query["state"]]
            token = http.post(
                "/oauth2/token",
                data={
                    "grant_type": "authorization_code",
                    "code": back["code"][0],
                    "redirect_uri": redirect_uri,
                    "client_id": client_id,
                    "code_verifier": verifier or code_verifier,
                },
            )
        body: dict[str, Any] = token.json()
        if token.status_code == 200:
            return body
        raise AssertionError(f"the provider refused: {token.status_code} {body}")


class _Recorder:
    """WSGI middleware: records each request's path and answers CORS for allowed origins."""

    def __init__(self, app: WsgiApp, provider: Provider) -> None:
        self.app = app
        self.provider = provider

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        self.provider.requests.append(environ.get("PATH_INFO", ""))
        origin = environ.get("HTTP_ORIGIN")
        allowed = origin is not None and origin in self.provider.origins
        cors = [("Access-Control-Allow-Origin", origin or ""), ("Vary", "Origin")]
        preflight = "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ
        if environ["REQUEST_METHOD"] == "OPTIONS" and preflight:
            headers = [
                *cors,
                ("Access-Control-Allow-Methods", "GET, POST"),
                ("Access-Control-Allow-Headers", "Content-Type, Accept"),
            ]
            start_response("204 No Content", headers if allowed else [])
            return [b""]

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, headers + cors if allowed else headers, exc_info)

        return self.app(environ, start)


class _QuietHandler(werkzeug.serving.WSGIRequestHandler):
    def log_request(self, *args: Any) -> None:
        pass  # the URLs hold codes and states; the tests read Provider.requests instead


@contextlib.contextmanager
def run_provider(
    port: int = 0,
    *,
    token_lifetime: timedelta = timedelta(hours=1),
    access_token_audience: str | None = None,
    refresh_tokens: bool = True,
) -> Iterator[Provider]:
    """Serve a provider on ``127.0.0.1:port`` (0: any free port) until the block ends.

    ``token_lifetime`` applies to ID tokens and access tokens; ``access_token_audience``
    makes the access tokens JWTs with that ``aud``.
    """
    app = flask.Flask(mock_app.__name__)  # the mock's templates live beside that module
    if access_token_audience is not None:
        app.config["OAUTH2_ACCESS_TOKEN_GENERATOR"] = _jwt_access_tokens(
            access_token_audience, token_lifetime
        )
    # The mock registers its grant classes by these names when the app is set up.
    original = (mock_app.AuthorizationCodeGrant, mock_app.RefreshTokenGrant)
    mock_app.AuthorizationCodeGrant = _PublicCodeGrant
    mock_app.RefreshTokenGrant = _PublicRefreshGrant
    try:
        oidc_provider_mock.init_app(
            app, access_token_max_age=token_lifetime, issue_refresh_token=refresh_tokens
        )
    finally:
        mock_app.AuthorizationCodeGrant, mock_app.RefreshTokenGrant = original
    app.secret_key = secrets.token_bytes(16)
    server = werkzeug.serving.make_server(
        "127.0.0.1", port, app, threaded=True, request_handler=_QuietHandler
    )
    provider = Provider(url=f"http://127.0.0.1:{server.server_port}", origins=set(), requests=[])
    app.wsgi_app = _Recorder(app.wsgi_app, provider)  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
