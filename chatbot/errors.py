"""The exceptions chatbot raises, and where each one is translated.

    ChatbotError
    ├── ConfigError          bad or missing configuration; the CLI prints it and exits 2
    ├── AuthError            a token was missing, invalid or expired; HTTP 401, close 4401
    │   ├── TokenMissing
    │   ├── TokenInvalid
    │   └── TokenExpired
    ├── NotFound             no such session for this user; HTTP 404, close 4404
    │   └── MessageNotFound  no such message in the session; HTTP 404, an error frame
    ├── DuplicateMessage     a user message with this client id is already stored; the
    │                        stored reply is delivered instead of running it again
    ├── DuplicateReply       a regeneration with this client id is already stored
    ├── InvalidRequest       bad input from a client; HTTP 400/422, an error frame
    │   └── TooManySessions  the user is at CHATBOT_MAX_SESSIONS_PER_USER; 429, close 4429
    └── BackendError         the model backend failed; an error frame
                             (``kind``: backend_error, backend_timeout, backend_unavailable)

Errors are raised deep and translated at the edges: the HTTP handlers map them to status
codes, the WebSocket endpoint to error frames or close codes, the CLI to a one-line message
and an exit code. No message carries a token, a key or a stack trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

BackendErrorKind = Literal["backend_error", "backend_timeout", "backend_unavailable"]


class ChatbotError(Exception):
    """Base class of every error chatbot raises on purpose."""


class ConfigError(ChatbotError):
    """The configuration is missing something or holds a value that cannot work."""


def why_not_created(path: Path, exc: OSError) -> str:
    """Why ``path`` could not be created, for a ConfigError: "File exists" would not say
    which file is in the way, so name the first of ``path`` and its parents that is a file."""
    blocking = [p for p in (path, *path.parents) if p.is_file()]
    return f"{blocking[0]} is a file" if blocking else exc.strerror or str(exc)


class AuthError(ChatbotError):
    """Authentication failed; ``reason`` is the only detail a client ever sees."""

    reason = "invalid token"

    def __init__(self, reason: str | None = None) -> None:
        if reason is not None:
            self.reason = reason
        super().__init__(self.reason)


class TokenMissing(AuthError):
    """No bearer token was sent."""

    reason = "missing token"


class TokenInvalid(AuthError):
    """The token failed a check (signature, algorithm, claims, format)."""

    reason = "invalid token"


class TokenExpired(AuthError):
    """The token's ``exp`` has passed."""

    reason = "token expired"


class NotFound(ChatbotError):
    """The session does not exist or belongs to another user (the two look the same)."""

    def __init__(self, message: str = "session not found") -> None:
        super().__init__(message)


class MessageNotFound(NotFound):
    """The session holds no such message (or it was deleted meanwhile)."""

    def __init__(self, message: str = "message not found") -> None:
        super().__init__(message)


class DuplicateMessage(ChatbotError):
    """The session already holds a user message with this client ``id``: ``message`` is
    that stored message and ``reply`` its stored reply, if any (records of
    :mod:`chatbot.stores.base`)."""

    def __init__(self, message: Any = None, reply: Any = None) -> None:
        self.message = message
        self.reply = reply
        super().__init__("a message with this id is already stored")


class DuplicateReply(ChatbotError):
    """The session already holds a regenerated reply with this client ``id``: ``reply`` is
    that stored reply, delivered instead of generating it again."""

    def __init__(self, reply: Any = None) -> None:
        self.reply = reply
        super().__init__("a reply with this id is already stored")


class InvalidRequest(ChatbotError):
    """A client sent input that cannot be accepted; ``code`` names the problem."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        self.code = code
        self.message = message
        self.status = status
        super().__init__(message)


class TooManySessions(InvalidRequest):
    """The user already owns ``CHATBOT_MAX_SESSIONS_PER_USER`` sessions."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            "too_many_sessions",
            f"you already have {limit} sessions, the most this server keeps per user; "
            "delete one to create another",
            429,
        )


class BackendError(ChatbotError):
    """A model backend failed.

    ``kind`` is one of ``backend_error``, ``backend_timeout`` and ``backend_unavailable``;
    ``retryable`` says whether sending the same message again may succeed.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: BackendErrorKind = "backend_error",
        retryable: bool = False,
    ) -> None:
        self.kind: BackendErrorKind = kind
        self.retryable = retryable
        self.message = message
        super().__init__(message)
