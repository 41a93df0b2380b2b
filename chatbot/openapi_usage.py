"""The OpenAPI description of :mod:`chatbot.api_usage`: its path and the shapes it sends.
Part of the document :mod:`chatbot.openapi` serves."""

from __future__ import annotations

from typing import Any

from chatbot.api_usage import DEFAULT_RANGE_DAYS, MAX_RANGE_DAYS
from chatbot.openapi_schemas import SECURED, UNAUTHORIZED, error, json_response, ref

_COUNT = {"type": "integer", "minimum": 0}
_LIMIT = {
    "type": ["integer", "null"],
    "minimum": 0,
    "description": "Tokens, input and output together; null: no limit",
}
_COUNTS = {
    "input_tokens": _COUNT,
    "output_tokens": _COUNT,
    "replies": {**_COUNT, "description": "Replies that reported usage"},
}
_NAME = {"type": ["string", "null"]}


def _day(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "string", "format": "date"},
    }


def _group(keys: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [*keys, *_COUNTS],
        "properties": {**keys, **_COUNTS},
        "additionalProperties": False,
    }


SCHEMAS: dict[str, Any] = {
    "UsageTotals": _group({}),
    "UsageReport": {
        "type": "object",
        "required": ["from", "to", "group_by", "groups", "total", "quota"],
        "properties": {
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "group_by": {"type": "string", "enum": ["day", "backend", "model"]},
            "groups": {
                "type": "array",
                "description": "Only groups that used tokens: by day oldest first, by backend "
                "or model by name",
                "items": {
                    "oneOf": [
                        _group({"day": {"type": "string", "format": "date"}}),
                        _group({"backend": _NAME}),
                        _group({"backend": _NAME, "model": _NAME}),
                    ]
                },
            },
            "total": ref("UsageTotals"),
            "quota": {
                "description": "The quota that applies to the caller; null: none",
                "oneOf": [
                    {"type": "null"},
                    {
                        "type": "object",
                        "required": [
                            "tokens_per_day",
                            "tokens_per_month",
                            "used_today",
                            "used_this_month",
                        ],
                        "properties": {
                            "tokens_per_day": _LIMIT,
                            "tokens_per_month": _LIMIT,
                            "used_today": _COUNT,
                            "used_this_month": _COUNT,
                        },
                        "additionalProperties": False,
                    },
                ],
            },
        },
        "additionalProperties": False,
    },
}

PATHS: dict[str, Any] = {
    "/api/usage": {
        "get": {
            "operationId": "usage",
            "summary": "The caller's token totals, per UTC day, backend or model, and their quota",
            "description": "From the ledger of tokens used: deleting a session does not "
            "lower them. Counts of a reply still being generated are added when it is "
            "stored.",
            "security": SECURED,
            "parameters": [
                _day(
                    "from",
                    f"First UTC day, included; default: the {DEFAULT_RANGE_DAYS} days ending at to",
                ),
                _day("to", "Last UTC day, included; default: today"),
                {
                    "name": "group_by",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "string",
                        "enum": ["day", "backend", "model"],
                        "default": "day",
                    },
                },
            ],
            "responses": {
                "200": json_response(ref("UsageReport"), "The totals"),
                "401": UNAUTHORIZED,
                "422": error(
                    f"A day that is not YYYY-MM-DD, from after to, more than {MAX_RANGE_DAYS} "
                    "days, or another group_by",
                    "invalid_from",
                    "invalid_to",
                    "invalid_range",
                    "invalid_group_by",
                ),
            },
        },
    },
}
