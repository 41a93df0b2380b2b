"""How a process shares its work: alone, or with the other processes on its database.

On SQLite the server is one process: a :class:`~chatbot.hub.local.LocalHub` carries the
events and :class:`~chatbot.chat.worker.Workers` keep the queues in memory. On PostgreSQL
any number of processes share the database: a :class:`~chatbot.hub.postgres.PostgresHub`
carries events between them over ``LISTEN``/``NOTIFY`` and
:class:`~chatbot.chat.cluster.ClusterWorkers` keep the queues in the database, so that a
load balancer may send any request to any process. Nothing else is needed: no Redis, no
sticky sessions.
"""

from __future__ import annotations

from chatbot.chat.worker import Workers
from chatbot.hub.base import Hub
from chatbot.hub.local import LocalHub
from chatbot.observe import Observer
from chatbot.registry import BackendRegistry
from chatbot.settings import Settings
from chatbot.stores.base import SessionStore


def shares_work(store: SessionStore) -> bool:
    """Whether the store is one several processes share (it has a connection pool)."""
    return getattr(store, "pool", None) is not None and hasattr(store, "message_by_id")


def build(
    store: SessionStore,
    backends: BackendRegistry,
    settings: Settings,
    observer: Observer | None = None,
) -> tuple[Hub, Workers]:
    """The hub and the workers for ``store`` (not started)."""
    if not shares_work(store):
        hub = LocalHub()
        return hub, Workers(store, backends, hub, settings, observer)
    from chatbot.chat.cluster import ClusterWorkers
    from chatbot.hub.postgres import PostgresHub

    shared = PostgresHub(
        settings.database_url,
        load_reply=store.message_by_id,  # type: ignore[attr-defined]
        load_newest=store.newest_replies,  # type: ignore[attr-defined]
    )
    workers = ClusterWorkers(
        store, backends, shared, settings, observer,
        pool=store.pool, process=shared.process,  # type: ignore[attr-defined]
    )  # fmt: skip
    return shared, workers
