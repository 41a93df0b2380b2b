"""Known attacks on JWTs (RFC 8725, the OWASP JWT cheat sheet), each against a real server.

Every forged, tampered, malformed or out-of-policy token is refused the same way on both
transports: the chat socket is accepted and closed with 4401 and a reason of exactly
``invalid token``, ``token expired`` or ``missing token``; HTTP answers 401 with
``WWW-Authenticate: Bearer error="invalid_token"``. Never a 500, never a 1011.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.datastructures import Secret
from websockets.exceptions import InvalidHandshake
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from chatbot.app import create_app
from chatbot.auth import MAX_TOKEN_BYTES
from chatbot.errors import ConfigError
from chatbot.settings import Settings
from tests.conftest import (
    SECRET,
    LiveServer,
    ServerFactory,
    bearer,
    expect_close,
    make_token,
    recv_json,
)
from tests.test_identity_providers import (
    Provider,
    certificate_pem,
    ec_key,
    jwk,
    public_der,
    public_openssh,
    public_pem,
    rsa_key,
    sign,
)

# -- building tokens by hand ---------------------------------------------------------------

_HEADER = {"alg": "HS256", "typ": "JWT"}
_KEY = SECRET.encode()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "iat": now, "exp": now + 3600, **extra}


def hs256(header: bytes | dict[str, Any], payload: bytes | dict[str, Any], key: bytes) -> str:
    """An HS256 signature over raw header and payload bytes, whatever they hold.

    PyJWT refuses to sign with a public key as the HMAC secret (and to sign bad JSON), which
    is what an attacker does: this does it by hand.
    """
    raw_header = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw_payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64(raw_header)}.{b64(raw_payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def unsigned(alg: str, signature: str = "") -> str:
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims()).encode())}.{signature}"


def rs256(header: dict[str, Any], payload: dict[str, Any], key: rsa.RSAPrivateKey) -> str:
    """An RS256 token with any header (PyJWT refuses to sign a ``kid`` that is no string)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def flip(token: str, part: str) -> str:
    """The token with one byte changed in its decoded header, payload or signature.

    The byte is changed in a way that keeps the header and payload valid JSON (``JWT`` to
    ``JWU``, ``alice`` to ``alicd``), so that only the signature can catch it; flipping a
    base64 character instead could land in the padding bits and change nothing.
    """
    segments = token.split(".")
    if part == "header":
        raw = unb64(segments[0])
        assert b'"JWT"' in raw
        segments[0] = b64(raw.replace(b'"JWT"', b'"JWU"'))
    elif part == "payload":
        raw = unb64(segments[1])
        assert b'"alice"' in raw
        segments[1] = b64(raw.replace(b'"alice"', b'"alicd"'))
    else:
        signature = bytearray(unb64(segments[2]))
        signature[0] ^= 0x01
        segments[2] = b64(bytes(signature))
    return ".".join(segments)


# -- how a refusal looks -------------------------------------------------------------------


_SUBPROTOCOL_SAFE = re.compile(r"[A-Za-z0-9._-]+")


def assert_refused(server: LiveServer, token: str, reason: str = "invalid token") -> None:
    """Refused over the socket (header, and subprotocol where the token can be one) and HTTP."""
    with server.ws(token) as ws:
        assert expect_close(ws) == (4401, reason)
    if _SUBPROTOCOL_SAFE.fullmatch(token):
        with server.ws(subprotocols=["chatbot.v1", "bearer." + token]) as ws:
            assert expect_close(ws) == (4401, reason)
    with server.http(token) as http:
        response = http.get("/api/sessions")
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    code = reason.replace(" ", "_")
    assert response.json() == {"error": {"code": code, "message": reason}}


def assert_accepted(server: LiveServer, token: str) -> None:
    with server.ws(token) as ws:
        assert "session_id" in recv_json(ws)
    with server.http(token) as http:
        assert http.get("/api/sessions").status_code == 200


@pytest.fixture
def hs_server(start_server: ServerFactory) -> LiveServer:
    return start_server()


@pytest.fixture
def provider() -> Iterator[Provider]:
    """The identity provider's loopback JWKS endpoint, counting its requests."""
    provider = Provider()
    provider.server.start()
    yield provider
    provider.server.stop()


def test_the_reference_tokens_are_accepted(hs_server: LiveServer) -> None:
    """Every refusal below is of a token one change away from these."""
    assert_accepted(hs_server, make_token())
    assert_accepted(hs_server, hs256({"alg": "HS256", "typ": "JWT"}, claims(), SECRET.encode()))


# -- alg: none -----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
@pytest.mark.parametrize("signature", ["", "c2lnbmF0dXJl"], ids=["no-signature", "signature"])
def test_alg_none(hs_server: LiveServer, alg: str, signature: str) -> None:
    assert_refused(hs_server, unsigned(alg, signature))


def test_alg_none_with_a_valid_hmac(hs_server: LiveServer) -> None:
    """Signed correctly with the server's secret, but saying ``none``: still refused."""
    assert_refused(hs_server, hs256({"alg": "none", "typ": "JWT"}, claims(), SECRET.encode()))


# -- key confusion: HS256 signed with the server's public key ------------------------------


def _public_key_forms(key: Any) -> dict[str, bytes]:
    pem = public_pem(key).encode()
    return {
        "pem": pem,
        "pem-no-newline": pem.rstrip(b"\n"),
        "der": public_der(key),
        "openssh": public_openssh(key),
    }


@pytest.mark.parametrize("form", ["pem", "pem-no-newline", "der", "openssh"])
@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_key_confusion_hs256_signed_with_the_public_key(
    start_server: ServerFactory, algorithm: str, form: str
) -> None:
    key = rsa_key() if algorithm == "RS256" else ec_key()
    server = start_server(
        jwt_secret=None, jwt_algorithms=(algorithm,), jwt_public_key=public_pem(key)
    )
    assert_accepted(server, sign(key, algorithm))
    forged = hs256({"alg": "HS256", "typ": "JWT"}, claims(), _public_key_forms(key)[form])
    assert_refused(server, forged)


@pytest.mark.parametrize("form", ["pem", "jwk-json", "certificate"])
def test_key_confusion_with_a_jwks(
    start_server: ServerFactory, provider: Provider, form: str
) -> None:
    provider.keys = [jwk(rsa_key(), "k1")]
    server = start_server(
        jwt_secret=None, jwt_algorithms=("RS256",), jwt_jwks_url=provider.jwks_url
    )
    secret = {
        "pem": public_pem(rsa_key()).encode(),
        "jwk-json": json.dumps(jwk(rsa_key(), "k1")).encode(),
        "certificate": certificate_pem(rsa_key()).encode(),
    }[form]
    forged = hs256({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims(), secret)
    assert_refused(server, forged)
    assert provider.count() == 0  # refused on its alg, before any key was looked up


# -- algorithms that are valid but not allowed ---------------------------------------------


@pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
def test_hmac_algorithm_not_allowed(hs_server: LiveServer, algorithm: str) -> None:
    assert_refused(hs_server, make_token(algorithm=algorithm))


@pytest.mark.parametrize("algorithm", ["RS384", "RS512", "PS256"])
def test_rsa_algorithm_not_allowed(start_server: ServerFactory, algorithm: str) -> None:
    server = start_server(
        jwt_secret=None, jwt_algorithms=("RS256",), jwt_public_key=public_pem(rsa_key())
    )
    assert_refused(server, sign(rsa_key(), algorithm))


def test_algorithm_names_are_case_sensitive(hs_server: LiveServer) -> None:
    raw = hs256({"alg": "hs256", "typ": "JWT"}, claims(), SECRET.encode())
    assert_refused(hs_server, raw)


# -- tampering -----------------------------------------------------------------------------


@pytest.mark.parametrize("part", ["header", "payload", "signature"])
def test_one_flipped_byte_hs256(hs_server: LiveServer, part: str) -> None:
    assert_refused(hs_server, flip(make_token(), part))


@pytest.mark.parametrize("part", ["header", "payload", "signature"])
def test_one_flipped_byte_rs256(start_server: ServerFactory, part: str) -> None:
    server = start_server(
        jwt_secret=None, jwt_algorithms=("RS256",), jwt_public_key=public_pem(rsa_key())
    )
    token = sign(rsa_key(), headers={"typ": "JWT"})
    assert_accepted(server, token)
    assert_refused(server, flip(token, part))


def test_stripped_signature(hs_server: LiveServer) -> None:
    header, payload, _ = make_token().split(".")
    assert_refused(hs_server, f"{header}.{payload}.")
    assert_refused(hs_server, f"{header}.{payload}")


def test_signature_of_another_token(hs_server: LiveServer) -> None:
    header, payload, _ = make_token(sub="mallory").split(".")
    signature = make_token(sub="alice").split(".")[2]
    assert_refused(hs_server, f"{header}.{payload}.{signature}")


# -- time claims ---------------------------------------------------------------------------


def test_exp_in_the_past(hs_server: LiveServer) -> None:
    assert_refused(hs_server, make_token(ttl=-120), "token expired")  # beyond the 30 s leeway


def test_exp_equal_to_now(start_server: ServerFactory) -> None:
    """RFC 7519 4.1.4: a token must not be accepted "on or after" its ``exp``.

    The leeway is 0 here because the default leeway (30 s, for clocks that drift between
    the identity provider and this server) accepts a token up to 30 s past its ``exp`` by
    design; with no leeway, ``exp`` itself is the first refused second.
    """
    server = start_server(jwt_leeway=0)
    token = make_token(ttl=0)  # exp = the current whole second, already reached
    assert_refused(server, token, "token expired")


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_not_yet_valid_beyond_the_leeway(hs_server: LiveServer, claim: str) -> None:
    future = int(time.time()) + 120  # the leeway is 30 s
    extra: dict[str, Any] = {claim: future}
    assert_refused(hs_server, make_token(**extra))


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_not_yet_valid_within_the_leeway_is_accepted(hs_server: LiveServer, claim: str) -> None:
    extra: dict[str, Any] = {claim: int(time.time()) + 10}
    assert_accepted(hs_server, make_token(**extra))


@pytest.mark.parametrize("exp", ["9999999999", None, [1], {"t": 1}, True, 1e400], ids=repr)
def test_exp_that_is_not_a_number(hs_server: LiveServer, exp: Any) -> None:
    payload = claims()
    payload["exp"] = exp
    raw = json.dumps(payload).replace("Infinity", "1e400").encode()
    assert_refused(hs_server, hs256({"alg": "HS256", "typ": "JWT"}, raw, SECRET.encode()))


# -- audience and issuer -------------------------------------------------------------------

AUDIENCE = "chat-api"
ISSUER = "https://id.example.com/realms/chat"


@pytest.fixture
def aud_iss_server(start_server: ServerFactory) -> LiveServer:
    return start_server(jwt_audience=AUDIENCE, jwt_issuer=ISSUER)


def test_audience_and_issuer_accepted(aud_iss_server: LiveServer) -> None:
    assert_accepted(aud_iss_server, make_token(aud=AUDIENCE, iss=ISSUER))
    assert_accepted(aud_iss_server, make_token(aud=["other", AUDIENCE], iss=ISSUER))


@pytest.mark.parametrize(
    "aud",
    [None, "", "other", "chat-ap", "chat-api2", "CHAT-API", ["other"], [], [None], {"a": 1}, 1],
    ids=repr,
)
def test_audience_missing_or_wrong(aud_iss_server: LiveServer, aud: Any) -> None:
    payload = claims(iss=ISSUER) if aud is None else claims(aud=aud, iss=ISSUER)
    assert_refused(aud_iss_server, hs256(_HEADER, payload, _KEY))


@pytest.mark.parametrize(
    "iss",
    [
        None,
        "https://evil.example.com/realms/chat",
        "https://id.example.com/realms/cha",  # a prefix of the right one
        "https://id.example.com/realms",
        "https://id.example.com/realms/chat/",  # the right one plus a suffix
        "https://id.example.com/realms/chat.evil.com",
        "http://id.example.com/realms/chat",
        [ISSUER],
        1,
    ],
    ids=repr,
)
def test_issuer_missing_or_wrong(aud_iss_server: LiveServer, iss: Any) -> None:
    payload = claims(aud=AUDIENCE) if iss is None else claims(aud=AUDIENCE, iss=iss)
    assert_refused(aud_iss_server, hs256(_HEADER, payload, _KEY))


# -- the subject and other required claims -------------------------------------------------


@pytest.mark.parametrize(
    "sub", [42, ["alice"], None, "", {"id": "alice"}, True, "x" * 256], ids=lambda s: repr(s)[:12]
)
def test_subject_that_is_not_a_usable_string(hs_server: LiveServer, sub: Any) -> None:
    assert_refused(hs_server, make_token(sub=sub))


@pytest.mark.parametrize("claim", ["sub", "exp"])
def test_missing_required_claim(hs_server: LiveServer, claim: str) -> None:
    assert_refused(hs_server, make_token(drop=(claim,)))


def test_missing_configured_user_claim(start_server: ServerFactory) -> None:
    server = start_server(jwt_user_claim="preferred_username")
    assert_refused(server, make_token())  # a sub is not enough
    assert_refused(server, make_token(preferred_username=7))
    assert_accepted(server, make_token(preferred_username="alice"))


# -- headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "crit",
    [["x-unknown"], ["b64"], ["exp"], [], "x-unknown"],
    ids=["unknown", "b64", "exp", "empty", "not-a-list"],
)
def test_crit_header(hs_server: LiveServer, crit: Any) -> None:
    assert_refused(hs_server, make_token(headers={"crit": crit, "x-unknown": 1}))


def _attacker_headers(provider: Provider) -> dict[str, dict[str, Any]]:
    attacker = rsa_key("attacker")
    cert = certificate_pem(attacker)
    der = base64.b64encode(
        base64.b64decode("".join(line for line in cert.splitlines() if "-----" not in line))
    ).decode()
    return {
        "jku": {"jku": provider.url + "/jku.json"},
        "x5u": {"x5u": provider.url + "/x5u.pem"},
        "jwk": {"jwk": jwk(attacker)},
        "x5c": {"x5c": [der]},
        "jku+x5u": {"jku": provider.url + "/a", "x5u": provider.url + "/b"},
    }


@pytest.fixture
def attacker_server() -> Iterator[Provider]:
    """A loopback server that answers anything with the attacker's key, and counts."""
    server = Provider()
    server.keys = [jwk(rsa_key("attacker"), "attacker")]
    server.server.start()
    yield server
    server.server.stop()


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c", "jku+x5u"])
def test_key_headers_on_an_hmac_server(
    hs_server: LiveServer, attacker_server: Provider, header: str
) -> None:
    """A valid HS256 token that also names a key: refused, and the URL never fetched.

    Ignoring such headers would be safe too (no key is ever taken from a token); refusing
    them is simpler to reason about, and no identity provider sends them.
    """
    token = make_token(headers=_attacker_headers(attacker_server)[header])
    assert_refused(hs_server, token)
    assert attacker_server.requests == []


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c"])
def test_key_headers_on_a_jwks_server(
    start_server: ServerFactory, provider: Provider, attacker_server: Provider, header: str
) -> None:
    """Signed with the attacker's key, pointing at the attacker's keys: refused."""
    provider.keys = [jwk(rsa_key(), "k1")]
    server = start_server(
        jwt_secret=None, jwt_algorithms=("RS256",), jwt_jwks_url=provider.jwks_url
    )
    headers = _attacker_headers(attacker_server)[header]
    assert_refused(server, sign(rsa_key("attacker"), kid="attacker", headers=headers))
    # Even signed with the provider's own key, a token naming another key is refused.
    assert_refused(server, sign(rsa_key(), kid="k1", headers=headers))
    assert attacker_server.requests == []
    assert provider.count() == 0  # refused before any key lookup


def test_unknown_kid(start_server: ServerFactory, provider: Provider) -> None:
    provider.keys = [jwk(rsa_key(), "k1")]
    server = start_server(
        jwt_secret=None, jwt_algorithms=("RS256",), jwt_jwks_url=provider.jwks_url
    )
    assert_refused(server, sign(rsa_key("attacker"), kid="attacker"))
    assert_refused(server, sign(rsa_key(), kid="k2"))  # the right key, but not its kid
    assert_refused(server, sign(rsa_key(), kid="../../k1"))
    assert_accepted(server, sign(rsa_key(), kid="k1"))


@pytest.mark.parametrize(
    "kid", [1, ["k1"], {"k": 1}, "k" * 257], ids=["int", "list", "dict", "long"]
)
def test_kid_that_is_not_a_short_string(
    start_server: ServerFactory, provider: Provider, kid: Any
) -> None:
    provider.keys = [jwk(rsa_key(), "k1")]
    server = start_server(
        jwt_secret=None, jwt_algorithms=("RS256",), jwt_jwks_url=provider.jwks_url
    )
    assert_refused(server, rs256({"alg": "RS256", "kid": kid}, claims(), rsa_key()))
    assert provider.count() == 0


# -- size ----------------------------------------------------------------------------------


def _signed_of_length(length: int, **overrides: Any) -> str:
    """A correctly signed token of ``length`` characters (or up to 3 more)."""
    pad = 0
    while True:
        token = make_token(pad="x" * pad, **overrides)
        if len(token) >= length:
            return token
        pad += max(1, (length - len(token)) * 3 // 4)


def test_oversized_tokens_are_refused_before_decoding(hs_server: LiveServer) -> None:
    under = _signed_of_length(MAX_TOKEN_BYTES - 200)
    assert len(under) <= MAX_TOKEN_BYTES
    with hs_server.http(under) as http:
        assert http.get("/api/sessions").status_code == 200

    over = _signed_of_length(MAX_TOKEN_BYTES + 1)
    expired_over = _signed_of_length(MAX_TOKEN_BYTES + 1, ttl=-3600)
    garbage_over = "%" * (MAX_TOKEN_BYTES + 1)
    results = {}
    for name, token in {
        "garbage": "not-a-jwt",
        "valid-but-over": over,  # would be accepted if it were decoded
        "expired-and-over": expired_over,  # decoded, it would be "token expired"
        "garbage-over": garbage_over,
    }.items():
        with hs_server.http(token) as http:
            response = http.get("/api/sessions")
        results[name] = (response.status_code, response.json())
    assert len(set(map(repr, results.values()))) == 1, results
    assert results["garbage"][0] == 401


def test_oversized_authorization_header(hs_server: LiveServer) -> None:
    for size in (MAX_TOKEN_BYTES + 17, 64 * 1024):
        with hs_server.http() as http:
            response = http.get("/api/sessions", headers={"Authorization": "Bearer " + "a" * size})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert response.json()["error"]["code"] == "invalid_token"


def test_oversized_tokens_on_the_socket(hs_server: LiveServer) -> None:
    """Just under the limit, the socket is closed 4401; over it, the upgrade fails.

    The WebSocket handshake parser (before the application) refuses header lines longer
    than 8 KiB, so a token over the limit never reaches the server's own check on the
    socket, and no session is ever opened for it.
    """
    with hs_server.ws("%" * (MAX_TOKEN_BYTES - 100)) as ws:
        assert expect_close(ws) == (4401, "invalid token")
    over = _signed_of_length(MAX_TOKEN_BYTES + 1)
    url = hs_server.ws_url + "/ws/chat/"
    with pytest.raises((InvalidHandshake, TimeoutError, OSError)):
        connect(url, additional_headers=bearer(over), open_timeout=2)
    with pytest.raises((InvalidHandshake, TimeoutError, OSError)):
        connect(
            url,
            subprotocols=[Subprotocol("chatbot.v1"), Subprotocol("bearer." + over)],
            open_timeout=2,
        )
    with hs_server.http(over) as http:
        assert http.get("/api/sessions").status_code == 401
    with hs_server.http(make_token()) as http:
        assert http.get("/api/sessions").json()["sessions"] == []


# -- malformed tokens ----------------------------------------------------------------------


def _malformed() -> dict[str, str]:
    good = make_token()
    header, payload, signature = good.split(".")
    return {
        "one-segment": header,
        "two-segments": f"{header}.{payload}",
        "four-segments": f"{good}.{signature}",
        "five-segments": f"{good}..",
        "empty-segments": "..",
        "empty-header": f".{payload}.{signature}",
        "empty-payload": f"{header}..{signature}",
        "bad-base64-header": f"!!!{header}.{payload}.{signature}",
        "bad-base64-payload": f"{header}.{payload[:-1]}*.{signature}",
        "bad-base64-signature": f"{header}.{payload}.{signature}%%",
        "base64-padding": f"{header}=.{payload}.{signature}",
        "standard-base64": f"{header}.{payload}.{signature.replace('-', '+').replace('_', '/')}+",
        "whitespace-inside": f"{header}. {payload}.{signature}",
        "non-ascii": f"{header}.{payload}.{signature}\u00e9",
        "header-not-json": hs256(b"{alg: HS256}", claims(), _KEY),
        "header-json-list": hs256(b'["HS256"]', claims(), _KEY),
        "header-json-string": hs256(b'"HS256"', claims(), _KEY),
        "header-nested": hs256(b"[" * 5000, claims(), _KEY),
        "header-not-utf8": hs256(b'{"alg": "HS256", "x": "\xff"}', claims(), _KEY),
        "header-alg-null": hs256({"alg": None}, claims(), _KEY),
        "header-alg-list": hs256({"alg": ["HS256"]}, claims(), _KEY),
        "header-no-alg": hs256({"typ": "JWT"}, claims(), _KEY),
        "payload-not-json": hs256(_HEADER, b"sub=alice", _KEY),
        "payload-json-list": hs256(_HEADER, b'["alice"]', _KEY),
        "payload-json-null": hs256(_HEADER, b"null", _KEY),
        "payload-nested": hs256(_HEADER, b"[" * 3000, _KEY),
        "payload-huge-number": hs256(_HEADER, b'{"sub":"alice","exp":' + b"9" * 5000 + b"}", _KEY),
        "payload-nan-exp": hs256(_HEADER, b'{"sub":"alice","exp":NaN}', _KEY),
        "payload-not-utf8": hs256(_HEADER, b'{"sub":"\xff\xfe","exp":9999999999}', _KEY),
        "payload-duplicate-sub": hs256(
            _HEADER, b'{"sub":"alice","sub":["x"],"exp":9999999999}', _KEY
        ),
    }


MALFORMED = sorted(_malformed())


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_tokens(hs_server: LiveServer, case: str) -> None:
    token = _malformed()[case]
    if case == "non-ascii":
        # Neither client library sends a non-ASCII header; send its UTF-8 bytes over HTTP.
        with hs_server.http() as http:
            response = http.get(
                "/api/sessions", headers={b"Authorization": b"Bearer " + token.encode()}
            )
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_token"
        return
    assert_refused(hs_server, token)


def test_empty_bearer_is_a_missing_token(hs_server: LiveServer) -> None:
    with hs_server.http() as http:
        for value in ("Bearer", "bearer"):
            response = http.get("/api/sessions", headers={"Authorization": value})
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
    with hs_server.ws(subprotocols=["chatbot.v1", "bearer."]) as ws:
        assert expect_close(ws) == (4401, "missing token")


# -- configuration -------------------------------------------------------------------------

SHORT_SECRET = "too-short-secret-0123456789"  # 27 bytes


def test_a_short_secret_refuses_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From the environment, from the data directory, or set by hand: create_app refuses.

    ``chatbot serve`` with a short secret exits 2: see
    tests/test_cli.py::test_a_short_secret_is_refused_by_every_command.
    """
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("CHATBOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CHATBOT_JWT_SECRET", SHORT_SECRET)
    with pytest.raises(ConfigError, match="CHATBOT_JWT_SECRET is shorter than 32 bytes") as raised:
        create_app()
    assert SHORT_SECRET not in str(raised.value)

    monkeypatch.delenv("CHATBOT_JWT_SECRET")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "jwt-secret").write_text(SHORT_SECRET + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="shorter than 32 bytes"):
        create_app(Settings(data_dir=tmp_path / "data"))

    with pytest.raises(ConfigError, match="shorter than 32 bytes"):
        create_app(Settings(jwt_secret=Secret(SHORT_SECRET)))
    create_app(Settings(jwt_secret=Secret("s" * 32), data_dir=tmp_path / "data"))


@pytest.mark.parametrize(
    ("leeway", "ok"), [(0, True), (60, True), (60.5, False), (61, False), (-1, False)]
)
def test_leeway_is_at_most_60_seconds(leeway: float, ok: bool) -> None:
    env = {"CHATBOT_JWT_LEEWAY": str(leeway)}
    if ok:
        assert Settings.from_env(env, env_file=None).jwt_leeway == leeway
        return
    with pytest.raises(ConfigError, match="CHATBOT_JWT_LEEWAY must be between 0 and 60 seconds"):
        Settings.from_env(env, env_file=None)
    with pytest.raises(ConfigError, match="CHATBOT_JWT_LEEWAY"):
        Settings(jwt_leeway=leeway)


def test_no_refusal_leaks_which_check_failed(hs_server: LiveServer) -> None:
    """Whatever is wrong, the client learns one of three reasons and nothing else."""
    bodies = set()
    for token in [make_token(secret="x" * 40), unsigned("none"), make_token(drop=("sub",))]:
        with hs_server.http(token) as http:
            bodies.add(http.get("/api/sessions").text)
    assert bodies == {'{"error":{"code":"invalid_token","message":"invalid token"}}'}
