"""What the lifespan builds and the handlers use: the store, the backends, the verifier,
the hub, the session workers, the open sockets and the observer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from chatbot.auth import TokenVerifier
from chatbot.chat.worker import Workers
from chatbot.hub.base import Hub
from chatbot.limits import UserLimits
from chatbot.observe import Observer
from chatbot.registry import BackendRegistry
from chatbot.settings import Settings
from chatbot.stores.base import SessionStore

if TYPE_CHECKING:
    from chatbot.connection import Sockets

STATE_KEY = "chatbot"


@dataclass(frozen=True)
class Runtime:
    """The live objects of one application instance, shared by its handlers."""

    settings: Settings
    store: SessionStore
    backends: BackendRegistry
    verifier: TokenVerifier
    hub: Hub
    workers: Workers
    limits: UserLimits
    sockets: Sockets
    #: Counts and logs what happens to sockets and replies (chatbot.observe).
    observer: Observer

    async def drain(self, grace: float, code: int, reason: str) -> None:
        """Shut down gracefully: take no new message, give the replies in flight ``grace``
        seconds to finish (their final frames still reach the sockets), cancel and store
        what is left, then close every socket with ``code`` and wait until each has sent
        its last frame. A second drain finds nothing left to do."""
        await self.workers.drain(grace)
        await self.sockets.close_all(code, reason, wait=self.settings.send_timeout)


def runtime_of(connection: HTTPConnection) -> Runtime:
    """The runtime the lifespan put in the request state."""
    runtime = getattr(connection.state, STATE_KEY, None)
    if not isinstance(runtime, Runtime):
        raise RuntimeError(
            "chatbot's lifespan has not run. When mounting the chatbot app inside another "
            "app, enter its lifespan from the host's: see docs/embedding.md"
        )
    return runtime
