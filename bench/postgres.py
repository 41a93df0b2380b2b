"""The PostgreSQL of a run (``python -m bench --postgres URL``): a fresh schema for each
database a scenario asks for, created before its servers start and dropped afterwards, so
that runs (and scenarios) never see each other's rows, sessions or notifications.

The servers reach their schema through the URL's ``?search_path=``, as an operator sharing
one database between deployments would; the hub's channel follows the schema.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def with_schema(url: str, schema: str) -> str:
    """``url`` whose connections use ``schema`` (its ``search_path``)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "search_path"]
    return urlunsplit(parts._replace(query=urlencode([*query, ("search_path", schema)])))


@contextlib.asynccontextmanager
async def fresh_schema(url: str, name: str) -> AsyncIterator[str]:
    """A new, empty schema on the database of ``url`` for the time of the block: its URL.
    The servers on it create chatbot's tables at start (``auto_migrate``)."""
    import asyncpg  # only a run on PostgreSQL needs the driver

    schema = f"bench_{name.replace('-', '_')}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield with_schema(url, schema)
        finally:
            await admin.execute(f"DROP SCHEMA {schema} CASCADE")
    finally:
        await admin.close()
