"""How the PostgreSQL store's connections exchange text and ``jsonb``: any Python string
stored and read back as it was, U+0000 included.

PostgreSQL's ``text`` cannot hold U+0000, nor can ``jsonb`` (``\\u0000``), where SQLite
stores any string. A message, a title or a client's id holding one would fail to store,
and an id in a URL holding one would fail its look-up with an error instead of "not
found". So the connections write U+0000 as two characters, U+10FFFD then ``0`` (and
U+10FFFD itself as U+10FFFD then ``m``), and read them back. The escape is reversible, so
distinct strings stay distinct (two owners never share rows), and text without either
character, nearly all of it, passes unchanged.
"""

from __future__ import annotations

import json
from typing import Any

#: A private-use character that starts every escape.
MARK = "\U0010fffd"
_JSON_ESCAPES = ("\\u0000", "\\udbff\\udffd")


def escape(text: str) -> str:
    """``text`` as stored: without U+0000."""
    if "\x00" not in text and MARK not in text:
        return text
    return text.replace(MARK, MARK + "m").replace("\x00", MARK + "0")


def unescape(text: str) -> str:
    """Undo :func:`escape`: every MARK stored begins an escape (``MARK + 0`` or
    ``MARK + m``), so each is read back in one pass per kind."""
    if MARK not in text:
        return text
    return text.replace(MARK + "0", "\x00").replace(MARK + "m", MARK)


def _escape_strings(value: Any) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {escape(str(key)): _escape_strings(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_escape_strings(item) for item in value]
    return value


def _unescape_strings(value: Any) -> Any:
    if isinstance(value, str):
        return unescape(value)
    if isinstance(value, dict):
        return {unescape(key): _unescape_strings(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_unescape_strings(item) for item in value]
    return value


def encode_json(value: Any) -> str:
    """A Python object as ``jsonb`` text, its strings escaped where they need it."""
    text = json.dumps(value)
    if any(escaped in text for escaped in _JSON_ESCAPES):
        text = json.dumps(_escape_strings(value))
    return text


def decode_json(text: str) -> Any:
    """``jsonb`` text as a Python object, its strings unescaped."""
    value = json.loads(text)
    return _unescape_strings(value) if MARK in text else value


async def prepare_connection(connection: Any) -> None:
    """Set both codecs on a new connection of the pool."""
    await connection.set_type_codec(
        "text", encoder=escape, decoder=unescape, schema="pg_catalog", format="text"
    )
    await connection.set_type_codec(
        "jsonb", encoder=encode_json, decoder=decode_json, schema="pg_catalog"
    )
