"""The pieces the OpenAPI document (:mod:`chatbot.openapi`) is built from: the JSON shapes
the API sends and takes (``components.schemas``), and the parameters and answers that many
operations share.

Each shape says what :mod:`chatbot.serialize`, :mod:`chatbot.transfer` and the handlers
write, field by field, so that a response that drifts from it fails the schema tests.
"""

from __future__ import annotations

from typing import Any

#: The largest message id the query parameters and paths accept (18 digits: SQLite ids).
MAX_MESSAGE_ID = 999_999_999_999_999_999


#: The operations that take the bearer token (the document's default).
SECURED: list[dict[str, list[str]]] = [{"bearer": []}]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(
    schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        answer["headers"] = headers
    return answer


def error(description: str, *codes: str) -> dict[str, Any]:
    """An error answer; with ``codes``, the only values its ``error.code`` takes."""
    if not codes:
        return json_response(ref("Error"), description)
    narrowed = {
        "allOf": [
            ref("Error"),
            {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}},
        ]
    }
    return json_response(
        narrowed, f"{', '.join(codes)}: {description[:1].lower()}{description[1:]}"
    )


UNAUTHORIZED = {
    **error("No valid bearer token", "missing_token", "invalid_token", "token_expired"),
    "headers": {
        "WWW-Authenticate": {
            "required": True,
            "description": '``Bearer`` without a token, else ``Bearer error="invalid_token"``',
            "schema": {"type": "string"},
        }
    },
}
SESSION_NOT_FOUND = error("No such session for this user", "not_found")
MESSAGE_OR_SESSION_NOT_FOUND = error(
    "No such session for this user, or no such message in it", "not_found"
)
BAD_BODY = error(
    "The body is not JSON, or not a JSON object",
    "invalid_json",
    "invalid_body",
)
TOO_LARGE = error("The body is larger than CHATBOT_MAX_BODY_BYTES", "body_too_large")
TOO_MANY_SESSIONS = error(
    "The caller would own more than CHATBOT_MAX_SESSIONS_PER_USER sessions", "too_many_sessions"
)
ATTACHMENT = {
    "Content-Disposition": {
        "required": True,
        "description": 'attachment; filename="chatbot-<session_id>.<json|md>"',
        "schema": {"type": "string"},
    }
}

SESSION_ID = {"name": "session_id", "in": "path", "required": True, "schema": {"type": "string"}}
MESSAGE_ID_PATH = {
    "name": "message_id",
    "in": "path",
    "required": True,
    "description": "A message id; anything else names no message (404)",
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_MESSAGE_ID},
}


def limit(default: int) -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": default},
    }


def message_id_query(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        # 18 digits at most: the ids are SQLite integers.
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_MESSAGE_ID},
    }


_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_ID = {"type": ["integer", "null"], "minimum": 1}
_TIMESTAMP = {"type": "string", "format": "date-time"}
_ROLE = {"type": "string", "enum": ["user", "assistant"]}
_STATUS = {"type": "string", "enum": ["complete", "cancelled", "error", "in_progress"]}


def _message(*, siblings: bool) -> dict[str, Any]:
    """A stored message as the history lists it (with ``siblings``) or as an export holds
    it. Replies add in_reply_to, backend and model; client_id and usage appear when set."""
    required = ["id", "role", "content", "status", "created_at", "parent_id"]
    properties: dict[str, Any] = {
        "id": {"type": "integer", "minimum": 1},
        "role": _ROLE,
        "content": {"type": "string"},
        "status": _STATUS,
        "created_at": _TIMESTAMP,
        "parent_id": {
            **_NULLABLE_ID,
            "description": "The message this one follows; null for a first message",
        },
        "client_id": {"type": "string"},
        "in_reply_to": _NULLABLE_ID,
        "backend": _NULLABLE_STRING,
        "model": _NULLABLE_STRING,
        "usage": ref("Usage"),
    }
    if siblings:
        required.append("siblings")
        properties["siblings"] = {
            "type": "array",
            "items": {"type": "integer", "minimum": 1},
            "minItems": 1,
            "description": "Every message with the same parent, oldest first, this one too",
        }
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Usage": {
        "type": "object",
        "description": "Token counts of a reply",
        "properties": {
            "input_tokens": {"type": "integer", "minimum": 0},
            "output_tokens": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": {"type": "integer", "minimum": 0},
    },
    "Session": {
        "type": "object",
        "required": [
            "session_id",
            "title",
            "backend",
            "model",
            "system_prompt",
            "created_at",
            "updated_at",
            "message_count",
            "leaf_id",
        ],
        "properties": {
            "session_id": {"type": "string"},
            "title": _NULLABLE_STRING,
            "backend": {"type": "string"},
            "model": _NULLABLE_STRING,
            "system_prompt": _NULLABLE_STRING,
            "created_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
            "message_count": {
                "type": "integer",
                "minimum": 0,
                "description": "Every message of the tree, all branches",
            },
            "leaf_id": {
                **_NULLABLE_ID,
                "description": "The newest message of the current branch; null when empty",
            },
        },
        "additionalProperties": False,
    },
    "SessionList": {
        "type": "object",
        "required": ["sessions", "next_cursor"],
        "properties": {
            "sessions": {"type": "array", "items": ref("Session")},
            "next_cursor": _NULLABLE_STRING,
        },
    },
    "NewSession": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "title": {"type": ["string", "null"], "maxLength": 200},
            "backend": {"type": ["string", "null"]},
            "model": {"type": ["string", "null"]},
            "system_prompt": _NULLABLE_STRING,
        },
    },
    "SessionUpdate": {
        "type": "object",
        "description": "A new title (null removes it), a message whose branch becomes "
        "current (down its newest children), or both",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            "title": {"type": ["string", "null"], "maxLength": 200},
            "leaf_id": {
                "type": "integer",
                "minimum": 1,
                "maximum": 2**62 - 1,
                "description": "A message id, written without a fraction: 5.0 is refused",
            },
        },
    },
    "Message": _message(siblings=True),
    "MessageList": {
        "type": "object",
        "required": ["messages", "has_more"],
        "properties": {
            "messages": {"type": "array", "items": ref("Message")},
            "has_more": {"type": "boolean"},
        },
    },
    "SearchResult": {
        "type": "object",
        "required": [
            "session_id",
            "message_id",
            "role",
            "created_at",
            "title",
            "snippet",
            "matches",
        ],
        "properties": {
            "session_id": {"type": "string"},
            "message_id": {"type": "integer", "minimum": 1},
            "role": _ROLE,
            "created_at": _TIMESTAMP,
            "title": {**_NULLABLE_STRING, "description": "The session's title"},
            "snippet": {"type": "string", "description": "Plain text around the first hit"},
            "matches": {
                "type": "array",
                "description": "The hits in snippet: [start, end) character offsets",
                "items": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "minItems": 2,
                    "maxItems": 2,
                },
            },
        },
        "additionalProperties": False,
    },
    "SearchResults": {
        "type": "object",
        "required": ["results", "next_cursor"],
        "properties": {
            "results": {"type": "array", "items": ref("SearchResult")},
            "next_cursor": _NULLABLE_STRING,
        },
        "additionalProperties": False,
    },
    "SessionExport": {
        "type": "object",
        "description": "A whole session, every branch, in the chatbot.session.v1 format "
        "(docs/protocol.md); POST /api/sessions/import reads it back",
        "required": ["format", "session", "messages"],
        "properties": {
            "format": {"const": "chatbot.session.v1"},
            "session": {
                "type": "object",
                "required": [
                    "title",
                    "backend",
                    "model",
                    "system_prompt",
                    "created_at",
                    "updated_at",
                    "leaf_id",
                ],
                "properties": {
                    "title": _NULLABLE_STRING,
                    "backend": {"type": "string"},
                    "model": _NULLABLE_STRING,
                    "system_prompt": _NULLABLE_STRING,
                    "created_at": _TIMESTAMP,
                    "updated_at": _TIMESTAMP,
                    "leaf_id": _NULLABLE_ID,
                },
                "additionalProperties": False,
            },
            "messages": {
                "type": "array",
                "description": "In id order: a parent comes before its children",
                "items": ref("ExportedMessage"),
            },
        },
        "additionalProperties": False,
    },
    "ExportedMessage": _message(siblings=False),
    "ImportedSessions": {
        "type": "object",
        "required": ["sessions"],
        "properties": {"sessions": {"type": "array", "items": ref("Session")}},
        "additionalProperties": False,
    },
    "Share": {
        "type": "object",
        "required": ["share_id", "url", "title", "created_at", "message_count"],
        "properties": {
            "share_id": {"type": "string"},
            "url": {"type": "string", "description": "The read-only page: <base>/s/<share_id>"},
            "title": _NULLABLE_STRING,
            "created_at": _TIMESTAMP,
            "message_count": {"type": "integer", "minimum": 1},
        },
        "additionalProperties": False,
    },
    "ShareList": {
        "type": "object",
        "required": ["shares"],
        "properties": {"shares": {"type": "array", "items": ref("Share")}},
        "additionalProperties": False,
    },
    "SharedBranch": {
        "type": "object",
        "required": ["share_id", "title", "created_at", "messages"],
        "properties": {
            "share_id": {"type": "string"},
            "title": _NULLABLE_STRING,
            "created_at": _TIMESTAMP,
            "messages": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["role", "content", "status", "created_at", "model"],
                    "properties": {
                        "role": _ROLE,
                        "content": {"type": "string"},
                        "status": _STATUS,
                        "created_at": _TIMESTAMP,
                        "model": _NULLABLE_STRING,
                    },
                    "additionalProperties": False,
                },
            },
        },
        "additionalProperties": False,
    },
    "Backend": {
        "type": "object",
        "required": ["name", "type", "default", "default_model", "models"],
        "properties": {
            "name": {"type": "string"},
            "type": {"type": "string"},
            "default": {"type": "boolean"},
            "default_model": _NULLABLE_STRING,
            "models": {"type": "array", "items": {"type": "string"}},
        },
    },
    "BackendList": {
        "type": "object",
        "required": ["backends", "default"],
        "properties": {
            "backends": {"type": "array", "items": ref("Backend")},
            "default": {"type": "string"},
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
}
