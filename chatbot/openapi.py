"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json``.

Written by hand so that it says exactly what the handlers do; a test checks that every
route of the application is described here and nothing else is.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatbot import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_UNAUTHORIZED = {
    "description": "Missing, invalid or expired bearer token",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    "content": {"application/json": {"schema": _ref("Error")}},
}
_SESSION_ID = {
    "name": "session_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}


def _limit(default: int) -> dict[str, Any]:
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": default},
    }


def _message_cursor(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        # 18 digits at most: the ids are SQLite integers.
        "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999_999},
    }


_NULLABLE_STRING = {"type": ["string", "null"]}
_TIMESTAMP = {"type": "string", "format": "date-time"}

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
        "properties": {
            "input_tokens": {"type": "integer"},
            "output_tokens": {"type": "integer"},
        },
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
        ],
        "properties": {
            "session_id": {"type": "string"},
            "title": _NULLABLE_STRING,
            "backend": {"type": "string"},
            "model": _NULLABLE_STRING,
            "system_prompt": _NULLABLE_STRING,
            "created_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
            "message_count": {"type": "integer", "minimum": 0},
        },
    },
    "SessionList": {
        "type": "object",
        "required": ["sessions", "next_cursor"],
        "properties": {
            "sessions": {"type": "array", "items": _ref("Session")},
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
        "additionalProperties": False,
        "required": ["title"],
        "properties": {"title": {"type": ["string", "null"], "maxLength": 200}},
    },
    "Message": {
        "type": "object",
        "required": ["id", "role", "content", "status", "created_at"],
        "properties": {
            "id": {"type": "integer"},
            "role": {"type": "string", "enum": ["user", "assistant"]},
            "content": {"type": "string"},
            "status": {
                "type": "string",
                "enum": ["complete", "cancelled", "error", "in_progress"],
            },
            "created_at": _TIMESTAMP,
            "client_id": {"type": "string"},
            "in_reply_to": {"type": ["integer", "null"]},
            "backend": _NULLABLE_STRING,
            "model": _NULLABLE_STRING,
            "usage": _ref("Usage"),
        },
    },
    "MessageList": {
        "type": "object",
        "required": ["messages", "has_more"],
        "properties": {
            "messages": {"type": "array", "items": _ref("Message")},
            "has_more": {"type": "boolean"},
        },
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
            "backends": {"type": "array", "items": _ref("Backend")},
            "default": {"type": "string"},
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
}

_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]
_TOO_LARGE = _error("body_too_large: the body is larger than CHATBOT_MAX_BODY_BYTES")
_SESSION_RESPONSES = {
    "401": _UNAUTHORIZED,
    "404": _error("No such session for this user"),
}

PATHS: dict[str, Any] = {
    "/api/sessions": {
        "get": {
            "operationId": "listSessions",
            "summary": "The caller's sessions, most recently active first",
            "security": _SECURED,
            "parameters": [
                _limit(20),
                {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": _json(_ref("SessionList"), "A page of sessions"),
                "401": _UNAUTHORIZED,
                "422": _error("Bad limit or cursor"),
            },
        },
        "post": {
            "operationId": "createSession",
            "summary": "Create a session",
            "security": _SECURED,
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": _ref("NewSession")}},
            },
            "responses": {
                "201": _json(_ref("Session"), "The new session"),
                "400": _error("The body is not a JSON object"),
                "401": _UNAUTHORIZED,
                "413": _TOO_LARGE,
                "422": _error("Unknown backend or model, or a bad field"),
                "429": _error(
                    "too_many_sessions: the caller owns CHATBOT_MAX_SESSIONS_PER_USER sessions"
                ),
            },
        },
    },
    "/api/sessions/{session_id}": {
        "parameters": [_SESSION_ID],
        "get": {
            "operationId": "getSession",
            "summary": "One session",
            "security": _SECURED,
            "responses": {"200": _json(_ref("Session"), "The session"), **_SESSION_RESPONSES},
        },
        "patch": {
            "operationId": "renameSession",
            "summary": "Rename a session",
            "security": _SECURED,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("SessionUpdate")}},
            },
            "responses": {
                "200": _json(_ref("Session"), "The renamed session"),
                "400": _error("The body is not a JSON object"),
                "413": _TOO_LARGE,
                "422": _error("A bad title"),
                **_SESSION_RESPONSES,
            },
        },
        "delete": {
            "operationId": "deleteSession",
            "summary": "Delete a session and its messages; sockets on it close with 4404",
            "security": _SECURED,
            "responses": {"204": {"description": "Deleted"}, **_SESSION_RESPONSES},
        },
    },
    "/api/sessions/{session_id}/messages": {
        "parameters": [_SESSION_ID],
        "get": {
            "operationId": "listMessages",
            "summary": "A page of a session's messages, oldest first within the page",
            "security": _SECURED,
            "parameters": [
                _limit(50),
                _message_cursor("before", "The page just older than this message id"),
                _message_cursor("after", "The page just newer than this message id"),
            ],
            "responses": {
                "200": _json(_ref("MessageList"), "A page of messages"),
                "422": _error("Bad limit, before or after"),
                **_SESSION_RESPONSES,
            },
        },
    },
    "/api/backends": {
        "get": {
            "operationId": "listBackends",
            "summary": "The configured backends and their models",
            "security": _SECURED,
            "responses": {
                "200": _json(_ref("BackendList"), "The configured backends"),
                "401": _UNAUTHORIZED,
            },
        },
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Liveness",
            "security": [],
            "responses": {"200": _json(_ref("Status"), "The process is up")},
        },
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "Readiness: the store answers",
            "security": [],
            "responses": {
                "200": _json(_ref("Status"), "Ready"),
                "503": _error("The store does not answer"),
            },
        },
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        },
    },
}


def document(root_path: str = "") -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chatbot",
            "version": __version__,
            "description": "HTTP API of the chatbot server. The chat itself runs over the "
            "WebSocket at /ws/chat/; see docs/protocol.md.",
        },
        "servers": [{"url": root_path or "/"}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": _SECURED,
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(document(request.scope.get("root_path", "")))
