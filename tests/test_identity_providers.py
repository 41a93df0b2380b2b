"""Tokens of real identity providers: RS*/PS*/ES*/EdDSA with a PEM key or a JWKS URL.

The JWKS is served by a loopback Starlette app that counts the requests it receives, so the
tests see exactly when the server fetches keys: once at the first token, again only for an
unknown ``kid`` and at most once per refresh interval.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.warnings import InsecureKeyLengthWarning
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

import chatbot.jwks
from chatbot.app import create_app
from chatbot.errors import ConfigError
from chatbot.settings import Settings
from tests.conftest import (
    SECRET,
    LiveServer,
    ServerFactory,
    bearer,
    expect_close,
    recv_json,
    wait_for,
)
from tests.test_cli import cli_env, free_port, run_cli

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

# -- keys and tokens ---------------------------------------------------------------------


@cache
def rsa_key(name: str = "a", bits: int = 2048) -> rsa.RSAPrivateKey:
    """An RSA key per name, generated once per test run (``name`` only tells them apart)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@cache
def ec_key(name: str = "a", curve: str = "P-256") -> ec.EllipticCurvePrivateKey:
    curves: dict[str, ec.EllipticCurve] = {
        "P-256": ec.SECP256R1(),
        "P-384": ec.SECP384R1(),
        "P-521": ec.SECP521R1(),
    }
    return ec.generate_private_key(curves[curve])


@cache
def ed_key(name: str = "a") -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def key_for(algorithm: str, name: str = "a") -> PrivateKey:
    """A private key that signs ``algorithm``."""
    if algorithm[:2] in ("RS", "PS"):
        return rsa_key(name)
    if algorithm.startswith("ES"):
        return ec_key(name, {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[algorithm])
    return ed_key(name)


def public_pem(key: PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def public_der(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_openssh(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )


def certificate_pem(key: PrivateKey) -> str:
    """A self-signed certificate for the key, as some providers publish their keys."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "id.example.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def jwk(key: PrivateKey, kid: str | None = None, **members: Any) -> dict[str, Any]:
    """The public JWK of ``key`` as a provider publishes it, plus ``members``."""
    public = key.public_key()
    data: dict[str, Any]
    if isinstance(public, rsa.RSAPublicKey):
        data = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        data = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        data = OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        data["kid"] = kid
    data.update({"use": "sig", **members})
    return data


def sign(
    key: PrivateKey,
    algorithm: str = "RS256",
    *,
    kid: str | None = None,
    sub: Any = "alice",
    ttl: float = 3600,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A token signed with a private key, as an identity provider issues it."""
    now = int(time.time())
    payload = {"sub": sub, "iat": now, "exp": now + int(ttl), **claims}
    all_headers = dict(headers or {})
    if kid is not None:
        all_headers["kid"] = kid
    with warnings.catch_warnings():
        # Some tests sign with a 1024-bit RSA key on purpose, to see it refused.
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        return jwt.encode(payload, key, algorithm=algorithm, headers=all_headers or None)


# -- a loopback identity provider --------------------------------------------------------


class Provider:
    """A loopback HTTP server that records every request; ``/jwks`` serves ``keys``.

    Its attributes can change while it runs: ``keys`` (rotation), ``status`` (503 while
    "down"), ``answering`` (cleared, ``/jwks`` holds its answer until it is set again: a
    provider that does not answer in time, for as long as the test needs).
    """

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.status = 200
        self.answering = threading.Event()
        self.answering.set()
        self.requests: list[str] = []
        self._lock = threading.Lock()
        app = Starlette(
            routes=[
                Route("/jwks", self._jwks),
                Route("/moved", self._moved),
                Route("/{path:path}", self._anything, methods=["GET", "POST", "HEAD"]),
            ]
        )
        self.server = LiveServer(self._record(app))

    def _record(self, app: ASGIApp) -> ASGIApp:
        async def recording(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                with self._lock:
                    self.requests.append(scope["path"])
            await app(scope, receive, send)

        return recording

    async def _jwks(self, request: Request) -> Response:
        if not self.answering.is_set():
            await asyncio.to_thread(self.answering.wait)
        if self.status != 200:
            return Response("unavailable", status_code=self.status)
        return JSONResponse({"keys": list(self.keys)})

    async def _moved(self, request: Request) -> Response:
        return RedirectResponse("/jwks", status_code=302)

    async def _anything(self, request: Request) -> Response:
        return JSONResponse({"keys": list(self.keys)})

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def jwks_url(self) -> str:
        return self.server.url + "/jwks"

    def count(self, path: str = "/jwks") -> int:
        with self._lock:
            return self.requests.count(path)


@pytest.fixture
def provider() -> Iterator[Provider]:
    provider = Provider()
    provider.server.start()
    yield provider
    provider.answering.set()  # a held answer would keep the server from stopping
    provider.server.stop()


def start_jwks(
    start_server: ServerFactory, provider: Provider, algorithms: str = "RS256", **overrides: Any
) -> LiveServer:
    return start_server(
        jwt_secret=None,
        jwt_algorithms=tuple(algorithms.split(",")),
        jwt_jwks_url=provider.jwks_url,
        **overrides,
    )


def start_pem(
    start_server: ServerFactory, algorithm: str, pem: str, **overrides: Any
) -> LiveServer:
    return start_server(
        jwt_secret=None, jwt_algorithms=(algorithm,), jwt_public_key=pem, **overrides
    )


def http_status(server: LiveServer, token: str) -> int:
    with server.http(token) as http:
        return http.get("/api/sessions").status_code


def assert_accepted(server: LiveServer, token: str) -> None:
    """The token opens a chat socket, and over HTTP finds the session that socket created."""
    with server.ws(token) as ws:
        session_id = recv_json(ws)["session_id"]
    with server.http(token) as http:
        response = http.get(f"/api/sessions/{session_id}")
    assert response.status_code == 200, response.text


def accepted_once_refetched(server: LiveServer, token: str) -> None:
    """Send ``token`` until it is accepted; refused until then, and nothing else.

    A token whose key the server does not hold makes it fetch the keys again only once the
    refresh interval since its last request to the provider has passed: the moment the
    token is accepted is the moment of that fetch, seen by the provider's request count.
    """

    def accepted() -> bool:
        status = http_status(server, token)
        assert status in (200, 401), status
        return status == 200

    wait_for(accepted, "the server to fetch the keys again after the refresh interval")


def assert_refused(server: LiveServer, token: str, reason: str = "invalid token") -> None:
    with server.ws(token) as ws:
        assert expect_close(ws) == (4401, reason)
    with server.http(token) as http:
        response = http.get("/api/sessions")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def config_error(**fields: Any) -> str:
    with pytest.raises(ConfigError) as raised:
        Settings(**fields)
    return str(raised.value)


# -- a PEM public key --------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_pem_public_key(start_server: ServerFactory, algorithm: str) -> None:
    key = key_for(algorithm)
    server = start_pem(start_server, algorithm, public_pem(key))
    assert_accepted(server, sign(key, algorithm))
    assert_refused(server, sign(key_for(algorithm, "other"), algorithm))
    assert_refused(server, sign(key, algorithm, ttl=-120), "token expired")


@pytest.mark.parametrize(
    "algorithm", ["RS384", "RS512", "PS256", "PS384", "PS512", "ES384", "ES512", "EdDSA"]
)
def test_other_public_key_algorithms(start_server: ServerFactory, algorithm: str) -> None:
    key = key_for(algorithm)
    server = start_pem(start_server, algorithm, public_pem(key))
    assert http_status(server, sign(key, algorithm)) == 200
    assert http_status(server, sign(key_for(algorithm, "other"), algorithm)) == 401


def test_one_rsa_key_serves_every_allowed_rsa_algorithm_and_nothing_else(
    start_server: ServerFactory,
) -> None:
    key = rsa_key()
    server = start_server(
        jwt_secret=None, jwt_algorithms=("RS256", "PS256", "ES256"), jwt_public_key=public_pem(key)
    )
    assert http_status(server, sign(key, "RS256")) == 200
    assert http_status(server, sign(key, "PS256")) == 200
    assert http_status(server, sign(key, "RS512")) == 401  # not allowed
    assert http_status(server, sign(ec_key(), "ES256")) == 401  # allowed, but not this key


def test_a_certificate_is_accepted_as_the_public_key(start_server: ServerFactory) -> None:
    key = rsa_key()
    server = start_pem(start_server, "RS256", certificate_pem(key))
    assert http_status(server, sign(key)) == 200


def test_public_key_from_a_file_or_with_escaped_newlines(tmp_path: Path) -> None:
    pem = public_pem(rsa_key())
    path = tmp_path / "idp.pem"
    path.write_text(pem, encoding="ascii")
    env = {"CHATBOT_JWT_ALGORITHMS": "RS256"}
    from_file = Settings.from_env({**env, "CHATBOT_JWT_PUBLIC_KEY": f"@{path}"}, env_file=None)
    assert from_file.jwt_public_key == pem
    escaped = pem.replace("\n", "\\n")
    inline = Settings.from_env({**env, "CHATBOT_JWT_PUBLIC_KEY": escaped}, env_file=None)
    assert inline.jwt_public_key == pem
    assert pem not in repr(inline)
    create_app(inline)


def test_an_unreadable_key_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            {
                "CHATBOT_JWT_ALGORITHMS": "RS256",
                "CHATBOT_JWT_PUBLIC_KEY": f"@{tmp_path / 'missing.pem'}",
            },
            env_file=None,
        )
    assert str(raised.value).startswith("CHATBOT_JWT_PUBLIC_KEY names the file ")


_PRIVATE_PEM = (
    rsa_key()
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)
_GARBLED_PEM = public_pem(rsa_key()).replace("A", "*", 3)


@pytest.mark.parametrize(
    ("pem", "expected"),
    [
        pytest.param(_GARBLED_PEM, "is not a PEM public key", id="garbled"),
        pytest.param("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA", "is not a PEM", id="bare"),
        pytest.param(_PRIVATE_PEM, "holds a private key", id="private-key"),
        pytest.param(public_pem(ec_key()), "an EC key on curve secp256r1", id="wrong-type"),
        pytest.param(public_pem(rsa_key("small", 1024)), "at least 2048 bits", id="rsa-1024"),
    ],
)
def test_a_bad_public_key_is_refused_without_printing_it(pem: str, expected: str) -> None:
    message = config_error(jwt_algorithms=("RS256",), jwt_public_key=pem)
    assert message.startswith("CHATBOT_JWT_PUBLIC_KEY ")
    assert expected in message
    assert_no_key_material(pem, message)


def assert_no_key_material(pem: str, text: str) -> None:
    body = [line for line in pem.splitlines() if not line.startswith("-----")]
    assert body
    assert all(line[:16] not in text for line in body)


def test_the_cli_refuses_a_bad_public_key(tmp_path: Path) -> None:
    env = cli_env(CHATBOT_JWT_ALGORITHMS="RS256", CHATBOT_JWT_PUBLIC_KEY=_GARBLED_PEM)
    result = run_cli(tmp_path, "serve", "--port", str(free_port()), env=env, timeout=20)
    assert result.returncode == 2
    assert result.stderr.startswith("chatbot: error: CHATBOT_JWT_PUBLIC_KEY is not a PEM")
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert_no_key_material(_GARBLED_PEM, result.stdout + result.stderr)
    assert not (tmp_path / "chatbot.db").exists()


# -- HS and RS never mixed ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param(
            {"jwt_public_key": public_pem(rsa_key())},
            "serve public-key algorithms, but CHATBOT_JWT_ALGORITHMS allows HMAC",
            id="HS256+public-key",
        ),
        pytest.param(
            {"jwt_jwks_url": "https://id.example.com/jwks"},
            "serve public-key algorithms, but CHATBOT_JWT_ALGORITHMS allows HMAC",
            id="HS256+jwks",
        ),
        pytest.param(
            {"jwt_algorithms": ("RS256",), "jwt_secret": Secret(SECRET)},
            "CHATBOT_JWT_SECRET serves HMAC (HS*) algorithms",
            id="RS256+secret",
        ),
        pytest.param(
            {
                "jwt_algorithms": ("RS256",),
                "jwt_public_key": public_pem(rsa_key()),
                "jwt_jwks_url": "https://id.example.com/jwks",
            },
            "set CHATBOT_JWT_PUBLIC_KEY or CHATBOT_JWT_JWKS_URL, not both",
            id="public-key+jwks",
        ),
        pytest.param(
            {"jwt_algorithms": ("HS256", "RS256")},
            "mixes HMAC (HS*) and public-key algorithms",
            id="HS256+RS256",
        ),
    ],
)
def test_hmac_and_public_keys_are_never_mixed(fields: dict[str, Any], expected: str) -> None:
    assert expected in config_error(**fields)


def test_the_same_refusal_from_the_environment() -> None:
    with pytest.raises(ConfigError, match="allows HMAC"):
        Settings.from_env(
            {"CHATBOT_JWT_SECRET": SECRET, "CHATBOT_JWT_JWKS_URL": "https://id.example.com/k"},
            env_file=None,
        )


def test_public_key_algorithms_need_a_key(tmp_path: Path) -> None:
    settings = Settings(jwt_algorithms=("RS256",), data_dir=tmp_path)
    with pytest.raises(ConfigError) as raised:
        create_app(settings)
    message = str(raised.value)
    assert "CHATBOT_JWT_PUBLIC_KEY" in message
    assert "CHATBOT_JWT_JWKS_URL" in message
    assert not (tmp_path / "jwt-secret").exists()  # no secret is generated for RS256

    env = cli_env(CHATBOT_JWT_ALGORITHMS="RS256")
    result = run_cli(tmp_path, "serve", "--port", str(free_port()), env=env, timeout=20)
    assert result.returncode == 2
    assert "set CHATBOT_JWT_PUBLIC_KEY" in result.stderr
    assert not (tmp_path / "chatbot.db").exists()


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://id.example.com/.well-known/jwks.json", True),
        ("http://127.0.0.1:8080/jwks", True),
        ("http://localhost/jwks", True),
        ("http://[::1]:9000/jwks", True),
        ("http://id.example.com/jwks", False),
        ("http://10.0.0.5/jwks", False),
        ("ftp://id.example.com/jwks", False),
        ("file:///etc/jwks.json", False),
        ("https:///jwks", False),
        ("id.example.com/jwks", False),
    ],
)
def test_the_jwks_url_must_be_https_unless_loopback(url: str, ok: bool) -> None:
    fields: dict[str, Any] = {"jwt_algorithms": ("RS256",), "jwt_jwks_url": url}
    if ok:
        Settings(**fields)
    else:
        assert config_error(**fields).startswith("CHATBOT_JWT_JWKS_URL must be an https:// URL")


@pytest.mark.parametrize("raw", ["0", "0.5", "86401"])
def test_the_refresh_interval_is_bounded(raw: str) -> None:
    with pytest.raises(ConfigError, match="CHATBOT_JWT_JWKS_REFRESH_SECONDS must be between"):
        Settings.from_env(
            {
                "CHATBOT_JWT_ALGORITHMS": "RS256",
                "CHATBOT_JWT_JWKS_URL": "https://id.example.com/jwks",
                "CHATBOT_JWT_JWKS_REFRESH_SECONDS": raw,
            },
            env_file=None,
        )


def test_jwks_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "CHATBOT_JWT_ALGORITHMS": "RS256,ES256",
            "CHATBOT_JWT_JWKS_URL": "https://id.example.com/jwks",
            "CHATBOT_JWT_JWKS_REFRESH_SECONDS": "120",
            "CHATBOT_JWT_USER_CLAIM": "preferred_username",
        },
        env_file=None,
    )
    assert settings.jwt_jwks_url == "https://id.example.com/jwks"
    assert settings.jwt_jwks_refresh_seconds == 120
    assert settings.jwt_user_claim == "preferred_username"
    assert Settings().jwt_jwks_refresh_seconds == 60


# -- a JWKS URL --------------------------------------------------------------------------


def test_jwks_token_accepted_and_keys_cached(
    start_server: ServerFactory, provider: Provider
) -> None:
    provider.keys = [jwk(rsa_key(), "k1", alg="RS256")]
    server = start_jwks(start_server, provider)
    assert provider.count() == 0  # nothing is fetched before the first token
    assert_accepted(server, sign(rsa_key(), kid="k1"))
    assert provider.count() == 1
    assert_accepted(server, sign(rsa_key(), kid="k1", sub="bob"))
    assert http_status(server, sign(rsa_key(), kid="k1", sub="carol")) == 200
    assert provider.count() == 1  # cached


def test_jwks_key_rotation(start_server: ServerFactory, provider: Provider) -> None:
    provider.keys = [jwk(rsa_key("old"), "old")]
    server = start_jwks(start_server, provider, jwt_jwks_refresh_seconds=1)
    assert http_status(server, sign(rsa_key("old"), kid="old")) == 200
    assert provider.count() == 1

    provider.keys = [jwk(rsa_key("new"), "new")]
    new = sign(rsa_key("new"), kid="new")
    accepted_once_refetched(server, new)
    assert provider.count() == 2  # exactly one refetch, however often it was refused before
    assert_accepted(server, new)
    assert provider.count() == 2
    # The provider withdrew the old key: its tokens are refused, with no fetch this soon.
    assert http_status(server, sign(rsa_key("old"), kid="old")) == 401
    assert provider.count() == 2


def test_a_new_kid_within_the_refresh_interval_waits_for_the_interval(
    start_server: ServerFactory, provider: Provider
) -> None:
    provider.keys = [jwk(rsa_key("old"), "old")]
    server = start_jwks(start_server, provider, jwt_jwks_refresh_seconds=2)
    assert http_status(server, sign(rsa_key("old"), kid="old")) == 200
    provider.keys.append(jwk(rsa_key("new"), "new"))
    token = sign(rsa_key("new"), kid="new")
    assert http_status(server, token) == 401
    assert provider.count() == 1
    accepted_once_refetched(server, token)
    assert provider.count() == 2


@contextlib.contextmanager
def flooder(server: LiveServer, workers: int = 10) -> Iterator[Callable[[list[str]], list[int]]]:
    """A function that sends tokens from ``workers`` threads at once, each with a client of
    its own that is connected before the flood starts (so the flood itself is quick)."""
    clients = [httpx.Client(base_url=server.url, timeout=10) for _ in range(workers)]
    for client in clients:
        client.get("/healthz")

    def flood(tokens: list[str]) -> list[int]:
        def send(index: int) -> list[int]:
            client = clients[index]
            return [
                client.get("/api/sessions", headers=bearer(token)).status_code
                for token in tokens[index::workers]
            ]

        with ThreadPoolExecutor(max_workers=workers) as pool:
            return [status for part in pool.map(send, range(workers)) for status in part]

    try:
        yield flood
    finally:
        for client in clients:
            client.close()


def test_a_flood_of_unknown_kids_costs_at_most_one_fetch(
    start_server: ServerFactory, provider: Provider
) -> None:
    provider.keys = [jwk(rsa_key(), "k1")]
    server = start_jwks(start_server, provider, jwt_jwks_refresh_seconds=2)
    good = sign(rsa_key(), kid="k1")
    forged = [sign(rsa_key("attacker"), kid=secrets.token_hex(8)) for _ in range(50)]
    with flooder(server) as flood:
        assert http_status(server, good) == 200
        assert provider.count() == 1
        # Within the refresh interval of that fetch: no fetch at all.
        assert flood(forged) == [401] * 50
        assert provider.count() == 1

        def flood_until_fetched() -> bool:
            assert flood(forged) == [401] * 50
            return provider.count() > 1

        # Flood after flood, across the end of the interval: one fetch, and no more.
        wait_for(flood_until_fetched, "a flood past the refresh interval to cause a fetch")
        assert provider.count() == 2
        assert flood(forged) == [401] * 50
        assert provider.count() == 2
    assert http_status(server, good) == 200
    assert provider.count() == 2


def test_a_flood_before_any_token_costs_one_fetch(
    start_server: ServerFactory, provider: Provider
) -> None:
    provider.keys = [jwk(rsa_key(), "k1")]
    server = start_jwks(start_server, provider)
    forged = [sign(rsa_key(), kid=secrets.token_hex(8)) for _ in range(50)]
    with flooder(server) as flood:
        assert flood(forged) == [401] * 50
    assert provider.count() == 1
    assert http_status(server, sign(rsa_key(), kid="k1")) == 200
    assert provider.count() == 1


def test_only_keys_that_fit_the_allowed_algorithms_are_used(
    start_server: ServerFactory, provider: Provider
) -> None:
    secret = b"s" * 32
    provider.keys = [
        jwk(rsa_key(), "good", alg="RS256"),
        {"kty": "oct", "kid": "oct", "k": base64.urlsafe_b64encode(secret).decode().rstrip("=")},
        jwk(rsa_key("b"), "rs512", alg="RS512"),
        jwk(ec_key(), "ec"),
        jwk(rsa_key("c"), "enc", alg="RS256", use="enc"),
        jwk(rsa_key("d"), "no-verify", key_ops=["encrypt"]),
        jwk(rsa_key("small", 1024), "small"),
        {"kty": "RSA", "kid": "broken", "n": "AQAB", "e": "!"},
    ]
    server = start_jwks(start_server, provider)
    assert http_status(server, sign(rsa_key(), kid="good")) == 200
    refused = [
        jwt.encode({"sub": "a", "exp": time.time() + 60}, secret, "HS256", {"kid": "oct"}),
        sign(rsa_key("b"), "RS256", kid="rs512"),
        sign(ec_key(), "ES256", kid="ec"),
        sign(rsa_key("c"), kid="enc"),
        sign(rsa_key("d"), kid="no-verify"),
        sign(rsa_key("small", 1024), kid="small"),
    ]
    for token in refused:
        assert http_status(server, token) == 401
    assert provider.count() == 1


def test_rsa_and_ec_keys_from_one_jwks(start_server: ServerFactory, provider: Provider) -> None:
    provider.keys = [jwk(rsa_key(), "r"), jwk(ec_key(), "e"), jwk(ed_key(), "ed")]
    server = start_jwks(start_server, provider, "RS256,ES256,EdDSA")
    assert http_status(server, sign(rsa_key(), "RS256", kid="r")) == 200
    assert http_status(server, sign(ec_key(), "ES256", kid="e")) == 200
    assert http_status(server, sign(ed_key(), "EdDSA", kid="ed")) == 200
    # A kid names one key: another key's kid does not verify, even with an allowed alg.
    assert http_status(server, sign(ec_key(), "ES256", kid="r")) == 401
    assert provider.count() == 1


def test_a_token_without_kid(start_server: ServerFactory, provider: Provider) -> None:
    provider.keys = [jwk(rsa_key())]
    server = start_jwks(start_server, provider)
    assert http_status(server, sign(rsa_key())) == 200  # the provider's only key
    provider.keys = [jwk(rsa_key(), "a"), jwk(rsa_key("b"), "b")]
    other = start_jwks(start_server, provider)
    assert http_status(other, sign(rsa_key())) == 401  # which key? none is guessed


def test_claims_of_a_real_provider(start_server: ServerFactory, provider: Provider) -> None:
    """Auth0 sends ``aud`` as a list; Keycloak users are often named by another claim."""
    provider.keys = [jwk(rsa_key(), "k1")]
    server = start_jwks(
        start_server,
        provider,
        jwt_audience="https://chat.example.com/api",
        jwt_issuer="https://tenant.eu.auth0.com/",
        jwt_user_claim="preferred_username",
    )
    claims: dict[str, Any] = {
        "aud": ["https://chat.example.com/api", "https://tenant.eu.auth0.com/userinfo"],
        "iss": "https://tenant.eu.auth0.com/",
        "preferred_username": "alice",
    }
    token = sign(rsa_key(), kid="k1", sub="auth0|6543", **claims)
    with server.ws(token) as ws:
        session_id = recv_json(ws)["session_id"]
    other_sub = sign(rsa_key(), kid="k1", sub="auth0|other", **claims)
    with server.http(other_sub) as http:
        assert http.get(f"/api/sessions/{session_id}").status_code == 200
    wrong_iss = {**claims, "iss": "https://tenant.eu.auth0.com"}  # no trailing slash
    assert http_status(server, sign(rsa_key(), kid="k1", **wrong_iss)) == 401


def test_jwks_down_at_start_serves_401_until_it_answers(
    start_server: ServerFactory, provider: Provider
) -> None:
    """The server starts without the provider; tokens are refused until it answers."""
    provider.keys = [jwk(rsa_key(), "k1")]
    provider.status = 503
    server = start_jwks(start_server, provider, jwt_jwks_refresh_seconds=1)
    token = sign(rsa_key(), kid="k1")
    assert_refused(server, token)
    assert provider.count() == 1  # the socket's attempt; HTTP came within the interval
    provider.status = 200
    accepted_once_refetched(server, token)
    assert provider.count() == 2
    assert_accepted(server, token)
    assert provider.count() == 2


def test_jwks_unreachable_at_start(start_server: ServerFactory) -> None:
    port = free_port()  # nothing listens there
    server = start_server(
        jwt_secret=None,
        jwt_algorithms=("RS256",),
        jwt_jwks_url=f"http://127.0.0.1:{port}/jwks",
    )
    assert_refused(server, sign(rsa_key(), kid="k1"))
    with server.http() as http:
        assert http.get("/healthz").status_code == 200


def test_a_slow_jwks_does_not_block_the_server(
    start_server: ServerFactory,
    provider: Provider,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(chatbot.jwks, "FETCH_TIMEOUT", 0.5)
    provider.keys = [jwk(rsa_key(), "k1")]
    provider.answering.clear()  # the provider holds its answer until the end of the test
    server = start_jwks(start_server, provider)
    result: list[int] = []
    waiting = threading.Thread(
        target=lambda: result.append(http_status(server, sign(rsa_key(), kid="k1")))
    )
    waiting.start()
    wait_for(lambda: provider.count() == 1, "the server to ask the provider for its keys")
    with server.http() as http:  # answered while the fetch is in flight
        assert http.get("/healthz").status_code == 200
    waiting.join(timeout=10)
    # The provider has not answered yet: the fetch's timeout, not the provider, ended it.
    assert not provider.answering.is_set()
    assert result == [401]
    assert [r.getMessage() for r in caplog.records if r.name == "chatbot.jwks"] == [
        f"cannot refresh the keys from {provider.jwks_url}: cannot reach the JWKS URL: timed out"
    ]


def test_a_jwks_redirect_is_not_followed(start_server: ServerFactory, provider: Provider) -> None:
    provider.keys = [jwk(rsa_key(), "k1")]
    server = start_server(
        jwt_secret=None, jwt_algorithms=("RS256",), jwt_jwks_url=provider.url + "/moved"
    )
    assert http_status(server, sign(rsa_key(), kid="k1")) == 401
    assert provider.requests == ["/moved"]


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"keys": {}}', b'{"keys": []}', b"[" * 100_000],
    ids=["not-json", "list", "keys-object", "no-keys", "nested"],
)
def test_a_broken_jwks_is_refused(body: bytes) -> None:
    with pytest.raises(chatbot.jwks.JwksError):
        chatbot.jwks.parse_jwks(body, ["RS256"])


def test_the_jwks_document_is_fetched_as_json(provider: Provider) -> None:
    provider.keys = [jwk(rsa_key(), "k1"), jwk(ec_key(), "e1")]
    keys = chatbot.jwks.fetch_jwks(provider.jwks_url, ["RS256"], timeout=5)
    assert [k.kid for k in keys] == ["k1"]
    assert provider.count() == 1
