"""A real PostgreSQL for the tests: its URL from ``CHATBOT_TEST_POSTGRES_URL``, and a fresh
schema per test (its URL sets ``search_path``, which asyncpg passes to the server)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit, urlunsplit

import pytest

POSTGRES_URL = os.environ.get("CHATBOT_TEST_POSTGRES_URL", "")
needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL,
    reason="PostgreSQL tests need CHATBOT_TEST_POSTGRES_URL "
    "(e.g. postgresql://postgres@127.0.0.1:5432/test)",
)


def with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode({"search_path": schema})) if q)
    return urlunsplit(parts._replace(query=query))


@contextlib.asynccontextmanager
async def fresh_schema_url() -> AsyncIterator[str]:
    """The URL of a new, empty schema, dropped afterwards."""
    import asyncpg

    schema = f"t_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        yield with_schema(POSTGRES_URL, schema)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
