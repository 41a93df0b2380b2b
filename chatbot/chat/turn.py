"""One turn: store the user's message, build the context, stream the backend's reply to the
hub, store the reply, publish it.

A turn knows the store, the backends and a ``publish`` function, nothing of sockets. The
conversation's recent messages travel with it in a :class:`Window`, so that the usual turn
writes the store twice (the user message, then the reply) and reads nothing back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from chatbot.backends import Backend, ChatMessage, ChatRequest, Usage
from chatbot.chat.deadlines import Deadlines, guarded
from chatbot.chat.quota import refused
from chatbot.context import trim
from chatbot.errors import (
    BackendError,
    DuplicateMessage,
    DuplicateReply,
    InvalidRequest,
    MessageNotFound,
)
from chatbot.hub.base import Branch, Delta, Event, Failure, Reply, Started
from chatbot.observe import Observer
from chatbot.quotas import QuotaCheck
from chatbot.registry import BackendRegistry
from chatbot.stores.base import LEAF, Message, Session, SessionStore, Status
from chatbot.stores.usage import Quota

logger = logging.getLogger("chatbot.chat")
#: The message count of a window that must be read from the store before it is used.
UNKNOWN = -1


@dataclass
class Job:
    """A client's message waiting for its reply. ``asker`` names the socket that sent it
    (a stored reply to a repeated ``client_id`` goes to that socket only).

    A plain message continues the current branch; with ``parent`` it is an edit (a new
    branch from that message, ``None`` for a new first message). ``regenerate`` asks for a
    new reply instead of storing ``content``: to the reply ``reply_id``, else the newest one
    of the current branch."""

    owner: str
    content: str
    client_id: str | None = None
    asker: str | None = None
    #: Cancelled before its turn began (a cancel sent right behind it).
    cancelled: bool = False
    parent: int | Literal["leaf"] | None = LEAF
    regenerate: bool = False
    reply_id: int | None = None
    #: The quota plan of the sender's token (``CHATBOT_QUOTA_CLAIM``), if any.
    plan: Quota | None = None
    #: The request id of the socket that sent it, for the log lines of its turn.
    request_id: str | None = None


@dataclass
class Window:
    """A session's record and the newest messages of the branch ending at ``last_id``, as a
    backend sees them (``None``: the session is empty; ``UNKNOWN``: to be read)."""

    session: Session
    size: int
    last_id: int | None = UNKNOWN
    messages: collections.deque[ChatMessage] = field(default_factory=collections.deque)
    #: A title was asked for (once per session and process).
    titled: bool = False

    def __post_init__(self) -> None:
        self.messages = collections.deque(self.messages, maxlen=self.size)

    @classmethod
    def of(cls, session: Session, size: int) -> Window:
        """A window for a session: current if it holds no message, else to be read."""
        return cls(session, size, None if session.message_count == 0 else UNKNOWN)

    def follows(self, message: Message) -> bool:
        """Whether ``message`` continues the branch this window holds."""
        return self.last_id != UNKNOWN and message.parent_id == self.last_id

    def reset(self, messages: list[Message]) -> None:
        """Hold the branch ending at the last of ``messages``."""
        self.messages = collections.deque(
            (ChatMessage(role=m.role, content=m.content) for m in messages if _context(m)),
            maxlen=self.size,
        )
        self.last_id = messages[-1].id if messages else None

    def add(self, message: Message) -> None:
        self.last_id = message.id
        if _context(message):
            self.messages.append(ChatMessage(role=message.role, content=message.content))


def _context(message: Message) -> bool:
    """Whether a stored message is part of what a backend sees."""
    return bool(message.content) and message.status != "in_progress"


class Turn:
    """Answers one :class:`Job` on one session."""

    def __init__(
        self,
        job: Job,
        window: Window,
        *,
        store: SessionStore,
        backends: BackendRegistry,
        publish: Callable[[Event], None],
        system_prompt: str | None = None,
        quota: QuotaCheck | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.job = job
        self.quota = quota
        self.window = window
        self.session = window.session
        self.store = store
        self.backends = backends
        self.publish = publish
        self.system_prompt = system_prompt
        self.cancelled = job.cancelled
        self.parts: list[str] = []
        self.usage: Usage | None = None
        self.backend: str | None = None
        self.model: str | None = None
        #: The reply this turn stored, once it has.
        self.reply: Message | None = None
        self._task: asyncio.Task[Any] | None = None
        self.watch = (observer or Observer()).reply(job, window.session.id)

    def cancel(self) -> bool:
        """Stop the reply (before the stream starts, the flag alone keeps the backend from
        being called); ``False`` if it was already cancelled."""
        if self.cancelled:
            return False
        self.cancelled = True
        if self._task is not None:
            self._task.cancel()
        return True

    async def run(self) -> Window:
        """Answer the job; the window as it stands after the turn."""
        if self.job.regenerate:
            return await self._regenerate()
        job, session = self.job, self.session
        if self.quota is not None and await refused(
            self.quota, self.store, job, session.id, self.publish
        ):
            return self.window
        try:
            stored = await self.store.add_user_message(
                job.owner, session.id, content=job.content, client_id=job.client_id,
                parent=job.parent,
            )  # fmt: skip
        except MessageNotFound:
            raise InvalidRequest(
                "invalid_message", "parent_id is not a message of this session"
            ) from None
        except DuplicateMessage as known:
            earlier = known.reply
            if earlier is not None and earlier.status != "error":
                # Answered before: the stored reply goes to the socket that asked again. A
                # reply that failed is answered anew instead, so that a retry can succeed.
                self.publish(Reply(session.id, earlier, job.client_id, only=job.asker))
                return self.window
            # Stored earlier and not answered (or answered with an error): answer it from the
            # conversation as it stood when it was sent. Rare: the window is read again next.
            history = await self._path(known.message.id)
            await self._answer(known.message, history, earlier)
            self.window.last_id = UNKNOWN
            return self.window
        message = stored.message
        if message.parent_id != stored.leaf_before:
            # An edit: its branch is current now.
            self.publish(Branch(session.id, message.id))
        if self.window.follows(message):
            self.window.add(message)
        else:
            # Not all in memory (a session opened again, another branch, or written by
            # another process meanwhile): read the branch's newest messages once.
            self.window.reset(await self._path(message.id))
        reply = await self._answer(message, list(self.window.messages), None)
        if reply is not None and self.window.follows(reply):
            self.window.add(reply)
        else:
            self.window.last_id = UNKNOWN
        return self.window

    async def _regenerate(self) -> Window:
        """A new reply to the user message of an earlier one, as its sibling; the branch
        through that user message becomes current while it is generated."""
        job, session = self.job, self.session
        if job.client_id is not None:
            known = await self.store.find_user_message(
                job.owner, session.id, job.client_id, "assistant"
            )
            if known is not None:
                self.publish(Reply(session.id, known, job.client_id, only=job.asker))
                return self.window
        if self.quota is not None and await refused(
            self.quota, self.store, job, session.id, self.publish
        ):
            return self.window
        try:
            if job.reply_id is None:
                old = await self.store.newest_reply(job.owner, session.id)
                if old is None:
                    raise InvalidRequest("invalid_message", "there is no reply to regenerate")
            else:
                old = await self.store.get_message(job.owner, session.id, job.reply_id)
        except MessageNotFound:
            raise InvalidRequest(
                "invalid_message", "message_id is not a message of this session"
            ) from None
        if old.role != "assistant" or old.parent_id is None:
            raise InvalidRequest("invalid_message", "message_id must name a reply")
        # The user message it answers: its parent, but for a reply stored late in a
        # conversation from before branches, which follows whatever was listed before it.
        asked = old.reply_to if old.reply_to is not None else old.parent_id
        question = await self.store.get_message(job.owner, session.id, asked)
        # The old reply leaves the current branch: every socket is told.
        await self.store.switch_branch(job.owner, session.id, question.id, descend=False)
        self.publish(Branch(session.id, question.id))
        history = await self._path(question.id)
        self.window.reset(history)
        reply = await self._answer(question, history, None)
        if reply is not None and self.window.follows(reply):
            self.window.add(reply)
        else:
            self.window.last_id = UNKNOWN
        return self.window

    async def _path(self, message_id: int) -> list[Message]:
        """The newest messages of the branch ending at ``message_id`` (a message answered
        late, after a restart, must not see what was said after it)."""
        return await self.store.branch_to(
            self.job.owner, self.session.id, message_id, limit=self.window.size
        )

    async def _answer(
        self,
        user_message: Message,
        history: list[Message] | list[ChatMessage],
        earlier: Message | None,
    ) -> Message | None:
        job, session = self.job, self.session
        try:
            chain = self.backends.chain(session.backend)
        except InvalidRequest:
            self.publish(
                Failure(
                    session.id,
                    "backend_unavailable",
                    f"this session's backend {session.backend!r} is no longer configured; "
                    "start a new session",
                    reply_to=job.client_id,
                )
            )
            return None
        context = [
            m if isinstance(m, ChatMessage) else ChatMessage(role=m.role, content=m.content)
            for m in history
            if isinstance(m, ChatMessage) or _context(m)
        ]
        attempts = [(backend, self._request(backend, context)) for backend in chain]
        # Recorded now, so that a reply cancelled before its stream starts still says whose.
        self.backend, self.model = chain[0].name, attempts[0][1].model
        status, failure = await self._generate(attempts)
        usage = self.usage.as_dict() if self.usage is not None else None
        try:
            reply = await self.store.add_reply(
                job.owner,
                session.id,
                reply_to=user_message.id,
                content="".join(self.parts),
                status=status,
                backend=self.backend,
                model=self.model,
                usage=usage or None,
                replacing=earlier.id if earlier is not None else None,
                client_id=job.client_id if job.regenerate else None,
            )
        except MessageNotFound:
            self.publish(
                Failure(
                    session.id,
                    "invalid_message",
                    "the message this reply answers was deleted; the reply was not stored",
                    reply_to=job.client_id,
                )
            )
            return None
        except DuplicateReply as known:
            # The same regeneration, answered meanwhile by another process.
            if known.reply is not None:
                self.publish(Reply(session.id, known.reply, job.client_id, only=job.asker))
            return None
        self.reply = reply
        self.watch.finished(reply, failure.kind if failure is not None else None)
        if failure is None:
            self.publish(Reply(session.id, reply, job.client_id))
        else:
            kept = ""
            if self.parts:
                kept = f"; the partial reply ({len(reply.content)} characters) was stored"
            self.publish(
                Failure(
                    session.id,
                    failure.kind,
                    failure.message + kept,
                    retryable=failure.retryable,
                    reply_to=job.client_id,
                )
            )
        return reply

    async def _generate(
        self, attempts: list[tuple[Backend, ChatRequest]]
    ) -> tuple[Status, BackendError | None]:
        """Stream the reply; how it ended, and the failure to report, if any. It streams in
        the worker's own task (no task of its own): a cancel cancels that task while it
        streams, and is taken back here."""
        if self.cancelled:
            # Cancelled before the stream started: the backend is not called at all.
            return "cancelled", None
        self._task = asyncio.current_task()
        try:
            await self._stream_with_fallback(attempts)
        except asyncio.CancelledError:
            # A cancel (or the worker itself being cancelled): stop the stream, which the
            # closing of its generator has done, and store what we have.
            if self._task is not None:
                self._task.uncancel()
            return "cancelled", None
        except BackendError as exc:
            # The operator's record; the message is the backend's own, never a vendor's body.
            logger.warning(
                "backend %r failed (%s%s): %s", self.backend, exc.kind,
                ", retryable" if exc.retryable else "", exc.message,
            )  # fmt: skip
            return "error", exc
        except Exception:
            logger.exception("backend %r failed", self.backend)
            return "error", BackendError("the model backend failed", kind="backend_error")
        finally:
            self._task = None
        return "complete", None

    def _request(self, backend: Backend, history: list[ChatMessage]) -> ChatRequest:
        """The request for one backend of the chain: its model, prompt and budget."""
        session = self.session
        config = self.backends.config(backend.name)
        own = backend.name == session.backend
        system_prompt = session.system_prompt or config.system_prompt or self.system_prompt
        return ChatRequest(
            messages=trim(history, system_prompt, config.context_tokens),
            model=(session.model if own else None) or backend.default_model,
            system_prompt=system_prompt,
        )

    async def _stream_with_fallback(self, attempts: list[tuple[Backend, ChatRequest]]) -> None:
        """Stream from the first backend of the chain that gets to its first token."""
        for index, (backend, request) in enumerate(attempts):
            self.backend, self.model = backend.name, request.model
            try:
                with self.watch.call(backend, request.model):
                    await self._attempt(backend, request)
                return
            except BackendError as exc:
                # Falling back after text was sent would repeat or contradict it. A session's
                # own backend failing for good (a bad key, a bad request) is reported, not
                # hidden; a failing fallback only hands over to the next one.
                last = index == len(attempts) - 1
                final = exc.kind == "backend_error" and not exc.retryable
                if self.parts or last or (index == 0 and final):
                    raise
                self.watch.fell_back(backend.name, attempts[index + 1][0].name)
                logger.warning(
                    "backend %r failed before its first token (%s); %r answers instead",
                    backend.name, exc.kind, attempts[index + 1][0].name,
                )  # fmt: skip

    async def _attempt(self, backend: Backend, request: ChatRequest) -> None:
        """Stream one backend's reply within its deadlines."""
        deadlines = Deadlines(backend)
        try:
            await self._stream(backend, request, deadlines)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if deadlines.passed is None or self.cancelled or task is None or task.cancelling() > 1:
                raise  # a cancel, not a deadline
            task.uncancel()
            raise deadlines.error() from None
        finally:
            deadlines.disarm()

    async def _stream(self, backend: Backend, request: ChatRequest, deadlines: Deadlines) -> None:
        session_id, reply_to = self.session.id, self.job.client_id
        started = False
        async with contextlib.aclosing(guarded(backend, request, deadlines)) as items:
            async for item in items:
                if isinstance(item, Usage):
                    self.usage = item
                elif item:
                    if not started:
                        started = True
                        self.publish(Started(session_id, reply_to))
                        self.watch.first_chunk()
                    self.parts.append(item)
                    self.publish(Delta(session_id, item, reply_to))
                    # Let the sockets' writers run even when chunks arrive all at once.
                    await asyncio.sleep(0)
