"""A fresh, empty PostgreSQL schema per test, for every test that needs PostgreSQL.

The server to use is ``CHATBOT_TEST_POSTGRES_URL`` (e.g.
``postgresql://postgres@127.0.0.1:5432/test``); without it these tests skip. Each test gets
a schema of its own, named ``t_pg_`` and random letters, and a URL whose
``?search_path=`` points at it: asyncpg sends a query parameter libpq does not define as a
setting of each connection, so the same URL serves a :class:`PostgresStore` in the test's
process and a ``chatbot serve`` subprocess (``CHATBOT_DATABASE_URL``) alike. The schema is
dropped afterwards, with everything in it.

Use the ``postgres_url`` fixture (available to every test module through
``tests/conftest.py``), or :func:`fresh_schema` for more than one database in a test.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

VARIABLE = "CHATBOT_TEST_POSTGRES_URL"
SKIP_REASON = (
    "PostgreSQL tests need CHATBOT_TEST_POSTGRES_URL "
    "(e.g. postgresql://postgres@127.0.0.1:5432/test)"
)
#: Every schema a test makes starts with this, so that they are easy to find and drop.
SCHEMA_PREFIX = "t_pg_"


def server_url() -> str | None:
    """The PostgreSQL server the tests may use, if one is configured."""
    return os.environ.get(VARIABLE) or None


def with_search_path(url: str, schema: str) -> str:
    """``url`` with ``?search_path=schema`` (any other parameters kept)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"]
    query.append(("search_path", schema))
    return urlunsplit(parts._replace(query=urlencode(query)))


def run_sql(url: str, statement: str, *args: Any) -> Any:
    """Run one statement on a connection of its own; its rows. On a thread of its own, so
    that it works from a test's code and from inside a running event loop alike."""
    import asyncpg

    async def run() -> Any:
        connection = await asyncpg.connect(url)
        try:
            return await connection.fetch(statement, *args)
        finally:
            await connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, run()).result()


@contextlib.contextmanager
def fresh_schema(url: str | None = None) -> Iterator[str]:
    """The URL of a new, empty schema on the server (``url``, or the configured one),
    dropped with everything in it when the block ends. Skips the test without a server."""
    server = url or server_url()
    if server is None:
        pytest.skip(SKIP_REASON)
    schema = SCHEMA_PREFIX + secrets.token_hex(6)
    run_sql(server, f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(server, schema)
    finally:
        run_sql(server, f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL schema, dropped after the test."""
    with fresh_schema() as url:
        yield url
