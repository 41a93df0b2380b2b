"""Workers of several processes on one PostgreSQL: each session answered by one process at a
time, its messages in the order they were sent, wherever they arrived.

A message is queued in the database (:mod:`chatbot.stores.postgres_work`). The process that
queues it into an idle session claims the session and answers its queue until it is empty;
a message that arrives at another process meanwhile waits in that queue, and its reply
reaches every socket through the hub. Each process says it is alive every few seconds; the
sessions of a process that stopped saying so (killed, or cut off) are claimed by the next
one that looks, which answers what was left, the message in progress included: a resend of
it with the same id gets that reply rather than a second one.

At a graceful stop a process finishes (or cancels and stores) the replies in progress,
leaves the rest of its queues to the others, and the next heartbeat of another process, or
of this one after a restart, takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any

from chatbot.chat.turn import Job
from chatbot.chat.worker import Workers, _Session
from chatbot.errors import InvalidRequest, NotFound
from chatbot.hub.base import Hub
from chatbot.observe import Observer
from chatbot.registry import BackendRegistry
from chatbot.settings import Settings
from chatbot.stores import postgres_work as sql
from chatbot.stores.base import LEAF, Session, SessionStore
from chatbot.stores.usage import Quota

logger = logging.getLogger("chatbot.chat")
#: How long queueing a message may take before the client is told to send it again (a
#: database cut off without a word from the network would hold the socket forever).
SUBMIT_SECONDS = 10.0


def job_to_json(job: Job) -> dict[str, Any]:
    """A job as the ``jsonb`` of its row (the store's pool exchanges ``jsonb`` as objects)."""
    return {
        "owner": job.owner, "content": job.content, "client_id": job.client_id,
        "asker": job.asker, "parent": job.parent, "regenerate": job.regenerate,
        "reply_id": job.reply_id,
        "plan": None if job.plan is None else [job.plan.tokens_per_day, job.plan.tokens_per_month],
        "request_id": job.request_id,
    }  # fmt: skip


def job_from_json(data: dict[str, Any]) -> Job:
    parent = data.get("parent", LEAF)
    plan = data.get("plan")
    return Job(
        owner=data["owner"], content=data["content"], client_id=data.get("client_id"),
        asker=data.get("asker"), parent=parent if parent == LEAF or parent is None else int(parent),
        regenerate=bool(data.get("regenerate")), reply_id=data.get("reply_id"),
        plan=None if plan is None else Quota(plan[0], plan[1]),
        request_id=data.get("request_id"),
    )  # fmt: skip


class ClusterWorkers(Workers):
    """:class:`~chatbot.chat.worker.Workers` whose queues and turns are shared by every
    process on the database (``pool``: the store's asyncpg pool; ``process``: this one's id,
    the hub's)."""

    def __init__(
        self,
        store: SessionStore,
        backends: BackendRegistry,
        hub: Hub,
        settings: Settings,
        observer: Observer | None = None,
        *,
        pool: Any,
        process: str,
    ) -> None:
        super().__init__(store, backends, hub, settings, observer)
        self.pool = pool
        self.process = process
        self.timeout = settings.process_timeout
        self._heartbeat: asyncio.Task[None] | None = None
        #: Since when every heartbeat of this process has reached the database (``None``:
        #: the last one failed). It claims other processes' sessions only after a whole
        #: ``timeout`` of them: right after an outage every process looks dead, and the
        #: live ones must first get the chance to say they are not.
        self._steady_since: float | None = None

    async def start(self) -> None:
        await self._beat()
        self._heartbeat = asyncio.create_task(self._heartbeats(), name="chatbot-heartbeat")

    async def submit(self, session: Session, job: Job) -> None:
        if self._closing:
            raise InvalidRequest(
                "busy", "the server is shutting down; send the message again shortly"
            )
        try:
            outcome = await self.pool.fetchval(
                sql.SUBMIT, session.id, job.client_id, job_to_json(job), self.process,
                self.settings.session_queue_size, self.timeout, timeout=SUBMIT_SECONDS,
            )  # fmt: skip
        except Exception as exc:
            if type(exc).__name__ == "ForeignKeyViolationError":
                raise NotFound("session not found") from None
            logger.warning("could not queue a message (%s)", type(exc).__name__)
            raise InvalidRequest(
                "busy", "the database is unreachable; send the message again shortly"
            ) from None
        if outcome == "busy":
            raise InvalidRequest(
                "busy",
                "this session already has the maximum number of messages waiting for a "
                "reply; send again once a reply arrives",
            )
        if outcome == "claimed":
            self._run(session)
        elif outcome.startswith("first:"):
            # The only job: answered without reading it back (a round trip saved).
            self._run(session, first=(int(outcome.removeprefix("first:")), job))

    def _running(self, session_id: str) -> bool:
        busy = self._busy.get(session_id)
        return busy is not None and busy.task is not None and not busy.task.done()

    def cancel(self, session_id: str) -> bool:
        busy = self._busy.get(session_id)
        if busy is not None and busy.turn is None and busy.task is not None:
            # Between two turns (or before the first): the next one starts cancelled, as a
            # cancel sent right behind its message asks.
            busy.cancel_next = True
            return True
        return super().cancel(session_id)

    def _run(self, session: Session, first: tuple[int, Job] | None = None) -> None:
        if self._running(session.id) and first is None:
            return  # its task finds the new job (or, ending, the heartbeat starts another)
        busy = _Session(session.id)
        self._busy[session.id] = busy
        busy.task = asyncio.create_task(
            self._work(busy, session, self._claimed(busy, session.id, first)),
            name=f"chatbot-session-{session.id}",
        )

    async def _claimed(
        self, busy: _Session, session_id: str, first: tuple[int, Job] | None
    ) -> AsyncGenerator[Job, None]:
        """The session's queue in the database, oldest first, each job removed once it was
        answered, until it is empty (or this process stops, or lost the session)."""
        done: int | None = None
        while True:
            row, first = first or await self._next(session_id, done, busy.failed), None
            if row is None:
                return
            done, job = row
            yield job

    async def _next(
        self, session_id: str, done: int | None, failed: bool = False
    ) -> tuple[int, Job] | None:
        """The next job of a session this process answers, the one answered removed; on a
        database that does not answer, try again until it does (the job stays queued)."""
        wait = 0.2
        while True:
            try:
                row = await self.pool.fetchrow(
                    sql.NEXT_JOB, session_id, self.process, done, self._closing, failed
                )
            except Exception as exc:
                if self._closing:
                    return None  # the next process to start finds the queue as it is
                logger.warning(
                    "could not read the next message of a session (%s); trying again",
                    type(exc).__name__,
                )
                await asyncio.sleep(wait)
                wait = min(wait * 2, 5.0)
                continue
            if row is None or row["job_id"] is None:
                return None
            return int(row["job_id"]), job_from_json(row["job_body"])

    async def drain(self, grace: float) -> None:
        await super().drain(grace)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        try:
            await self.pool.execute(sql.LEAVE, self.process)
        except Exception as exc:
            logger.warning("could not hand this process's queues over (%s)", type(exc).__name__)

    async def _heartbeats(self) -> None:
        interval = max(0.5, self.timeout / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._beat()
            except Exception as exc:
                logger.warning("heartbeat failed (%s); trying again", type(exc).__name__)

    async def _beat(self) -> None:
        """Say this process is alive; claim the sessions others left (not while it stops:
        it still says it is alive until its last reply is stored, so that no other process
        answers that message a second time); and answer every session it holds that has
        messages waiting and no task here (claimed just now, or left by a task that ended
        as a message arrived)."""
        now = time.monotonic()
        steady = self._steady_since is not None and now - self._steady_since >= self.timeout
        try:
            await self.pool.fetch(
                sql.HEARTBEAT, self.process, self.timeout, steady and not self._closing
            )
        except Exception:
            self._steady_since = None
            raise
        if self._steady_since is None:
            self._steady_since = now
        if self._closing:
            return
        for row in await self.pool.fetch(sql.HELD, self.process):
            session_id, owner = row["session_id"], row["owner"]
            if self._running(session_id):
                continue
            try:
                if owner is None:
                    raise NotFound()
                session = await self.store.get_session(owner, session_id)
            except NotFound:
                # Answered or deleted meanwhile: let it go rather than hold it.
                await self.pool.fetchrow(sql.NEXT_JOB, session_id, self.process, None, True, False)
                continue
            logger.info("answering the messages waiting on a session this process holds")
            self._run(session)
