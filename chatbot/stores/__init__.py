"""Session stores: where sessions and their messages live.

:func:`open_store` picks the implementation from the database URL's scheme and imports it
only then, so a driver is loaded only when it is used.
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

from chatbot.errors import ConfigError
from chatbot.stores.base import Message, MessagePage, Session, SessionPage, SessionStore

__all__ = ["Message", "MessagePage", "Session", "SessionPage", "SessionStore", "store_for_url"]

STORES = {
    "sqlite": "chatbot.stores.sqlite:SQLiteStore",
    "postgresql": "chatbot.stores.postgres:PostgresStore",
    "postgres": "chatbot.stores.postgres:PostgresStore",
}
#: The stores that keep a pool of connections, whose size they take.
POOLED = frozenset({"postgresql", "postgres"})


def store_for_url(url: str, *, pool_size: int | None = None) -> SessionStore:
    """Build (but do not open) the store for a ``CHATBOT_DATABASE_URL``; ``pool_size``
    bounds the connections of a store that pools them (``CHATBOT_DATABASE_POOL_SIZE``)."""
    scheme = urlsplit(url).scheme
    target = STORES.get(scheme)
    if target is None:
        raise ConfigError(
            f"CHATBOT_DATABASE_URL has the scheme {scheme!r}, which no store handles; "
            "supported: " + ", ".join(f"{s}://" for s in sorted(STORES))
        )
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    options = {"pool_size": pool_size} if scheme in POOLED and pool_size is not None else {}
    store: SessionStore = cls(url, **options)
    return store
