"""The wire contract of the chat socket (PROTOCOL.md): close codes, the frames the server
sends, and the checks on what a client sends. Pure functions of data: no socket here.

Every frame of the original API document stays byte for byte: a reply is
``{"message": ..., "session_id": ...}`` unless the client opted in to extended frames (the
``chatbot.v1`` subprotocol, or a message that used an addition such as ``id``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from chatbot.errors import InvalidRequest
from chatbot.serialize import is_utf8, timestamp
from chatbot.stores.base import LEAF, Message

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_UNSUPPORTED = 1003
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
#: What a client's close frame without a code reads as (RFC 6455 7.1.5); never sent.
CLOSE_NO_STATUS = 1005
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY = 4429

MAX_CLIENT_ID_CHARS = 128


def reply_frame(
    message: Message, session_id: str, reply_to: str | None, *, extended: bool
) -> dict[str, Any]:
    """The frame of a stored assistant message."""
    frame: dict[str, Any]
    if not extended:
        frame = {"message": message.content, "session_id": session_id}
        if message.status != "complete":
            # Only a cancel (an addition itself) or a shutdown ends a reply early.
            frame["status"] = message.status
        return frame
    frame = {
        "type": "message",
        "message": message.content,
        "session_id": session_id,
        "message_id": message.id,
        "status": message.status,
        "created_at": timestamp(message.created_at),
        "backend": message.backend,
        "model": message.model,
    }
    if reply_to is not None:
        frame["reply_to"] = reply_to
    if message.usage is not None:
        frame["usage"] = message.usage
    return frame


def delta_frame(text: str, session_id: str, reply_to: str | None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "delta", "delta": text, "session_id": session_id}
    if reply_to is not None:
        frame["reply_to"] = reply_to
    return frame


def error_frame(
    code: str,
    message: str,
    session_id: str,
    retryable: bool = False,
    reply_to: str | None = None,
    *,
    retry_after: int | None = None,
) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "error",
        "error": {"code": code, "message": message, "retryable": retryable},
        "session_id": session_id,
    }
    if retry_after is not None:
        frame["error"]["retry_after"] = retry_after
    if reply_to is not None:
        frame["reply_to"] = reply_to
    return frame


def echoable_id(value: Any) -> str | None:
    """A client ``id`` that could be valid, to echo as ``reply_to`` in an error frame: a
    rejected huge one would make the error frame itself larger than the frame limit."""
    if isinstance(value, str) and 0 < len(value) <= MAX_CLIENT_ID_CHARS and is_utf8(value):
        return value
    return None


@dataclass(frozen=True)
class ChatFrame:
    """A valid ``message`` frame from a client."""

    content: str
    client_id: str | None
    stream: bool
    #: It used an addition (``id``, ``stream``, ``parent_id``): from now on the client gets
    #: extended frames.
    extended: bool
    #: ``parent_id``: an edit, stored after that message (``None``: a new first message).
    parent: int | Literal["leaf"] | None = LEAF


@dataclass(frozen=True)
class RegenerateFrame:
    """A valid ``regenerate`` frame: a new reply in place of ``message_id`` (``None``: the
    newest reply of the current branch)."""

    message_id: int | None
    client_id: str | None
    stream: bool


def _message_id(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**62:
        raise InvalidRequest("invalid_message", f"{name} must be a message id (an integer)")
    return value


def _client_id(data: dict[str, Any]) -> str | None:
    client_id = data.get("id")
    if client_id is not None and echoable_id(client_id) is None:
        raise InvalidRequest(
            "invalid_message", f"id must be a string of 1 to {MAX_CLIENT_ID_CHARS} characters"
        )
    return client_id


def _stream(data: dict[str, Any]) -> bool:
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("invalid_message", "stream must be true or false")
    return stream


def parse_regenerate(data: dict[str, Any]) -> RegenerateFrame:
    """Check a ``regenerate`` frame; ``InvalidRequest`` naming what is wrong."""
    return RegenerateFrame(_message_id(data, "message_id"), _client_id(data), _stream(data))


def parse_message(data: dict[str, Any], session_id: str, max_chars: int) -> ChatFrame:
    """Check a ``message`` frame; ``InvalidRequest`` naming what is wrong."""
    content = data.get("message")
    if not isinstance(content, str):
        raise InvalidRequest("invalid_message", "message must be a string")
    if not content.strip():
        raise InvalidRequest("invalid_message", "message must not be empty")
    if not is_utf8(content):
        raise InvalidRequest("invalid_message", "message holds an unpaired surrogate")
    if len(content) > max_chars:
        raise InvalidRequest("message_too_long", f"message is longer than {max_chars} characters")
    claimed = data.get("session_id")
    if claimed is not None:
        if not isinstance(claimed, str):
            raise InvalidRequest("invalid_message", "session_id must be a string")
        if claimed != session_id:
            raise InvalidRequest(
                "session_mismatch",
                "session_id is not this connection's session; open a socket on that "
                "session instead",
            )
    client_id = _client_id(data)
    stream = _stream(data)
    parent: int | Literal["leaf"] | None = LEAF
    if "parent_id" in data:
        parent = _message_id(data, "parent_id")
    extended = client_id is not None or "stream" in data or "parent_id" in data
    return ChatFrame(content, client_id, stream, extended, parent)
