"""Browser origins: how ``CHATBOT_ALLOWED_ORIGINS`` is written, and the WebSocket ``Origin``
check (cross-site WebSocket hijacking).

An origin is ``scheme://host[:port]``. Browsers send it in lower case without the scheme's
default port; the setting may be written otherwise, so both sides are normalized before they
are compared. This module imports nothing of the project's: settings, limits and CORS all
build on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

#: The setting's value that allows every origin.
ANY_ORIGIN = "*"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in lower case without the scheme's default port, or
    ``None`` when ``value`` is not an http(s) origin (``null``, a path, credentials...)."""
    value = value.strip()
    if value.endswith("/"):
        value = value[:-1]
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if (
        scheme not in _DEFAULT_PORTS
        or not host
        or parts.path
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
    ):
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def allowed_origins(values: Iterable[str]) -> tuple[str, ...]:
    """The origins a setting allows, as browsers send them: ``("*",)`` when it allows any.

    A value that is not an origin is kept as written: it matches nothing a browser sends
    (Settings refuses such values anyway).
    """
    values = tuple(values)
    if ANY_ORIGIN in values:
        return (ANY_ORIGIN,)
    return tuple(normalize_origin(value) or value for value in values)


def _host_and_port(host_header: str, default_port: int) -> tuple[str, int] | None:
    try:
        parts = urlsplit("//" + host_header.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.path or parts.query or "@" in parts.netloc:
        return None
    return parts.hostname, default_port if port is None else port


def origin_allowed(origins: list[str], host: str | None, allowed: Iterable[str]) -> bool:
    """Whether a WebSocket upgrade with these ``Origin`` header values may go on.

    No ``Origin`` (a client that is not a browser) is allowed. ``allowed`` holds normalized
    origins (see :func:`allowed_origins`) or ``*``; empty means same-origin only: the
    origin's host and port must be those of the request's ``Host`` header.
    """
    if not origins:
        return True
    if len(origins) > 1:
        return False
    allowed = set(allowed)
    if ANY_ORIGIN in allowed:
        return True
    origin = normalize_origin(origins[0])
    if origin is None:
        return False
    if allowed:
        return origin in allowed
    if host is None:
        return False
    parts = urlsplit(origin)
    default_port = _DEFAULT_PORTS[parts.scheme]
    ours = (parts.hostname, default_port if parts.port is None else parts.port)
    return _host_and_port(host, default_port) == ours
