"""What ``chatbot serve`` checks before uvicorn takes over.

A start that cannot succeed must end within seconds with one line that names the fix. Inside
uvicorn the same failures show as a traceback (the lifespan) or as a bare ``[Errno 98]``
(the port), after several lines of its own, so the listening socket is bound and the
database opened and migrated here first, where a :class:`~chatbot.errors.ChatbotError` still
reaches the command line's one-line message.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from chatbot.errors import ConfigError
from chatbot.settings import Settings
from chatbot.stores import store_for_url


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` for uvicorn to serve on (``port`` 0: any free one)."""
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: a restart need not wait for the old connections' TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use by another program; stop it, or "
                "choose another port with --port or CHATBOT_PORT"
            ) from None
        raise ConfigError(
            f"cannot listen on {host} port {port}: {exc.strerror or exc}; choose another "
            "address with --host or CHATBOT_HOST, or another port with --port or CHATBOT_PORT"
        ) from None
    return sock


async def prepare_database(settings: Settings, *, migrate: bool) -> list[str]:
    """Open the database, apply the pending migrations when ``migrate``, and close it; the
    names of the migrations applied. A file that cannot be used raises ``ConfigError``."""
    store = store_for_url(settings.database_url, pool_size=settings.database_pool_size)
    await store.open()
    try:
        if migrate:
            return await store.migrate()
        # Reading the schema is what finds a damaged file when nothing is to be written.
        await store.applied_migrations()
        return []
    finally:
        await store.close()


def check_database(settings: Settings) -> list[str]:
    """:func:`prepare_database` as ``chatbot serve`` would have its lifespan do it."""
    return asyncio.run(prepare_database(settings, migrate=settings.auto_migrate))
