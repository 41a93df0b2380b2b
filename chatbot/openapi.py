"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json``.

Written by hand so that it says exactly what the handlers do; a test checks that every
route of the application is described here and nothing else is. This module describes
:mod:`chatbot.api`, :mod:`chatbot.openapi_data` the routes of :mod:`chatbot.api_data`,
:mod:`chatbot.openapi_usage` those of :mod:`chatbot.api_usage`, and
:mod:`chatbot.openapi_schemas` holds the shapes they share.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatbot import __version__, openapi_data, openapi_usage
from chatbot.openapi_schemas import (
    BAD_BODY,
    MESSAGE_ID_PATH,
    MESSAGE_OR_SESSION_NOT_FOUND,
    SCHEMAS,
    SECURED,
    SESSION_ID,
    SESSION_NOT_FOUND,
    TOO_LARGE,
    TOO_MANY_SESSIONS,
    UNAUTHORIZED,
    error,
    json_response,
    limit,
    message_id_query,
    ref,
)
from chatbot.runtime import runtime_of

_PATHS: dict[str, Any] = {
    "/api/sessions": {
        "get": {
            "operationId": "listSessions",
            "summary": "The caller's sessions, most recently active first",
            "security": SECURED,
            "parameters": [
                limit(20),
                {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}},
            ],
            "responses": {
                "200": json_response(ref("SessionList"), "A page of sessions"),
                "401": UNAUTHORIZED,
                "422": error("Bad limit or cursor", "invalid_limit", "invalid_cursor"),
            },
        },
        "post": {
            "operationId": "createSession",
            "summary": "Create a session",
            "security": SECURED,
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": ref("NewSession")}},
            },
            "responses": {
                "201": json_response(ref("Session"), "The new session"),
                "400": BAD_BODY,
                "401": UNAUTHORIZED,
                "413": TOO_LARGE,
                "422": error(
                    "An unknown field, backend or model, or a field of the wrong type or size",
                    "invalid_body",
                    "invalid_title",
                    "invalid_backend",
                    "invalid_model",
                    "invalid_system_prompt",
                    "unknown_backend",
                    "unknown_model",
                ),
                "429": TOO_MANY_SESSIONS,
            },
        },
    },
    "/api/sessions/{session_id}": {
        "parameters": [SESSION_ID],
        "get": {
            "operationId": "getSession",
            "summary": "One session",
            "security": SECURED,
            "responses": {
                "200": json_response(ref("Session"), "The session"),
                "401": UNAUTHORIZED,
                "404": SESSION_NOT_FOUND,
            },
        },
        "patch": {
            "operationId": "updateSession",
            "summary": "Rename a session and/or make another branch current",
            "description": "With leaf_id, the branch through that message becomes current, "
            "continuing down the newest child at each step; sockets on the session get a "
            "branch frame when it changes, and a title frame for a new title.",
            "security": SECURED,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("SessionUpdate")}},
            },
            "responses": {
                "200": json_response(ref("Session"), "The updated session"),
                "400": BAD_BODY,
                "401": UNAUTHORIZED,
                "404": MESSAGE_OR_SESSION_NOT_FOUND,
                "413": TOO_LARGE,
                "422": error(
                    "No field or an unknown one, a bad title or a bad leaf_id",
                    "invalid_body",
                    "invalid_title",
                    "invalid_leaf_id",
                ),
            },
        },
        "delete": {
            "operationId": "deleteSession",
            "summary": "Delete a session, its messages and its shares; sockets on it close "
            "with 4404",
            "security": SECURED,
            "responses": {
                "204": {"description": "Deleted"},
                "401": UNAUTHORIZED,
                "404": SESSION_NOT_FOUND,
            },
        },
    },
    "/api/sessions/{session_id}/messages": {
        "parameters": [SESSION_ID],
        "get": {
            "operationId": "listMessages",
            "summary": "A page of the current branch (or of the one ending at leaf_id), "
            "root first within the page",
            "security": SECURED,
            "parameters": [
                limit(50),
                message_id_query("before", "The page just above this message of the branch"),
                message_id_query("after", "The page just below this message of the branch"),
                message_id_query("leaf_id", "List the branch ending at this message"),
            ],
            "responses": {
                "200": json_response(ref("MessageList"), "A page of messages"),
                "401": UNAUTHORIZED,
                "404": error(
                    "No such session for this user, or leaf_id is no message of it",
                    "not_found",
                ),
                "422": error(
                    "A bad limit, before, after or leaf_id, or before and after together",
                    "invalid_limit",
                    "invalid_before",
                    "invalid_after",
                    "invalid_leaf_id",
                    "invalid_cursor",
                ),
            },
        },
    },
    "/api/sessions/{session_id}/messages/{message_id}": {
        "parameters": [SESSION_ID, MESSAGE_ID_PATH],
        "delete": {
            "operationId": "deleteMessage",
            "summary": "Delete a message and every message below it",
            "description": "If the current branch ran through it, the newest remaining "
            "sibling's branch becomes current, else the one ending at its parent.",
            "security": SECURED,
            "responses": {
                "204": {"description": "Deleted"},
                "401": UNAUTHORIZED,
                "404": MESSAGE_OR_SESSION_NOT_FOUND,
            },
        },
    },
    "/api/sessions/{session_id}/title": {
        "parameters": [SESSION_ID],
        "post": {
            "operationId": "makeTitle",
            "summary": "Give the session a new title now: from the title backend, else the "
            "first words of its first message",
            "security": SECURED,
            "responses": {
                "200": json_response(ref("Session"), "The session with its new title"),
                "401": UNAUTHORIZED,
                "404": SESSION_NOT_FOUND,
            },
        },
    },
    "/api/backends": {
        "get": {
            "operationId": "listBackends",
            "summary": "The configured backends and their models",
            "security": SECURED,
            "responses": {
                "200": json_response(ref("BackendList"), "The configured backends"),
                "401": UNAUTHORIZED,
            },
        },
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Liveness",
            "security": [],
            "responses": {"200": json_response(ref("Status"), "The process is up")},
        },
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "Readiness: the store and the hub answer",
            "security": [],
            "responses": {
                "200": json_response(ref("Status"), "Ready"),
                "503": error(
                    "The store or the hub does not answer; `checks` names which "
                    '(`{"store": "failed", "hub": "ok"}`)',
                    "not_ready",
                ),
            },
        },
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics, in the text exposition format (see "
            "docs/operations.md). Without CHATBOT_METRICS_TOKEN it needs no token; with it, "
            "that token as the bearer (not a user's JWT)",
            "security": [],
            "responses": {
                "200": {
                    "description": "Every series of this process (or, in multiprocess mode, "
                    "of every process)",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": {
                    **error(
                        "CHATBOT_METRICS_TOKEN is set and was not sent",
                        "missing_token",
                        "invalid_token",
                    ),
                    "headers": UNAUTHORIZED["headers"],
                },
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

#: Every path of the HTTP API, as served.
PATHS: dict[str, Any] = {**_PATHS, **openapi_data.PATHS, **openapi_usage.PATHS}


def document(root_path: str = "", *, metrics: bool = True) -> dict[str, Any]:
    """The document of the routes served; without ``metrics``, no ``/metrics``."""
    paths = PATHS if metrics else {p: item for p, item in PATHS.items() if p != "/metrics"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chatbot",
            "version": __version__,
            "description": "HTTP API of the chatbot server. The chat itself runs over the "
            "WebSocket at /ws/chat/; see docs/protocol.md. Every error has the body "
            '{"error": {"code": ..., "message": ...}}. On any path, a method it does not '
            "list answers 405 (method_not_allowed, with an Allow header), and a body "
            "larger than the server takes answers 413 (body_too_large). A session of "
            "another user answers exactly like a missing one.",
        },
        "servers": [{"url": root_path or "/"}],
        "paths": paths,
        "components": {
            "schemas": {**SCHEMAS, **openapi_usage.SCHEMAS},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
        "security": SECURED,
    }


async def openapi(request: Request) -> Response:
    metrics = runtime_of(request).settings.metrics
    return JSONResponse(document(request.scope.get("root_path", ""), metrics=metrics))
