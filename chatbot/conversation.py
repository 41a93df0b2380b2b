"""One generation at a time per session, and every socket on the session kept in sync.

The WebSocket endpoint validates a client's message and hands it to the session's
:class:`Conversation`. The conversation queues it (a small bounded queue), and a single
worker task stores the user message, streams the backend's reply to every socket on the
session, stores the reply and only then publishes the final frame. The worker belongs to
the conversation, not to a socket: a client that disconnects does not stop its reply, and
a socket that opens on the session mid-reply is sent the text so far.

A client message ``id`` makes a message idempotent: an ``id`` already queued, in progress
or stored in the session is not run again; the stored (or in-progress) reply is delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from chatbot.backends import Backend, ChatMessage, ChatRequest, Usage
from chatbot.chat.deadlines import guarded
from chatbot.context import trim
from chatbot.errors import BackendError, DuplicateMessage, InvalidRequest, NotFound
from chatbot.registry import BackendRegistry
from chatbot.settings import Settings
from chatbot.stores.base import Message, Session, SessionStore, Status

logger = logging.getLogger("chatbot.conversation")


@dataclass(frozen=True)
class DeltaEvent:
    """A piece of the reply being generated (sent only to sockets that asked to stream)."""

    text: str
    reply_to: str | None


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


Event = DeltaEvent | ReplyEvent | ErrorEvent


class Subscriber(Protocol):
    """A socket that receives a session's events (see :mod:`chatbot.websocket`)."""

    wants_deltas: bool

    def deliver(self, event: Event) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


@dataclass
class Job:
    """A client's message waiting for its reply."""

    owner: str
    content: str
    client_id: str | None = None
    origin: Subscriber | None = None
    stream: bool = False
    #: Cancelled before the worker picked it up (a cancel sent right behind it).
    cancelled: bool = False


@dataclass
class Generation:
    """The reply being generated now: its text so far, and the task that streams it."""

    job: Job
    parts: list[str] = field(default_factory=list)
    usage: Usage | None = None
    task: asyncio.Task[None] | None = None
    cancelled: bool = False
    #: The backend (and model) answering: the session's, or one of its fallbacks.
    backend: str | None = None
    model: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)


@dataclass
class Conversation:
    """The live state of one session: its sockets, its queue, its worker."""

    session_id: str
    owner: str
    subscribers: set[Subscriber] = field(default_factory=set)
    queue: list[Job] = field(default_factory=list)
    worker: asyncio.Task[None] | None = None
    current: Generation | None = None

    def pending_ids(self) -> set[str]:
        jobs = [*self.queue, *([self.current.job] if self.current else [])]
        return {job.client_id for job in jobs if job.client_id is not None}


class Conversations:
    """All live conversations of this process, by session id."""

    def __init__(self, store: SessionStore, backends: BackendRegistry, settings: Settings) -> None:
        self.store = store
        self.backends = backends
        self.settings = settings
        self._live: dict[str, Conversation] = {}
        self._closing = False

    def _get(self, session_id: str, owner: str) -> Conversation:
        conversation = self._live.get(session_id)
        if conversation is None:
            conversation = self._live[session_id] = Conversation(session_id, owner)
        return conversation

    def _forget_if_idle(self, conversation: Conversation) -> None:
        if not conversation.subscribers and conversation.worker is None:
            self._live.pop(conversation.session_id, None)

    def subscribe(self, session: Session, subscriber: Subscriber) -> None:
        """Add a socket; if a reply is being generated, send it the text so far first."""
        conversation = self._get(session.id, session.owner)
        conversation.subscribers.add(subscriber)
        current = conversation.current
        if current is not None and current.parts and subscriber.wants_deltas:
            subscriber.deliver(DeltaEvent(current.text, current.job.client_id))

    def unsubscribe(self, session_id: str, subscriber: Subscriber) -> None:
        conversation = self._live.get(session_id)
        if conversation is not None:
            conversation.subscribers.discard(subscriber)
            self._forget_if_idle(conversation)

    def submit(self, session_id: str, job: Job) -> None:
        """Queue a message for its reply; ``InvalidRequest('busy')`` when the queue is full."""
        if self._closing:
            raise InvalidRequest(
                "busy", "the server is shutting down; send the message again shortly"
            )
        conversation = self._get(session_id, job.owner)
        if job.client_id is not None and job.client_id in conversation.pending_ids():
            # Already queued or in progress: this socket is subscribed, so the reply (and,
            # if it streams, the deltas) reaches it without a second run.
            return
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

    def enable_deltas(self, session_id: str, subscriber: Subscriber) -> None:
        """Start streaming to a socket; mid-reply, it first gets the text so far, so that
        its deltas still add up to the final text."""
        if subscriber.wants_deltas:
            return
        subscriber.wants_deltas = True
        conversation = self._live.get(session_id)
        current = conversation.current if conversation is not None else None
        if current is not None and current.parts:
            subscriber.deliver(DeltaEvent(current.text, current.job.client_id))

    def cancel(self, session_id: str) -> bool:
        """Stop the reply being answered on the session; ``False`` if there is none."""
        conversation = self._live.get(session_id)
        if conversation is None:
            return False
        if conversation.current is None:
            # The worker was started for this message but has not run yet.
            if conversation.queue and conversation.worker is not None:
                conversation.queue[0].cancelled = True
                return True
            return False
        current = conversation.current
        if current.cancelled:
            return False
        # Before the stream starts, the flag alone keeps the backend from being called.
        current.cancelled = True
        if current.task is not None:
            current.task.cancel()
        return True

    def close_session(self, session_id: str, code: int, reason: str) -> None:
        """Close every socket on a session (it was deleted) and drop its queue."""
        conversation = self._live.get(session_id)
        if conversation is None:
            return
        conversation.queue.clear()
        self.cancel(session_id)
        for subscriber in list(conversation.subscribers):
            subscriber.close(code, reason)

    async def drain(self, grace: float, code: int, reason: str) -> None:
        """Shut down: take no new message, give replies in flight ``grace`` seconds to
        finish, cancel (and store) what is left, then close every socket."""
        self._closing = True
        workers = {c.worker for c in self._live.values() if c.worker is not None}
        if workers:
            logger.info(
                "waiting up to %g s for %d repl%s in flight",
                grace,
                len(workers),
                "y" if len(workers) == 1 else "ies",
            )
            _, late = await asyncio.wait(workers, timeout=grace)
            for conversation in list(self._live.values()):
                if conversation.worker in late:
                    self.cancel(conversation.session_id)
            if late:
                # Cancelled replies are stored within moments; do not hang on a stuck one.
                await asyncio.wait(late, timeout=5)
        for conversation in list(self._live.values()):
            for subscriber in list(conversation.subscribers):
                subscriber.close(code, reason)

    async def aclose(self) -> None:
        """Cancel what is still generating and wait until it is stored."""
        await self.drain(0, 1001, "server shutting down")

    def _publish(self, conversation: Conversation, event: Event) -> None:
        for subscriber in list(conversation.subscribers):
            subscriber.deliver(event)

    async def _work(self, conversation: Conversation) -> None:
        try:
            while conversation.queue:
                job = conversation.queue.pop(0)
                try:
                    if self._closing:
                        await self._keep(conversation, job)
                    else:
                        # Current from now on, so that a cancel or a repeated id sent
                        # while the user message is being stored already finds it.
                        conversation.current = Generation(job, cancelled=job.cancelled)
                        await self._answer(conversation, conversation.current)
                except NotFound:
                    # Deleted meanwhile: close the sockets still on it, as a DELETE does.
                    self.close_session(conversation.session_id, 4404, "session not found")
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
                    conversation.current = None
        finally:
            conversation.current = None
            conversation.worker = None
            self._forget_if_idle(conversation)

    async def _keep(self, conversation: Conversation, job: Job) -> None:
        """At shutdown, store a queued message that has an id without answering it: sent
        again with that id, it is answered once. Without an id, a resend could not be told
        from a new message, so it is not stored and the client is told to send it again."""
        if job.client_id is None:
            message = "the server is shutting down; the message was not stored, send it again"
        else:
            with contextlib.suppress(DuplicateMessage):
                await self.store.add_message(
                    job.owner, conversation.session_id, role="user", content=job.content,
                    client_id=job.client_id,
                )  # fmt: skip
            message = (
                "the server is shutting down; the message was stored but not answered, "
                "send it again with the same id to get the reply"
            )
        self._publish(
            conversation,
            ErrorEvent("backend_unavailable", message, retryable=True, reply_to=job.client_id),
        )

    async def _user_message(self, job: Job, session: Session) -> tuple[Message, Message | None]:
        """Store the job's user message, or find it (and its reply) if its id is stored."""
        store = self.store
        if job.client_id is not None:
            found = await store.find_user_message(job.owner, session.id, job.client_id)
            if found is not None:
                return found, await store.find_reply(job.owner, session.id, found.id)
        try:
            stored = await store.add_message(
                job.owner, session.id, role="user", content=job.content,
                client_id=job.client_id,
            )  # fmt: skip
        except DuplicateMessage:
            # Another process stored the same id between the lookup and the insert.
            assert job.client_id is not None
            found = await store.find_user_message(job.owner, session.id, job.client_id)
            if found is None:
                raise
            return found, await store.find_reply(job.owner, session.id, found.id)
        return stored, None

    async def _answer(self, conversation: Conversation, generation: Generation) -> None:
        store = self.store
        job = generation.job
        session = await store.get_session(job.owner, conversation.session_id)
        user_message, earlier_reply = await self._user_message(job, session)
        if earlier_reply is not None and earlier_reply.status != "error":
            # Answered before: deliver the stored reply to the socket that asked again.
            # A reply that failed is answered anew instead, so that a retry can succeed.
            if job.origin is not None and job.origin in conversation.subscribers:
                job.origin.deliver(ReplyEvent(earlier_reply, job.client_id))
            return
        try:
            chain = self.backends.chain(session.backend)
        except InvalidRequest:
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
        history = await self._context(job.owner, session.id, user_message.id)
        attempts = [(backend, self._request(session, backend, history)) for backend in chain]
        # Recorded now, so that a reply cancelled before its stream starts still says whose.
        generation.backend, generation.model = chain[0].name, attempts[0][1].model
        status: Status = "complete"
        failure: BackendError | None = None
        generation.task = asyncio.create_task(
            self._stream_with_fallback(conversation, generation, attempts)
        )
        if generation.cancelled:
            generation.task.cancel()
        try:
            # Wait without being cancelled by the stream's own cancellation (a `cancel`).
            await asyncio.wait({generation.task})
            if generation.cancelled or generation.task.cancelled():
                status = "cancelled"
            else:
                generation.task.result()
        except asyncio.CancelledError:
            # The worker itself is being cancelled: stop the stream, store what we have.
            generation.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await generation.task
            status = "cancelled"
        except BackendError as exc:
            status, failure = "error", exc
            # The operator's record; the message is the backend's own, never a vendor's body.
            logger.warning(
                "backend %r failed (%s%s): %s", generation.backend, exc.kind,
                ", retryable" if exc.retryable else "", exc.message,
            )  # fmt: skip
        except Exception:
            logger.exception("backend %r failed", generation.backend)
            status = "error"
            failure = BackendError("the model backend failed", kind="backend_error")
        usage = generation.usage.as_dict() if generation.usage is not None else None
        if earlier_reply is not None:
            reply = await store.replace_reply(
                job.owner,
                session.id,
                earlier_reply.id,
                content=generation.text,
                status=status,
                backend=generation.backend,
                model=generation.model,
                usage=usage or None,
            )
        else:
            reply = await store.add_message(
                job.owner,
                session.id,
                role="assistant",
                content=generation.text,
                status=status,
                reply_to=user_message.id,
                backend=generation.backend,
                model=generation.model,
                usage=usage or None,
            )
        if failure is None:
            self._publish(conversation, ReplyEvent(reply, job.client_id))
        else:
            kept = ""
            if generation.parts:
                kept = f"; the partial reply ({len(reply.content)} characters) was stored"
            self._publish(
                conversation,
                ErrorEvent(
                    failure.kind,
                    failure.message + kept,
                    retryable=failure.retryable,
                    reply_to=job.client_id,
                ),
            )

    def _request(
        self, session: Session, backend: Backend, history: list[ChatMessage]
    ) -> ChatRequest:
        """The request for one backend of the chain: its model, prompt and budget."""
        config = self.backends.config(backend.name)
        own = backend.name == session.backend
        system_prompt = session.system_prompt or config.system_prompt or self.settings.system_prompt
        return ChatRequest(
            messages=trim(history, system_prompt, config.context_tokens),
            model=(session.model if own else None) or backend.default_model,
            system_prompt=system_prompt,
        )

    async def _stream_with_fallback(
        self,
        conversation: Conversation,
        generation: Generation,
        attempts: list[tuple[Backend, ChatRequest]],
    ) -> None:
        """Stream from the first backend of the chain that gets to its first token."""
        for index, (backend, request) in enumerate(attempts):
            generation.backend, generation.model = backend.name, request.model
            try:
                await self._stream(conversation, generation, backend, request)
                return
            except BackendError as exc:
                # Falling back after text was sent would repeat or contradict it. A session's
                # own backend failing for good (a bad key, a bad request) is reported, not
                # hidden; a failing fallback only hands over to the next one.
                last = index == len(attempts) - 1
                final = exc.kind == "backend_error" and not exc.retryable
                if generation.parts or last or (index == 0 and final):
                    raise
                logger.warning(
                    "backend %r failed before its first token (%s); %r answers instead",
                    backend.name, exc.kind, attempts[index + 1][0].name,
                )  # fmt: skip

    async def _stream(
        self,
        conversation: Conversation,
        generation: Generation,
        backend: Backend,
        request: ChatRequest,
    ) -> None:
        stream: AsyncIterator[str | Usage] = guarded(backend, request)
        try:
            async for item in stream:
                if isinstance(item, Usage):
                    generation.usage = item
                elif item:
                    generation.parts.append(item)
                    delta = DeltaEvent(item, generation.job.client_id)
                    for subscriber in list(conversation.subscribers):
                        if subscriber.wants_deltas:
                            subscriber.deliver(delta)
                    # Let the sockets' writers run even when chunks arrive all at once.
                    await asyncio.sleep(0)
        finally:
            # Closing the generator releases the upstream request (a cancel really aborts).
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _context(self, owner: str, session_id: str, upto: int) -> list[ChatMessage]:
        """The newest turns up to and including the user message ``upto`` (a message
        answered late, after a restart, must not see what was said after it)."""
        page = await self.store.list_messages(
            owner, session_id, limit=self.settings.context_messages, before=upto + 1
        )
        return [
            ChatMessage(role=m.role, content=m.content)
            for m in page.messages
            if m.content and m.status != "in_progress"
        ]
