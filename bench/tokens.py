"""Bearer tokens for the benchmarked server: HS256, ``sub`` and ``exp``, one per user, cached."""

from __future__ import annotations

import secrets
import time

import jwt

#: Long enough for every run, short enough that a leaked one is soon worthless.
TOKEN_SECONDS = 4 * 3600


class Tokens:
    """Mints (once per user) the tokens a server sharing ``secret`` accepts."""

    def __init__(self, secret: str | None = None) -> None:
        self.secret = secret if secret is not None else secrets.token_urlsafe(48)
        self._minted: dict[str, str] = {}

    def for_user(self, user: str) -> str:
        """A token naming ``user``; minted once, so that minting is not part of a figure."""
        token = self._minted.get(user)
        if token is None:
            now = int(time.time())
            claims = {"sub": user, "iat": now, "exp": now + TOKEN_SECONDS}
            token = jwt.encode(claims, self.secret, algorithm="HS256")
            self._minted[user] = token
        return token

    def header(self, user: str) -> dict[str, str]:
        """The ``Authorization`` header of ``user``."""
        return {"Authorization": f"Bearer {self.for_user(user)}"}
