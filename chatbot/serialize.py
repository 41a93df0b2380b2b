"""The JSON shapes of sessions, messages and frames, shared by the HTTP API and the socket."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse

from chatbot.stores.base import Message, Session


def timestamp(when: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``: ``2026-11-24T10:00:00.123456Z``."""
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def session_json(session: Session) -> dict[str, Any]:
    return {
        "session_id": session.id,
        "title": session.title,
        "backend": session.backend,
        "model": session.model,
        "system_prompt": session.system_prompt,
        "created_at": timestamp(session.created_at),
        "updated_at": timestamp(session.updated_at),
        "message_count": session.message_count,
        "leaf_id": session.leaf_id,
    }


def message_json(message: Message, siblings: list[int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "created_at": timestamp(message.created_at),
        "parent_id": message.parent_id,
    }
    if siblings is not None:
        body["siblings"] = siblings
    if message.client_id is not None:
        body["client_id"] = message.client_id
    if message.role == "assistant":
        body["in_reply_to"] = message.reply_to
        body["backend"] = message.backend
        body["model"] = message.model
    if message.usage is not None:
        body["usage"] = message.usage
    return body


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An HTTP error in the API's one shape: ``{"error": {"code": ..., "message": ...}}``."""
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def is_utf8(text: str) -> bool:
    """False for a string holding a lone surrogate (JSON's ``"\\ud800"``), which cannot be
    stored or sent as UTF-8; such input is refused like any other malformed value."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dumps(frame: dict[str, Any]) -> str:
    """Serialise a frame the way the original API document prints them."""
    return json.dumps(frame, ensure_ascii=False)
