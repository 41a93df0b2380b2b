"""Public keys of an identity provider: one PEM key, or a JWKS URL fetched and cached.

The keys verify RS*, PS*, ES* and EdDSA tokens. A key is only ever used with the allowed
algorithms its type fits (an RSA key never verifies an ES256 token, and no public key ever
serves as an HMAC secret), so a token cannot pick how its own signature is checked.

A JWKS is fetched on the first token, then again when a token names a ``kid`` the cached
set does not hold (the provider rotated its keys) or when the set is older than
:data:`MAX_AGE`, but never more than once per refresh interval: a flood of tokens with made-up
``kid`` values costs the provider at most one request per interval. Fetches run in a worker
thread with a timeout, so the event loop never waits on the provider.
"""

from __future__ import annotations

import asyncio
import http.client
import ipaddress
import json
import logging
import ssl
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK, PyJWTError

from chatbot.errors import ConfigError

logger = logging.getLogger("chatbot.jwks")

PUBLIC_KEY_VARIABLE = "CHATBOT_JWT_PUBLIC_KEY"
JWKS_URL_VARIABLE = "CHATBOT_JWT_JWKS_URL"
#: Seconds one JWKS request may take, connecting and reading included.
FETCH_TIMEOUT = 5.0
#: A cached JWKS older than this is fetched again, so a key the provider withdrew stops
#: verifying tokens even when no token ever names an unknown ``kid``.
MAX_AGE = 3600.0
#: A JWKS larger than this is refused (real ones are a few kilobytes).
MAX_JWKS_BYTES = 512 * 1024
MIN_RSA_BITS = 2048
MAX_KID_CHARS = 256

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

_EC_CURVES: Mapping[str, type[ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1,
    "ES384": ec.SECP384R1,
    "ES512": ec.SECP521R1,
}


def fits(key: PublicKey, algorithm: str) -> bool:
    """Whether ``key`` can verify signatures made with ``algorithm``."""
    if algorithm[:2] in ("RS", "PS"):
        return isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS
    if algorithm in _EC_CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(
            key.curve, _EC_CURVES[algorithm]
        )
    if algorithm == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def describe(key: PublicKey) -> str:
    """A key's type and size, for error messages (never the key itself)."""
    if isinstance(key, rsa.RSAPublicKey):
        return f"a {key.key_size}-bit RSA key"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"an EC key on curve {key.curve.name}"
    return "an Ed25519 key" if isinstance(key, ed25519.Ed25519PublicKey) else "an Ed448 key"


# -- one PEM key ---------------------------------------------------------------------------


def read_public_key_setting(value: str) -> str:
    """The PEM text of ``CHATBOT_JWT_PUBLIC_KEY``: the value itself, or with a leading ``@``
    the contents of the file it names. A literal ``\\n`` stands for a line break, for
    environments (``.env`` files, container settings) that cannot hold multi-line values."""
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            return path.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not a text file"
            raise ConfigError(
                f"{PUBLIC_KEY_VARIABLE} names the file {str(path)!r}, which cannot be read: "
                f"{reason}"
            ) from None
    return value.replace("\\n", "\n")


def load_public_key(pem: str) -> PublicKey:
    """Parse a PEM public key (``PUBLIC KEY``, ``RSA PUBLIC KEY``) or certificate.

    The :class:`ConfigError` names the variable and never quotes the key.
    """
    if "PRIVATE KEY" in pem:
        raise ConfigError(
            f"{PUBLIC_KEY_VARIABLE} holds a private key; give the identity provider's "
            "public key (-----BEGIN PUBLIC KEY-----) and keep the private key secret"
        )
    data = pem.strip().encode("ascii", "replace")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: Any = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{PUBLIC_KEY_VARIABLE} is not a PEM public key or certificate; expected "
            "-----BEGIN PUBLIC KEY----- ... (or @/path/to/key.pem to read a file)"
        ) from None
    if not isinstance(key, PublicKey):
        raise ConfigError(
            f"{PUBLIC_KEY_VARIABLE} is a kind of key no JWT algorithm supported here uses; "
            "expected an RSA, EC (P-256, P-384, P-521) or Ed25519/Ed448 key"
        )
    return key


def public_key_algorithms(pem: str, algorithms: Iterable[str]) -> tuple[PublicKey, list[str]]:
    """The key of ``CHATBOT_JWT_PUBLIC_KEY`` and the allowed algorithms it can verify."""
    key = load_public_key(pem)
    allowed = list(algorithms)
    usable = [a for a in allowed if fits(key, a)]
    if not usable:
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
            raise ConfigError(
                f"{PUBLIC_KEY_VARIABLE} is {describe(key)}; RSA keys need at least "
                f"{MIN_RSA_BITS} bits"
            )
        raise ConfigError(
            f"{PUBLIC_KEY_VARIABLE} is {describe(key)}, which none of the allowed "
            f"algorithms ({', '.join(allowed)}) verifies; set CHATBOT_JWT_ALGORITHMS to "
            "match the identity provider (RS256 for RSA keys, ES256 for P-256 keys...)"
        )
    return key, usable


# -- a JWKS URL ----------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_jwks_url(url: str, name: str = JWKS_URL_VARIABLE) -> None:
    """Refuse a JWKS URL that anyone between the server and the provider could answer;
    ``name`` says where the URL comes from, for the error message.

    Whoever answers the JWKS request chooses which keys verify tokens, so the keys must
    come over TLS. Plain ``http://`` is accepted for a loopback address only (a sidecar
    or a test provider on the same host), where no network lies between the two.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and host and is_loopback(host):
        return
    raise ConfigError(
        f"{name} must be an https:// URL (plain http:// only for a loopback "
        "address such as 127.0.0.1): whoever answers it decides which tokens are valid"
    )


@dataclass(frozen=True)
class _Key:
    kid: str | None
    key: PublicKey
    algorithms: frozenset[str]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A JWKS must be served at its URL: a redirect could lead off TLS or off the host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class JwksError(Exception):
    """The JWKS could not be fetched or holds no usable key."""


def parse_jwks(body: bytes, algorithms: Sequence[str]) -> list[_Key]:
    """The keys of a JWKS document that can verify one of ``algorithms``.

    Skipped: keys for encryption (``use`` other than ``sig``), symmetric keys (``oct``),
    keys whose ``alg`` is not allowed or whose type fits no allowed algorithm, RSA keys
    under 2048 bits, and entries that do not parse.
    """
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise JwksError("the JWKS is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksError('the JWKS has no "keys" list')
    keys: list[_Key] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        ops = entry.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
            continue
        kid = entry.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_CHARS):
            continue
        declared = entry.get("alg")
        if declared is not None and declared not in algorithms:
            continue
        try:
            key = PyJWK(entry, algorithm=declared).key
        except (PyJWTError, ValueError, TypeError, KeyError):
            continue
        if not isinstance(key, PublicKey):
            continue  # a private key published by mistake is not used
        usable = frozenset(a for a in algorithms if fits(key, a) and declared in (None, a))
        if usable:
            keys.append(_Key(kid, key, usable))
    if not keys:
        raise JwksError("the JWKS holds no key for the allowed algorithms")
    return keys


def fetch_jwks(url: str, algorithms: Sequence[str], timeout: float) -> list[_Key]:
    """GET the JWKS (blocking: run it in a thread) and return its usable keys."""
    handlers: list[urllib.request.BaseHandler] = [
        _NoRedirects(),
        urllib.request.HTTPSHandler(context=ssl.create_default_context()),
    ]
    if is_loopback(urlsplit(url).hostname or ""):
        handlers.append(urllib.request.ProxyHandler({}))  # never send loopback via a proxy
    opener = urllib.request.build_opener(*handlers)
    # The scheme was checked by check_jwks_url: https, or http to a loopback address.
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            chunks: list[bytes] = []
            size = 0
            while chunk := response.read1(16384):
                size += len(chunk)
                if size > MAX_JWKS_BYTES:
                    raise JwksError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise JwksError(f"the JWKS took more than {timeout:g} s to arrive")
                chunks.append(chunk)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response, and with it the connection
        raise JwksError(f"the JWKS URL answered HTTP {exc.code}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise JwksError(f"cannot reach the JWKS URL: {reason or type(exc).__name__}") from None
    return parse_jwks(b"".join(chunks), algorithms)


class LoopLock:
    """One :class:`asyncio.Lock` per running event loop, made when first asked for: an app
    may be served by more than one loop in its life, and a lock belongs to one."""

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock


class JwksCache:
    """The keys of one JWKS URL, looked up by ``kid``; see the module docstring."""

    def __init__(
        self,
        url: str,
        algorithms: Sequence[str],
        *,
        refresh_interval: float = 60.0,
        timeout: float | None = None,
        max_age: float | None = None,
    ) -> None:
        check_jwks_url(url)
        self.url = url
        self._algorithms = tuple(algorithms)
        self._refresh_interval = refresh_interval
        self._timeout = timeout
        self._max_age = max_age
        self._keys: list[_Key] = []
        self._fetched_at: float | None = None  # of the keys held, monotonic
        self._attempted_at: float | None = None  # of the last request, answered or not
        self._lock = LoopLock()
        #: Requests sent to the provider so far (answered or not).
        self.fetches = 0

    def _fresh(self) -> bool:
        max_age = MAX_AGE if self._max_age is None else self._max_age
        return self._fetched_at is not None and time.monotonic() - self._fetched_at < max_age

    def _find(self, kid: str | None, algorithm: str) -> PublicKey | None:
        candidates = [k for k in self._keys if algorithm in k.algorithms]
        if kid is None:
            # A token without a kid is only accepted from a provider with a single key.
            return candidates[0].key if len(candidates) == 1 else None
        for key in candidates:
            if key.kid == kid:
                return key.key
        return None

    async def key(self, kid: str | None, algorithm: str) -> PublicKey | None:
        """The key for a token's ``kid`` and ``alg``, fetching the JWKS when allowed."""
        if self._fresh():
            found = self._find(kid, algorithm)
            if found is not None:
                return found
        async with self._lock():
            # Another task may have fetched while this one waited.
            if self._fresh():
                found = self._find(kid, algorithm)
                if found is not None:
                    return found
            now = time.monotonic()
            if self._attempted_at is None or now - self._attempted_at >= self._refresh_interval:
                self._attempted_at = now
                await self._refetch()
            # Keys older than MAX_AGE still serve while the provider cannot be reached.
            return self._find(kid, algorithm)

    async def _refetch(self) -> None:
        timeout = FETCH_TIMEOUT if self._timeout is None else self._timeout
        self.fetches += 1
        try:
            keys = await asyncio.wait_for(
                asyncio.to_thread(fetch_jwks, self.url, self._algorithms, timeout),
                timeout + 1,
            )
        except (JwksError, TimeoutError) as exc:
            message = str(exc) or "the JWKS URL did not answer in time"
            logger.warning("cannot refresh the keys from %s: %s", self.url, message)
            return
        self._keys = keys
        self._fetched_at = time.monotonic()
