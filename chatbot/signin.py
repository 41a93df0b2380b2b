"""The sign-in link that ``chatbot serve`` and ``chatbot open`` print.

It is the chat page's address with a fresh token in the fragment, ``/#token=...``. Browsers
never send a fragment to the server, so the token reaches no access log and no ``Referer``;
the page moves it to ``sessionStorage`` and takes it out of the address bar.
"""

from __future__ import annotations

import getpass
from typing import TextIO

from chatbot.auth import TokenVerifier
from chatbot.settings import Settings

#: A server listening on every address is reached from this machine through loopback.
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "localhost"}  # noqa: S104


def default_user() -> str:
    """The login name, whom the link signs in unless ``--user`` names someone else."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        # A container user with no name in /etc/passwd and no LOGNAME or USER.
        return "you"


def page_url(host: str, port: int) -> str:
    """The chat page's address for a server listening on ``host:port``."""
    host = _WILDCARDS.get(host.strip("[]"), host.strip("[]"))
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def is_wildcard(host: str) -> bool:
    """Whether ``host`` means every address of the machine."""
    return host.strip("[]") in _WILDCARDS


def sign_in_link(settings: Settings, host: str, port: int, user: str, ttl: float) -> str:
    """The page's address with a token for ``user``, valid ``ttl`` seconds, in its fragment.

    ``settings`` must hold the server's secret (``read_jwt_secret``/``with_jwt_secret``).
    """
    token = TokenVerifier(settings).mint(user, ttl)
    return f"{page_url(host, port)}#token={token}"


def announce(
    settings: Settings, host: str, port: int, user: str, ttl: float, out: TextIO
) -> str | None:
    """Print where to chat, and return that address: a sign-in link with HS* tokens, the
    bare page otherwise (it then signs in with the identity provider, or asks for a token).
    Nothing without the chat page."""
    if not settings.web_ui:
        return None
    if is_wildcard(host):
        print(
            f"The server listens on every address ({host or '*'}); the link below works "
            "from this machine.",
            file=out,
        )
    if settings.uses_hmac:
        url = sign_in_link(settings, host, port, user, ttl)
    else:
        url = page_url(host, port)
    print(f"Chat in your browser: {url}", file=out)
    out.flush()
    return url
