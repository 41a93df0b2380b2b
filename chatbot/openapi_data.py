"""The OpenAPI description of :mod:`chatbot.api_data`: search, export and import, shared
links. Part of the document :mod:`chatbot.openapi` serves."""

from __future__ import annotations

from typing import Any

from chatbot.api_data import IMPORT_PATH, MAX_SHARE_ID_CHARS
from chatbot.openapi_schemas import (
    ATTACHMENT,
    BAD_BODY,
    SECURED,
    SESSION_ID,
    SESSION_NOT_FOUND,
    TOO_LARGE,
    TOO_MANY_SESSIONS,
    UNAUTHORIZED,
    error,
    json_response,
    limit,
    ref,
)
from chatbot.search import MAX_QUERY_CHARS, MAX_QUERY_TERMS

_SHARE_ID = {
    "name": "share_id",
    "in": "path",
    "required": True,
    "description": f"A share id; one longer than {MAX_SHARE_ID_CHARS} characters names none",
    "schema": {"type": "string"},
}

PATHS: dict[str, Any] = {
    "/api/search": {
        "get": {
            "operationId": "search",
            "summary": "Find the caller's messages across all of their sessions, best first",
            "description": "Words match by prefix, ignoring case and accents; "
            '"quoted words" match as a phrase; nothing else is syntax. A query without '
            "a word (empty, only punctuation) finds nothing.",
            "security": SECURED,
            "parameters": [
                {
                    "name": "q",
                    "in": "query",
                    "required": False,
                    "description": f"At most {MAX_QUERY_TERMS} words and quoted phrases",
                    "schema": {"type": "string", "maxLength": MAX_QUERY_CHARS, "default": ""},
                },
                limit(20),
                {
                    "name": "cursor",
                    "in": "query",
                    "required": False,
                    "description": "next_cursor of the previous page",
                    "schema": {"type": "string", "maxLength": 64},
                },
            ],
            "responses": {
                "200": json_response(ref("SearchResults"), "A page of results"),
                "401": UNAUTHORIZED,
                "422": error(
                    f"A query of more than {MAX_QUERY_CHARS} characters or "
                    f"{MAX_QUERY_TERMS} terms, a bad limit, or a cursor this server did "
                    "not issue",
                    "invalid_query",
                    "invalid_limit",
                    "invalid_cursor",
                ),
            },
        },
    },
    "/api/sessions/{session_id}/export": {
        "parameters": [SESSION_ID],
        "get": {
            "operationId": "exportSession",
            "summary": "The session as a file: every branch as JSON, or the current one as "
            "Markdown",
            "security": SECURED,
            "parameters": [
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["json", "markdown"], "default": "json"},
                }
            ],
            "responses": {
                "200": {
                    "description": "The export, as an attachment",
                    "headers": ATTACHMENT,
                    "content": {
                        "application/json": {"schema": ref("SessionExport")},
                        "text/markdown": {"schema": {"type": "string"}},
                    },
                },
                "401": UNAUTHORIZED,
                "404": SESSION_NOT_FOUND,
                "422": error("format is neither json nor markdown", "invalid_format"),
            },
        },
    },
    IMPORT_PATH: {
        "post": {
            "operationId": "importSessions",
            "summary": "Create sessions from an export: chatbot.session.v1, a ChatGPT "
            "conversation, or ChatGPT's conversations.json array",
            "description": "Every conversation becomes a new session of the caller, with its "
            "tree and its current branch; all of them or none.",
            "security": SECURED,
            "requestBody": {
                "required": True,
                "description": "Any JSON: what it holds is checked by the server (422)",
                "content": {"application/json": {"schema": {}}},
            },
            "responses": {
                "201": json_response(ref("ImportedSessions"), "The new sessions"),
                "400": error("The body is not JSON", "invalid_json"),
                "401": UNAUTHORIZED,
                "413": error("The body is larger than CHATBOT_MAX_IMPORT_BYTES", "body_too_large"),
                "422": error("The JSON is not an export; the message says where", "invalid_import"),
                "429": TOO_MANY_SESSIONS,
            },
        },
    },
    "/api/sessions/{session_id}/shares": {
        "parameters": [SESSION_ID],
        "get": {
            "operationId": "listShares",
            "summary": "The session's shared links, newest first",
            "security": SECURED,
            "responses": {
                "200": json_response(ref("ShareList"), "The shares"),
                "401": UNAUTHORIZED,
                "404": SESSION_NOT_FOUND,
            },
        },
        "post": {
            "operationId": "createShare",
            "summary": "Share a frozen copy of the current branch, readable by anyone "
            "who has its link",
            "security": SECURED,
            "requestBody": {
                "required": False,
                "description": "No field is read",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "responses": {
                "201": json_response(ref("Share"), "The new share"),
                "400": BAD_BODY,
                "401": UNAUTHORIZED,
                "404": SESSION_NOT_FOUND,
                "413": TOO_LARGE,
                "422": error("The session holds no message yet", "empty_session"),
            },
        },
    },
    "/api/sessions/{session_id}/shares/{share_id}": {
        "parameters": [SESSION_ID, _SHARE_ID],
        "delete": {
            "operationId": "deleteShare",
            "summary": "Revoke a shared link: it answers 404 from now on",
            "security": SECURED,
            "responses": {
                "204": {"description": "Revoked"},
                "401": UNAUTHORIZED,
                "404": error("No such session for this user, or no such share of it", "not_found"),
            },
        },
    },
    "/api/shares/{share_id}": {
        "parameters": [_SHARE_ID],
        "get": {
            "operationId": "readShare",
            "summary": "A shared branch; no token: its unguessable id is the key",
            "security": [],
            "responses": {
                "200": json_response(
                    ref("SharedBranch"),
                    "The shared messages, root first",
                    headers={
                        "Cache-Control": {"required": True, "schema": {"const": "no-store"}},
                        "X-Robots-Tag": {"required": True, "schema": {"const": "noindex"}},
                    },
                ),
                "404": error("No such share, or it was revoked", "not_found"),
            },
        },
    },
}
