"""OpenID Connect discovery: the issuer's signing keys, found through its discovery document.

With ``CHATBOT_OIDC_ISSUER`` set, the server reads ``ISSUER/.well-known/openid-configuration``,
checks that the document names exactly that issuer, and verifies tokens with the keys of the
JWKS it points at (through :class:`chatbot.jwks.JwksCache`, with its caching and its limits on
refetches). Discovery starts in the background when the server starts and is retried on a
token at most once per refresh interval while the provider cannot be reached: the server
starts without the provider and answers ``401`` until it is reachable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from chatbot.errors import ConfigError
from chatbot.jwks import (
    FETCH_TIMEOUT,
    JwksCache,
    LoopLock,
    PublicKey,
    check_jwks_url,
    is_loopback,
)

logger = logging.getLogger("chatbot.oidc")

ISSUER_VARIABLE = "CHATBOT_OIDC_ISSUER"
DISCOVERY_PATH = "/.well-known/openid-configuration"
#: A discovery document larger than this is refused (real ones are a few kilobytes).
MAX_DISCOVERY_BYTES = 256 * 1024


class DiscoveryError(Exception):
    """The discovery document could not be fetched, or does not describe the issuer."""


@dataclass(frozen=True)
class Discovery:
    """What the server uses of a provider's discovery document."""

    issuer: str
    jwks_uri: str
    #: ``id_token_signing_alg_values_supported``: how the provider signs ID tokens.
    signing_algorithms: tuple[str, ...] = ()


def check_issuer(issuer: str) -> None:
    """Refuse an issuer whose discovery document anyone on the network could answer.

    The document names the keys that verify tokens, so it must come over TLS, as the JWKS
    does; plain ``http://`` is accepted for a loopback address only.
    """
    check_jwks_url(issuer, ISSUER_VARIABLE)
    parts = urlsplit(issuer)
    if parts.query or parts.fragment:
        raise ConfigError(
            f"{ISSUER_VARIABLE} is an issuer URL without query or fragment, exactly as the "
            'provider\'s discovery document names it in "issuer"'
        )


def discovery_url(issuer: str) -> str:
    """Where ``issuer`` publishes its discovery document (OpenID Connect Discovery 4)."""
    return issuer.rstrip("/") + DISCOVERY_PATH


def parse_discovery(body: bytes, issuer: str) -> Discovery:
    """The parts of a discovery document the server uses, once it proves to be ``issuer``'s."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise DiscoveryError("the discovery document is not JSON") from None
    if not isinstance(document, dict):
        raise DiscoveryError("the discovery document is not a JSON object")
    named = document.get("issuer")
    if named != issuer:
        # OpenID Connect Discovery 4.3: otherwise anyone serving a document could pose as it.
        raise DiscoveryError(
            f"the discovery document names the issuer {named!r}, not {issuer!r}; set "
            f"{ISSUER_VARIABLE} to the provider's issuer exactly (trailing slash included)"
        )
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise DiscoveryError('the discovery document has no "jwks_uri"')
    try:
        check_jwks_url(jwks_uri, "the discovery document's jwks_uri")
    except ConfigError as exc:
        raise DiscoveryError(str(exc)) from None
    algorithms = document.get("id_token_signing_alg_values_supported")
    if not isinstance(algorithms, list):
        algorithms = []
    return Discovery(
        issuer=issuer,
        jwks_uri=jwks_uri,
        signing_algorithms=tuple(a for a in algorithms if isinstance(a, str)),
    )


async def fetch_discovery(issuer: str, seconds: float) -> Discovery:
    """GET the issuer's discovery document, within ``seconds`` in all."""
    url = discovery_url(issuer)
    # Loopback never goes through a proxy; elsewhere the environment's proxy settings apply.
    trust_env = not is_loopback(urlsplit(url).hostname or "")
    # The system's certificate authorities, as for the JWKS (chatbot.jwks).
    tls = ssl.create_default_context()
    try:
        async with (
            asyncio.timeout(seconds),
            httpx.AsyncClient(
                timeout=seconds, follow_redirects=False, trust_env=trust_env, verify=tls
            ) as client,
            client.stream("GET", url, headers={"Accept": "application/json"}) as response,
        ):
            if response.status_code != 200:
                # A redirect too: the document must be served at its URL (no move off TLS).
                raise DiscoveryError(f"the discovery URL answered HTTP {response.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():  # decompressed, if it came gzipped
                size += len(chunk)
                if size > MAX_DISCOVERY_BYTES:
                    raise DiscoveryError(
                        f"the discovery document is larger than {MAX_DISCOVERY_BYTES} bytes"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise DiscoveryError(f"the discovery URL did not answer within {seconds:g} s") from None
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise DiscoveryError(f"cannot reach the discovery URL: {reason}") from None
    return parse_discovery(b"".join(chunks), issuer)


class OidcKeys:
    """The issuer's signing keys: its discovery document once, then its JWKS.

    Looked up like a :class:`JwksCache`, by a token's ``kid`` and ``alg``.
    """

    def __init__(
        self,
        issuer: str,
        algorithms: Sequence[str],
        *,
        refresh_interval: float = 60.0,
        timeout: float | None = None,
    ) -> None:
        check_issuer(issuer)
        self.issuer = issuer
        self._algorithms = tuple(algorithms)
        self._refresh_interval = refresh_interval
        self._timeout = timeout
        self._jwks: JwksCache | None = None
        self._attempted_at: float | None = None
        self._lock = LoopLock()

    def _discovered(self) -> bool:
        return self._jwks is not None

    async def discover(self) -> bool:
        """Read the discovery document unless it was read, or tried within the refresh
        interval; whether the keys' URL is known now."""
        if self._discovered():
            return True
        async with self._lock():
            if self._discovered():  # another task read it while this one waited
                return True
            now = time.monotonic()
            if self._attempted_at is not None and now - self._attempted_at < self._refresh_interval:
                return False
            self._attempted_at = now
            timeout = FETCH_TIMEOUT if self._timeout is None else self._timeout
            try:
                discovery = await fetch_discovery(self.issuer, timeout)
            except DiscoveryError as exc:
                logger.warning(
                    "cannot read the OpenID Connect discovery document of %s: %s; tokens are "
                    "refused until it can be read",
                    self.issuer,
                    exc,
                )
                return False
            self._use(discovery)
            return True

    def _use(self, discovery: Discovery) -> None:
        self._jwks = JwksCache(
            discovery.jwks_uri,
            self._algorithms,
            refresh_interval=self._refresh_interval,
            timeout=self._timeout,
        )
        logger.info(
            "OpenID Connect: tokens of %s are verified with the keys at %s",
            discovery.issuer,
            discovery.jwks_uri,
        )
        if discovery.signing_algorithms and not set(discovery.signing_algorithms) & set(
            self._algorithms
        ):
            # Access tokens may be signed otherwise, so this is a hint, not a refusal.
            logger.warning(
                "%s signs ID tokens with %s, which CHATBOT_JWT_ALGORITHMS (%s) does not allow; "
                "set CHATBOT_JWT_ALGORITHMS to the algorithm its tokens use",
                discovery.issuer,
                ", ".join(discovery.signing_algorithms),
                ", ".join(self._algorithms),
            )

    async def key(self, kid: str | None, algorithm: str) -> PublicKey | None:
        """The key for a token's ``kid`` and ``alg``, discovering the JWKS first if needed."""
        if not await self.discover():
            return None
        assert self._jwks is not None
        return await self._jwks.key(kid, algorithm)
