"""The JWT secret of HMAC tokens: from ``CHATBOT_JWT_SECRET``, or a file in the data
directory that the first ``chatbot serve`` writes (mode 0600) and later runs read."""

from __future__ import annotations

import os
import secrets
from dataclasses import replace
from pathlib import Path

from starlette.datastructures import Secret

from chatbot.errors import ConfigError, why_not_created
from chatbot.settings import MIN_SECRET_BYTES, Settings


def with_jwt_secret(settings: Settings) -> tuple[Settings, str | None]:
    """Return settings that hold a JWT secret, creating one in the data directory if needed.

    The second item is a line to show the operator when the secret came from (or was just
    written to) the data directory, ``None`` otherwise. Only HMAC algorithms need a secret.
    """
    if settings.jwt_secret is not None or not settings.uses_hmac:
        return settings, None
    path = settings.secret_file
    hint = "get a token with: chatbot token --sub you"
    if not path.is_file():
        value = secrets.token_urlsafe(48)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # O_EXCL: when two processes start at once, one writes and both read its secret.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            if not path.is_file():
                raise ConfigError(
                    f"cannot write a JWT secret to {path}: {why_not_created(path.parent, exc)}; "
                    "make CHATBOT_DATA_DIR a writable directory, or set CHATBOT_JWT_SECRET"
                ) from None
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(value + "\n")
            note = f"Generated a JWT secret in {path} (mode 0600); {hint}"
            return replace(settings, jwt_secret=Secret(value)), note
    value = _read_secret_file(path)
    return replace(settings, jwt_secret=Secret(value)), f"Using the JWT secret in {path}; {hint}"


def read_jwt_secret(settings: Settings) -> Settings:
    """Settings that hold the server's JWT secret, for commands that mint tokens beside a
    server (``chatbot token``, ``chatbot open``, ``chatbot chat``). Unlike
    :func:`with_jwt_secret` this never creates a secret: one made here would sign tokens
    that the server, using another, refuses."""
    if not settings.uses_hmac:
        raise ConfigError(
            "tokens are signed with the shared secret (HS*) only; with public-key algorithms "
            "your identity provider issues the tokens"
        )
    if settings.jwt_secret is not None:
        return settings
    path = settings.secret_file
    if not path.is_file():
        raise ConfigError(
            f"no JWT secret: CHATBOT_JWT_SECRET is unset and {path.resolve()} does not exist. "
            "Run this command in the directory where `chatbot serve` runs (it creates that "
            "file on its first start), or set CHATBOT_DATA_DIR or CHATBOT_JWT_SECRET as the "
            "server has them"
        )
    return replace(settings, jwt_secret=Secret(_read_secret_file(path)))


def _read_secret_file(path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the JWT secret in {path}: {exc}") from None
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the JWT secret in {path} is shorter than {MIN_SECRET_BYTES} bytes; "
            "delete the file to have a new one generated"
        )
    return value
