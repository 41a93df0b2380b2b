"""What the lifespan builds and the handlers use: the store, the backends, the verifier."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from chatbot.auth import TokenVerifier
from chatbot.conversation import Conversations
from chatbot.limits import UserLimits
from chatbot.registry import BackendRegistry
from chatbot.settings import Settings
from chatbot.stores.base import SessionStore

STATE_KEY = "chatbot"


@dataclass(frozen=True)
class Runtime:
    """The live objects of one application instance, shared by its handlers."""

    settings: Settings
    store: SessionStore
    backends: BackendRegistry
    verifier: TokenVerifier
    conversations: Conversations
    limits: UserLimits


def runtime_of(connection: HTTPConnection) -> Runtime:
    """The runtime the lifespan put in the request state."""
    runtime = getattr(connection.state, STATE_KEY, None)
    if not isinstance(runtime, Runtime):
        raise RuntimeError(
            "chatbot's lifespan has not run. When mounting the chatbot app inside another "
            "app, enter its lifespan from the host's: see docs/embedding.md"
        )
    return runtime
