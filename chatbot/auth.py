"""Bearer-token authentication for HTTP requests and WebSocket upgrades.

Tokens come from the ``Authorization: Bearer`` header, or, for browsers, which cannot set
headers on a WebSocket, from the subprotocol list ``["chatbot.v1", "bearer.<token>"]``.
A token in the query string is never read: it would end up in access logs.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from chatbot import logs
from chatbot.errors import ConfigError, TokenExpired, TokenInvalid, TokenMissing
from chatbot.jwks import MAX_KID_CHARS, JwksCache, PublicKey, public_key_algorithms
from chatbot.oidc import OidcKeys
from chatbot.quotas import plan_from_claim
from chatbot.settings import Settings
from chatbot.stores.usage import Quota

logger = logging.getLogger("chatbot.auth")

SUBPROTOCOL = "chatbot.v1"
BEARER_SUBPROTOCOL_PREFIX = "bearer."
MAX_TOKEN_BYTES = 8192
MAX_USER_ID_CHARS = 255

#: Three base64url segments: header, payload, and a signature that is never empty. Padding,
#: whitespace and any other character are refused (the decoder would skip them silently).
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
#: Headers by which a token names its own key; see TokenVerifier._check_header.
_KEY_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c"})


@dataclass(frozen=True)
class Identity:
    """Who made a request: the user id (the configured claim), when the token expires, and
    the quota plan it carries (``CHATBOT_QUOTA_CLAIM``), if any."""

    user_id: str
    expires_at: float
    plan: Quota | None = None


def bearer_from_header(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or ``None`` when there is none."""
    value = headers.get("authorization")
    if value is None:
        return None
    if len(value) > MAX_TOKEN_BYTES + 16:
        raise TokenInvalid()
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def bearer_from_subprotocols(subprotocols: Sequence[str]) -> str | None:
    """The token a browser sent as the ``bearer.<token>`` subprotocol, if any."""
    for item in subprotocols:
        if item.startswith(BEARER_SUBPROTOCOL_PREFIX):
            return item[len(BEARER_SUBPROTOCOL_PREFIX) :] or None
    return None


class TokenVerifier:
    """Verifies JWTs with one allow-listed algorithm family and the configured claims.

    HMAC algorithms (the default, HS256) check the shared secret. Public-key algorithms
    check the key of ``CHATBOT_JWT_PUBLIC_KEY``, or the key that the token's ``kid`` names in
    a JWKS: the one of ``CHATBOT_JWT_JWKS_URL``, else the one that the discovery document of
    ``CHATBOT_OIDC_ISSUER`` names. Everything a token could use to choose its own key is
    refused.
    """

    def __init__(self, settings: Settings) -> None:
        self._algorithms = list(settings.jwt_algorithms)
        self._secret: str | None = None
        self._public_key: PublicKey | None = None
        self._jwks: JwksCache | None = None
        self._oidc: OidcKeys | None = None
        if settings.uses_hmac:
            if settings.jwt_secret is None:
                raise ConfigError(
                    "no JWT secret: set CHATBOT_JWT_SECRET or run `chatbot serve` once "
                    "to have one generated in the data directory"
                )
            self._secret = str(settings.jwt_secret)
        elif settings.jwt_public_key is not None:
            # Only the allowed algorithms this key can verify: an RSA key never checks ES256.
            self._public_key, self._algorithms = public_key_algorithms(
                settings.jwt_public_key, self._algorithms
            )
        elif settings.jwt_jwks_url is not None:
            self._jwks = JwksCache(
                settings.jwt_jwks_url,
                self._algorithms,
                refresh_interval=settings.jwt_jwks_refresh_seconds,
            )
        elif settings.oidc_issuer is not None:
            self._oidc = OidcKeys(
                settings.oidc_issuer,
                self._algorithms,
                refresh_interval=settings.jwt_jwks_refresh_seconds,
            )
        else:
            raise ConfigError(
                f"CHATBOT_JWT_ALGORITHMS allows {', '.join(self._algorithms)}, which needs the "
                "identity provider's public key: set CHATBOT_JWT_PUBLIC_KEY (PEM, or "
                "@/path/to/key.pem) or CHATBOT_JWT_JWKS_URL (see docs/identity-providers.md)"
            )
        self._audience = settings.token_audience
        self._issuer = settings.token_issuer
        self._leeway = settings.jwt_leeway
        self._claim = settings.jwt_user_claim
        self._quota_claim = settings.quota_claim
        #: A malformed plan is logged as a warning once, then at debug level: every request
        #: of every user would repeat it.
        self._warned_plan = False

    @property
    def leeway(self) -> float:
        return self._leeway

    @property
    def jwks(self) -> JwksCache | None:
        """The JWKS cache when the keys come from a JWKS URL."""
        return self._jwks

    async def prefetch(self) -> None:
        """Read the OpenID Connect discovery document, if any, so that a provider that
        cannot be reached shows in the log at start rather than at the first token."""
        if self._oidc is not None:
            await self._oidc.discover()

    async def verify(self, token: str | None) -> Identity:
        """Return who the token names, or raise a :class:`~chatbot.errors.AuthError`.

        Only a JWKS lookup awaits anything; every other check is done in line.
        """
        if not token:
            raise TokenMissing()
        header = self._check_header(token)
        algorithm: str = header["alg"]
        key: Any
        keys = self._jwks or self._oidc
        if keys is not None:
            key = await keys.key(header.get("kid"), algorithm)
            if key is None:
                raise TokenInvalid()
        elif self._public_key is not None:
            key = self._public_key
        else:
            key = self._secret
        identity = self._decode(token, key, algorithm)
        # The log lines of this request (or socket) from now on say whose they are.
        logs.bind(user_id=identity.user_id)
        return identity

    def _check_header(self, token: str) -> dict[str, Any]:
        """The token's header, once the token is well-formed and its ``alg`` is allowed.

        Nothing is decoded before the length and the character set are checked, and no key
        is looked up (nor any JWKS fetched) for an algorithm that is not allowed.
        """
        if len(token) > MAX_TOKEN_BYTES or _COMPACT_JWS.fullmatch(token) is None:
            raise TokenInvalid()
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.PyJWTError, ValueError, RecursionError):
            raise TokenInvalid() from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise TokenInvalid()
        if "crit" in header:
            # No JWS extensions are understood here, so a critical one must be refused.
            raise TokenInvalid()
        if _KEY_HEADERS.intersection(header):
            # A token may not say where its key comes from (RFC 8725, 3.10): such headers
            # are never followed, and a token that carries them is refused outright.
            raise TokenInvalid()
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > MAX_KID_CHARS):
            raise TokenInvalid()
        return header

    def _decode(self, token: str, key: Any, algorithm: str) -> Identity:
        required = ["exp", self._claim]
        if self._audience is not None:
            required.append("aud")
        if self._issuer is not None:
            required.append("iss")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                # exp is checked below, after its type: PyJWT reads "true" or "123" as numbers.
                options={"require": required, "verify_exp": False},
            )
        except (jwt.PyJWTError, ValueError, RecursionError):
            raise TokenInvalid() from None
        user_id = claims.get(self._claim)
        if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID_CHARS:
            raise TokenInvalid()
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
            raise TokenInvalid()
        # RFC 7519 4.1.4: refused on or after exp (plus the leeway), as PyJWT does.
        if exp <= time.time() - self._leeway:
            raise TokenExpired()
        return Identity(user_id=user_id, expires_at=float(exp), plan=self._plan(claims))

    def _plan(self, claims: dict[str, Any]) -> Quota | None:
        """The quota plan of the token's claims. A malformed one is the identity provider's
        mistake, not the user's: the token stays valid, and the server's quotas apply."""
        if self._quota_claim is None:
            return None
        try:
            return plan_from_claim(claims.get(self._quota_claim))
        except ValueError as exc:
            level = logging.DEBUG if self._warned_plan else logging.WARNING
            self._warned_plan = True
            logger.log(
                level,
                "a token's %r claim is not a quota plan (%s); the server's own quotas apply "
                "to it (see CHATBOT_QUOTA_CLAIM in docs/configuration.md)",
                self._quota_claim, exc,
            )  # fmt: skip
            return None

    def mint(self, subject: str, ttl: float, **claims: Any) -> str:
        """Sign a token for ``subject`` valid for ``ttl`` seconds (the CLI's ``token``)."""
        if self._secret is None:
            raise ConfigError(
                "chatbot token signs with the shared secret (HS*); with public-key "
                "algorithms your identity provider issues the tokens"
            )
        now = int(time.time())
        payload: dict[str, Any] = {self._claim: subject, "iat": now, "exp": now + int(ttl)}
        if self._audience is not None:
            payload["aud"] = self._audience
        if self._issuer is not None:
            payload["iss"] = self._issuer
        payload.update(claims)
        return jwt.encode(payload, self._secret, algorithm=self._algorithms[0])
