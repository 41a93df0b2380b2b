"""Bearer-token authentication for HTTP requests and WebSocket upgrades.

Tokens come from the ``Authorization: Bearer`` header, or, for browsers, which cannot set
headers on a WebSocket, from the subprotocol list ``["chatbot.v1", "bearer.<token>"]``.
A token in the query string is never read: it would end up in access logs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from chatbot.errors import ConfigError, TokenExpired, TokenInvalid, TokenMissing
from chatbot.settings import Settings

SUBPROTOCOL = "chatbot.v1"
BEARER_SUBPROTOCOL_PREFIX = "bearer."
MAX_TOKEN_BYTES = 8192
MAX_USER_ID_CHARS = 255


@dataclass(frozen=True)
class Identity:
    """Who made a request: the user id (the configured claim) and when the token expires."""

    user_id: str
    expires_at: float


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
    """Verifies JWTs with one allow-listed algorithm family and the configured claims."""

    def __init__(self, settings: Settings) -> None:
        if settings.uses_hmac:
            if settings.jwt_secret is None:
                raise ConfigError(
                    "no JWT secret: set CHATBOT_JWT_SECRET or run `chatbot serve` once "
                    "to have one generated in the data directory"
                )
            self._key: Any = str(settings.jwt_secret)
        else:
            raise ConfigError(
                "public-key JWT algorithms need a public key or a JWKS URL, which this "
                "version does not support yet; use HS256"
            )
        self._algorithms = list(settings.jwt_algorithms)
        self._audience = settings.jwt_audience
        self._issuer = settings.jwt_issuer
        self._leeway = settings.jwt_leeway
        self._claim = settings.jwt_user_claim

    @property
    def leeway(self) -> float:
        return self._leeway

    def verify(self, token: str | None) -> Identity:
        """Return who the token names, or raise a :class:`~chatbot.errors.AuthError`."""
        if not token:
            raise TokenMissing()
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenInvalid()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenInvalid() from None
        if "crit" in header:
            # No JWS extensions are understood here, so a critical one must be refused.
            raise TokenInvalid()
        required = ["exp", self._claim]
        if self._audience is not None:
            required.append("aud")
        if self._issuer is not None:
            required.append("iss")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except jwt.PyJWTError:
            raise TokenInvalid() from None
        user_id = claims.get(self._claim)
        if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_USER_ID_CHARS:
            raise TokenInvalid()
        exp = claims["exp"]
        if not isinstance(exp, int | float):
            raise TokenInvalid()
        return Identity(user_id=user_id, expires_at=float(exp))

    def mint(self, subject: str, ttl: float, **claims: Any) -> str:
        """Sign a token for ``subject`` valid for ``ttl`` seconds (the CLI's ``token``)."""
        now = int(time.time())
        payload: dict[str, Any] = {self._claim: subject, "iat": now, "exp": now + int(ttl)}
        if self._audience is not None:
            payload["aud"] = self._audience
        if self._issuer is not None:
            payload["iss"] = self._issuer
        payload.update(claims)
        return jwt.encode(payload, self._key, algorithm=self._algorithms[0])
