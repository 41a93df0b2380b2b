"""One generation at a time per session: each session's queue and the task that works it.

:class:`Workers` takes a client's message (:meth:`Workers.submit`), queues it behind the
session's other messages (a small bounded queue), and a task per busy session answers
them in order, one :class:`~chatbot.chat.turn.Turn` each. The task belongs to the session,
not to a socket: a client that disconnects does not stop its reply. Replies and errors go
out through the hub. The recent messages of each session stay in memory between turns (a
bounded number of sessions), so the usual turn reads nothing from the store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from chatbot.chat.titles import make_title
from chatbot.chat.turn import UNKNOWN, Job, Turn, Window
from chatbot.errors import DuplicateMessage, InvalidRequest, MessageNotFound, NotFound
from chatbot.hub.base import Branch, Failure, Hub, Title
from chatbot.observe import Observer
from chatbot.quotas import QuotaCheck, default_quota
from chatbot.registry import BackendRegistry
from chatbot.settings import Settings
from chatbot.stores.base import Session, SessionStore

logger = logging.getLogger("chatbot.chat")

CLOSE_NOT_FOUND = 4404
#: Sessions whose recent messages are kept in memory between turns.
MAX_WINDOWS = 10_000


@dataclass
class _Session:
    """A busy session: its queue, its task, the turn in progress."""

    session_id: str
    queue: collections.deque[Job] = field(default_factory=collections.deque)
    task: asyncio.Task[None] | None = None
    turn: Turn | None = None
    #: Whether the last turn ended without a reply stored as answered (an error frame).
    failed: bool = False
    #: A cancel came between two turns: the next one starts cancelled.
    cancel_next: bool = False

    def pending_ids(self) -> set[str]:
        jobs = [*self.queue, *([self.turn.job] if self.turn else [])]
        return {job.client_id for job in jobs if job.client_id is not None}


class Workers:
    """Every busy session of this process, and the windows of recent ones."""

    def __init__(
        self,
        store: SessionStore,
        backends: BackendRegistry,
        hub: Hub,
        settings: Settings,
        observer: Observer | None = None,
    ) -> None:
        self.store = store
        self.observer = observer
        self.backends = backends
        self.hub = hub
        self.settings = settings
        self._busy: dict[str, _Session] = {}
        self._windows: collections.OrderedDict[str, Window] = collections.OrderedDict()
        self._closing = False
        self._titles: set[asyncio.Task[None]] = set()
        self.quota = QuotaCheck(store, default_quota(settings))
        hub.serve_cancels(self.cancel)

    async def start(self) -> None:
        """Begin (workers across processes find the work others left); the lifespan calls
        it once, after the hub has started."""

    async def submit(self, session: Session, job: Job) -> None:
        """Queue a message for its reply; ``InvalidRequest('busy')`` when the queue is full."""
        if self._closing:
            raise InvalidRequest(
                "busy", "the server is shutting down; send the message again shortly"
            )
        busy = self._busy.get(session.id)
        if busy is None:
            busy = self._busy[session.id] = _Session(session.id)
        if job.client_id is not None and job.client_id in busy.pending_ids():
            # Already queued or in progress: the asking socket is on the session, so the
            # reply (and, if it streams, the deltas) reaches it without a second run.
            return
        if len(busy.queue) >= self.settings.session_queue_size:
            raise InvalidRequest(
                "busy",
                "this session already has the maximum number of messages waiting for a "
                "reply; send again once a reply arrives",
            )
        busy.queue.append(job)
        if busy.task is None:
            busy.task = asyncio.create_task(
                self._work(busy, session, self._queued(busy, session)),
                name=f"chatbot-session-{session.id}",
            )

    def cancel(self, session_id: str) -> bool:
        """Stop the reply being answered on the session; ``False`` if there is none."""
        busy = self._busy.get(session_id)
        if busy is None:
            return False
        if busy.turn is None:
            # The task was started for this message but has not run yet.
            if busy.queue and busy.task is not None:
                busy.queue[0].cancelled = True
                return True
            return False
        return busy.turn.cancel()

    async def drain(self, grace: float) -> None:
        """Take no new message, give replies in flight ``grace`` seconds to finish, then
        cancel (and store) what is left."""
        self._closing = True
        for task in self._titles:
            task.cancel()
        tasks = {b.task for b in self._busy.values() if b.task is not None}
        if not tasks:
            return
        logger.info(
            "waiting up to %g s for %d repl%s in flight",
            grace, len(tasks), "y" if len(tasks) == 1 else "ies",
        )  # fmt: skip
        _, late = await asyncio.wait(tasks, timeout=grace) if grace > 0 else (set(), tasks)
        for busy in list(self._busy.values()):
            if busy.task in late:
                self.cancel(busy.session_id)
        if late:
            # Cancelled replies are stored within moments; do not hang on a stuck one.
            await asyncio.wait(late, timeout=5)

    def _title_after(self, window: Window, turn: Turn) -> None:
        """After the first complete reply a session gets in this process, title it if it
        has no title (in its own task: the next message does not wait for it)."""
        if window.titled or window.session.title is not None:
            return
        if turn.reply is None or turn.reply.status != "complete":
            return
        window.titled = True
        task = asyncio.create_task(self._title(turn.job.owner, window.session.id))
        self._titles.add(task)
        task.add_done_callback(self._titles.discard)

    async def _title(self, owner: str, session_id: str) -> None:
        try:
            await self.title_session(owner, session_id, only_if_untitled=True)
        except NotFound:
            pass  # deleted meanwhile
        except Exception:
            logger.exception("titling a session failed; it keeps no title")

    async def title_session(
        self, owner: str, session_id: str, *, only_if_untitled: bool
    ) -> Session | None:
        """Make a title from the start of the current branch and store it (with
        ``only_if_untitled``, only if the session still has none); the sockets on the
        session are told. The updated session, or ``None`` if it was titled meanwhile."""
        page = await self.store.list_messages(owner, session_id, limit=2, after=0)
        question = next((m.content for m in page.messages if m.role == "user"), "")
        answer = next((m.content for m in page.messages if m.role == "assistant"), "")
        name = self.settings.title_backend
        backend = self.backends.get(name) if name is not None else None
        title = await make_title(backend, question, answer)
        updated = await self.store.set_title(
            owner, session_id, title, only_if_untitled=only_if_untitled
        )
        if updated is not None:
            self.hub.publish(Title(session_id, title))
        return updated

    def _window(self, session: Session) -> Window:
        window = self._windows.pop(session.id, None)
        if window is None:
            window = Window.of(session, self.settings.context_messages)
        return window

    def _keep_window(self, window: Window) -> None:
        self._windows[window.session.id] = window
        while len(self._windows) > MAX_WINDOWS:
            self._windows.popitem(last=False)

    async def _work(
        self, busy: _Session, session: Session, jobs: AsyncGenerator[Job, None]
    ) -> None:
        """Answer ``jobs`` one after another; the session is not busy here any more when
        they run out (or the session is gone)."""
        window = self._window(session)
        try:
            async with contextlib.aclosing(jobs):
                async for job in jobs:
                    answered = await self._answer(busy, session, window, job)
                    if answered is None:
                        busy.queue.clear()
                        return
                    window = answered
            self._keep_window(window)
        finally:
            busy.task = None
            if self._busy.get(session.id) is busy:
                del self._busy[session.id]

    async def _queued(self, busy: _Session, session: Session) -> AsyncGenerator[Job, None]:
        """The session's queue in this process's memory, until it is empty; at shutdown
        each job is kept rather than answered."""
        while busy.queue:
            job = busy.queue.popleft()
            if self._closing:
                await self._keep(session, job)
                continue
            yield job

    async def _answer(
        self, busy: _Session, session: Session, window: Window, job: Job
    ) -> Window | None:
        """Answer one job; the window after it, or ``None`` if the session is gone."""
        busy.failed = True
        if busy.cancel_next:
            busy.cancel_next = False
            job.cancelled = True
        try:
            # Current from now on, so that a cancel or a repeated id sent while the user
            # message is being stored already finds it.
            busy.turn = Turn(
                job, window, store=self.store, backends=self.backends,
                publish=self.hub.publish, system_prompt=self.settings.system_prompt,
                quota=self.quota, observer=self.observer,
            )  # fmt: skip
            window = await busy.turn.run()
            reply = busy.turn.reply
            busy.failed = reply is None or reply.status == "error"
            self._title_after(window, busy.turn)
        except InvalidRequest as exc:
            # An edit of a message that is not there, a regeneration of no reply.
            window.last_id = UNKNOWN
            self.hub.publish(Failure(session.id, exc.code, exc.message, reply_to=job.client_id))
        except MessageNotFound:
            # A message the turn works on was deleted meanwhile (not the session).
            window.last_id = UNKNOWN
            self.hub.publish(
                Failure(
                    session.id,
                    "invalid_message",
                    "the message this answers was deleted meanwhile",
                    reply_to=job.client_id,
                )
            )
        except NotFound:
            # Deleted meanwhile: close the sockets still on it, as a DELETE does.
            self.hub.close_session(session.id, CLOSE_NOT_FOUND, "session not found")
            return None
        except Exception:
            logger.exception("unexpected error while answering a message")
            window = Window(session, self.settings.context_messages)
            self.hub.publish(
                Failure(
                    session.id,
                    "internal_error",
                    "the server failed to answer this message; try again",
                    retryable=True,
                    reply_to=job.client_id,
                )
            )
        finally:
            busy.turn = None
        return window

    async def _keep(self, session: Session, job: Job) -> None:
        """At shutdown, store a queued message that has an id without answering it: sent
        again with that id, it is answered once. Without an id, a resend could not be told
        from a new message, so it is not stored and the client is told to send it again.

        An edit is stored where it was sent (after its ``parent``), which makes its branch
        current as a live edit does. A regeneration stores no message of its own: nothing
        is kept, and the client is told to ask again."""
        if job.regenerate:
            message = (
                "the server is shutting down; no reply was generated, send the regeneration again"
            )
        elif job.client_id is None:
            message = "the server is shutting down; the message was not stored, send it again"
        else:
            try:
                stored = await self.store.add_user_message(
                    job.owner, session.id, content=job.content, client_id=job.client_id,
                    parent=job.parent,
                )  # fmt: skip
            except DuplicateMessage:
                pass
            except MessageNotFound:
                raise InvalidRequest(
                    "invalid_message", "parent_id is not a message of this session"
                ) from None
            else:
                if stored.message.parent_id != stored.leaf_before:
                    self.hub.publish(Branch(session.id, stored.message.id))
            message = (
                "the server is shutting down; the message was stored but not answered, "
                "send it again with the same id to get the reply"
            )
        self.hub.publish(
            Failure(session.id, "backend_unavailable", message, True, reply_to=job.client_id)
        )
