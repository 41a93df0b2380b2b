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
}


def store_for_url(url: str) -> SessionStore:
    """Build (but do not open) the store for a ``CHATBOT_DATABASE_URL``."""
    scheme = urlsplit(url).scheme
    target = STORES.get(scheme)
    if target is None:
        raise ConfigError(
            f"CHATBOT_DATABASE_URL has the scheme {scheme!r}, which no store handles; "
            "supported: " + ", ".join(f"{s}://" for s in sorted(STORES))
        )
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    store: SessionStore = cls(url)
    return store
