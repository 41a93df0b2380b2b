"""One generation at a time per session, and every socket on the session kept in sync.

The WebSocket endpoint validates a client's message and hands it to the session's
:class:`Conversation`. The conversation queues it (a small bounded queue), and a single
worker task stores the user message, calls the backend, stores the reply and only then
publishes it to every socket subscribed to the session. The worker belongs to the
conversation, not to a socket: a client that disconnects does not stop its reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from chatbot.backends import BackendRegistry, ChatMessage, ChatRequest, Usage
from chatbot.errors import BackendError, InvalidRequest, NotFound
from chatbot.settings import Settings
from chatbot.stores.base import Message, Session, SessionStore, Status

logger = logging.getLogger("chatbot.conversation")


@dataclass(frozen=True)
class ReplyEvent:
    """A stored assistant message, ready to be sent as a reply frame."""

    message: Message
    reply_to: str | None


@dataclass(frozen=True)
class ErrorEvent:
    """A recoverable failure, sent as an error frame."""

    code: str
    message: str
    retryable: bool = False
    reply_to: str | None = None


Event = ReplyEvent | ErrorEvent


class Subscriber(Protocol):
    """A socket that receives a session's events (see :mod:`chatbot.websocket`)."""

    def deliver(self, event: Event) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


@dataclass
class Job:
    """A client's message waiting for its reply."""

    owner: str
    content: str
    client_id: str | None = None
    origin: Subscriber | None = None


@dataclass
class Conversation:
    """The live state of one session: its sockets, its queue, its worker."""

    session_id: str
    owner: str
    subscribers: set[Subscriber] = field(default_factory=set)
    queue: list[Job] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None


class Conversations:
    """All live conversations of this process, by session id."""

    def __init__(self, store: SessionStore, backends: BackendRegistry, settings: Settings) -> None:
        self.store = store
        self.backends = backends
        self.settings = settings
        self._live: dict[str, Conversation] = {}

    def _get(self, session_id: str, owner: str) -> Conversation:
        conversation = self._live.get(session_id)
        if conversation is None:
            conversation = self._live[session_id] = Conversation(session_id, owner)
        return conversation

    def _forget_if_idle(self, conversation: Conversation) -> None:
        if not conversation.subscribers and conversation.worker is None:
            self._live.pop(conversation.session_id, None)

    def subscribe(self, session: Session, subscriber: Subscriber) -> None:
        self._get(session.id, session.owner).subscribers.add(subscriber)

    def unsubscribe(self, session_id: str, subscriber: Subscriber) -> None:
        conversation = self._live.get(session_id)
        if conversation is not None:
            conversation.subscribers.discard(subscriber)
            self._forget_if_idle(conversation)

    def submit(self, session_id: str, job: Job) -> None:
        """Queue a message for its reply; ``InvalidRequest('busy')`` when the queue is full."""
        conversation = self._get(session_id, job.owner)
        if len(conversation.queue) >= self.settings.session_queue_size:
            raise InvalidRequest(
                "busy",
                "this session already has the maximum number of messages waiting for a "
                "reply; send again once a reply arrives",
            )
        conversation.queue.append(job)
        if conversation.worker is None:
            conversation.worker = asyncio.create_task(
                self._work(conversation), name=f"chatbot-conversation-{session_id}"
            )

    def close_session(self, session_id: str, code: int, reason: str) -> None:
        """Close every socket on a session (it was deleted) and drop its queue."""
        conversation = self._live.get(session_id)
        if conversation is None:
            return
        conversation.queue.clear()
        for subscriber in list(conversation.subscribers):
            subscriber.close(code, reason)

    async def aclose(self) -> None:
        """Wait for the workers in flight (the application is shutting down)."""
        workers = [c.worker for c in self._live.values() if c.worker is not None]
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    def _publish(self, conversation: Conversation, event: Event) -> None:
        for subscriber in list(conversation.subscribers):
            subscriber.deliver(event)

    async def _work(self, conversation: Conversation) -> None:
        try:
            while conversation.queue:
                job = conversation.queue.pop(0)
                try:
                    await self._answer(conversation, job)
                except NotFound:
                    conversation.queue.clear()
                except Exception:
                    logger.exception("unexpected error while answering a message")
                    self._publish(
                        conversation,
                        ErrorEvent(
                            "internal_error",
                            "the server failed to answer this message; try again",
                            retryable=True,
                            reply_to=job.client_id,
                        ),
                    )
        finally:
            conversation.worker = None
            self._forget_if_idle(conversation)

    async def _answer(self, conversation: Conversation, job: Job) -> None:
        store = self.store
        session = await store.get_session(job.owner, conversation.session_id)
        user_message = await store.add_message(
            job.owner,
            session.id,
            role="user",
            content=job.content,
            client_id=job.client_id,
        )
        try:
            backend = self.backends.get(session.backend)
        except InvalidRequest:
            backend = None
        if backend is None:
            self._publish(
                conversation,
                ErrorEvent(
                    "backend_unavailable",
                    f"this session's backend {session.backend!r} is no longer configured; "
                    "start a new session",
                    reply_to=job.client_id,
                ),
            )
            return
        model = session.model or backend.default_model
        request = ChatRequest(
            messages=await self._context(job.owner, session.id),
            model=model,
            system_prompt=session.system_prompt or self.settings.system_prompt,
        )
        parts: list[str] = []
        usage: Usage | None = None
        status: Status = "complete"
        failure: BackendError | None = None
        try:
            stream = backend.stream(request)
            try:
                async for item in stream:
                    if isinstance(item, Usage):
                        usage = item
                    else:
                        parts.append(item)
            finally:
                await _aclose(stream)
        except BackendError as exc:
            status, failure = "error", exc
        except Exception:
            logger.exception("backend %r failed", backend.name)
            status = "error"
            failure = BackendError("the model backend failed", kind="backend_error")
        reply = await store.add_message(
            job.owner,
            session.id,
            role="assistant",
            content="".join(parts),
            status=status,
            reply_to=user_message.id,
            backend=backend.name,
            model=model,
            usage=usage.as_dict() if usage is not None and usage.as_dict() else None,
        )
        if failure is None:
            self._publish(conversation, ReplyEvent(reply, job.client_id))
        else:
            kept = (
                f"; the partial reply ({len(reply.content)} characters) was stored" if parts else ""
            )
            self._publish(
                conversation,
                ErrorEvent(
                    failure.kind,
                    failure.message + kept,
                    retryable=failure.retryable,
                    reply_to=job.client_id,
                ),
            )

    async def _context(self, owner: str, session_id: str) -> list[ChatMessage]:
        page = await self.store.list_messages(
            owner, session_id, limit=self.settings.context_messages
        )
        return [
            ChatMessage(role=m.role, content=m.content)
            for m in page.messages
            if m.content and m.status != "in_progress"
        ]


async def _aclose(stream: object) -> None:
    close: Callable[[], object] | None = getattr(stream, "aclose", None)
    if close is not None:
        result = close()
        if asyncio.iscoroutine(result):
            await result
