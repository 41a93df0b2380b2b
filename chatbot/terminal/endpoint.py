"""Where the server is, and the token that ``chatbot chat`` shows it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from chatbot.errors import ConfigError

#: Lifetime of a token minted from the server's secret; a fresh one is minted well before.
MINTED_TTL = 3600


def base_url(text: str) -> str:
    """The server's base URL, mount prefix included, without a trailing slash."""
    parts = urlsplit(text.strip())
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"--url {text!r} is not a server address; give its base URL, "
            "http(s)://HOST[:PORT][/PREFIX], for example http://127.0.0.1:8000"
        )
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def default_url() -> str:
    """Where ``chatbot serve`` listens with this directory's settings, seen from here."""
    from chatbot.settings import Settings
    from chatbot.signin import page_url

    settings = Settings.from_env(with_backends=False)
    return page_url(settings.host, settings.port).rstrip("/")


@dataclass
class Server:
    """The server's addresses, all under one base URL (mount prefix included)."""

    base: str

    def ws_url(self, session_id: str | None) -> str:
        """The chat socket; ``stream=1`` so that a reopened socket catches up mid-reply."""
        parts = urlsplit(self.base)
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = {"session_id": session_id} if session_id else {}
        query["stream"] = "1"
        return urlunsplit((scheme, parts.netloc, parts.path + "/ws/chat/", urlencode(query), ""))

    def unreachable(self, why: str) -> str:
        """What to do when nothing answers at the base URL."""
        return (
            f"cannot reach the chatbot server at {self.base} ({why}); start it with "
            "`chatbot serve`, or pass its address with --url"
        )


class Credentials:
    """The bearer token: ``CHATBOT_TOKEN`` as given, or minted from the server's secret."""

    def __init__(self, fixed: str | None = None, mint: Callable[[], str] | None = None) -> None:
        self._fixed = fixed
        self._mint = mint
        self._minted: tuple[str, float] | None = None

    @property
    def renewable(self) -> bool:
        """True when a fresh token can be minted after the server refuses one."""
        return self._mint is not None

    def token(self) -> str:
        """A token valid for a while yet."""
        if self._mint is None:
            assert self._fixed is not None
            return self._fixed
        if self._minted is None or time.monotonic() - self._minted[1] > MINTED_TTL / 2:
            self._minted = (self._mint(), time.monotonic())
        return self._minted[0]

    def refused(self, reason: str) -> str:
        """What to do when the server refuses the token."""
        if self.renewable:
            return (
                f"the server refused a token signed with this directory's secret ({reason}); "
                "run `chatbot chat` where `chatbot serve` runs, or set CHATBOT_TOKEN"
            )
        return (
            f"the server refused the token in CHATBOT_TOKEN ({reason}); get a fresh one with "
            "`chatbot token --sub you`"
        )


def credentials_from_env(environ: Mapping[str, str] = os.environ) -> Credentials:
    """``CHATBOT_TOKEN``, else tokens for the login name signed with the server's secret."""
    token = environ.get("CHATBOT_TOKEN", "").strip()
    if token:
        return Credentials(fixed=token)
    from chatbot.auth import TokenVerifier
    from chatbot.jwt_secret import read_jwt_secret
    from chatbot.settings import Settings
    from chatbot.signin import default_user

    settings = Settings.from_env(with_backends=False)
    if not settings.uses_hmac:
        raise ConfigError("no token: set CHATBOT_TOKEN to a token from your identity provider")
    if settings.jwt_secret is None and not settings.secret_file.is_file():
        raise ConfigError(
            "no token: set CHATBOT_TOKEN (`chatbot token --sub you` prints one), or run "
            "`chatbot chat` in the directory where `chatbot serve` runs, to sign one with its "
            f"secret ({settings.secret_file.resolve()} does not exist)"
        )
    verifier = TokenVerifier(read_jwt_secret(settings))
    user = default_user()
    return Credentials(mint=lambda: verifier.mint(user, MINTED_TTL))
