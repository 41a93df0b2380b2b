"""What the server observes of its sockets and replies, kept out of the code that serves them.

The runtime holds one :class:`Observer`. The socket endpoint and the turn tell it what
happens in one line each (a socket opened, a message refused, a model call began, a reply
was stored); it counts that in :mod:`chatbot.metrics` and writes the operator's log lines
(:func:`chatbot.logs.event`): ``socket_opened``, ``socket_closed``, ``socket_refused`` and
``reply_finished``.

No message text reaches a log unless ``CHATBOT_LOG_CONTENT`` is on, and no token ever does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from chatbot import logs
from chatbot.backends import Backend
from chatbot.errors import BackendError
from chatbot.metrics import Metrics
from chatbot.settings import Settings
from chatbot.stores.base import Message

if TYPE_CHECKING:
    from chatbot.chat.turn import Job

socket_logger = logging.getLogger("chatbot.socket")
reply_logger = logging.getLogger("chatbot.reply")
#: The ``gen_ai.operation.name`` of every model call here.
OPERATION = "chat"
#: The model label of a model the backend does not list (a session may name any model of a
#: backend that lists none): labels take a bounded set of values.
OTHER_MODEL = "other"


class Observer:
    """Counts and logs what happens to sockets and replies; the runtime holds one."""

    def __init__(
        self,
        metrics: Metrics | None = None,
        backend_types: Mapping[str, str] | None = None,
        *,
        log_content: bool = False,
    ) -> None:
        self.metrics = metrics
        #: The type (entry point) of each configured backend: its provider's name.
        self.backend_types = dict(backend_types or {})
        self.log_content = log_content

    @classmethod
    def from_settings(cls, settings: Settings) -> Observer:
        metrics = Metrics(settings.backends) if settings.metrics else None
        types = {name: config.type for name, config in settings.backends.items()}
        return cls(metrics, types, log_content=settings.log_content)

    def socket_opened(self, user_id: str, session_id: str) -> SocketWatch:
        """A socket was accepted on a session; its watch says when it closes."""
        return SocketWatch(self, user_id, session_id)

    def socket_refused(self, code: int, reason: str) -> None:
        """A socket was closed right after its upgrade (origin, token, limit, session)."""
        if self.metrics is not None:
            self.metrics.sockets_refused.labels(str(code)).inc()
        logs.event(
            socket_logger,
            "socket_refused",
            {"close_code": code, "reason": reason},
            "socket refused: %d %s",
            code,
            reason,
        )

    def message_received(self, kind: str) -> None:
        """A chat message (``message`` or ``regenerate``) was read from a socket."""
        if self.metrics is not None:
            self.metrics.messages.labels(kind).inc()

    def refused(self, reason: str) -> None:
        """A chat message was refused: ``busy``, ``rate_limited`` or ``flooding``."""
        if self.metrics is not None:
            self.metrics.refused.labels(reason).inc()

    def reply(self, job: Job, session_id: str) -> ReplyWatch:
        """The turn answering ``job`` begins; what this task logs from now on is that
        job's (its request id, its user, its session)."""
        return ReplyWatch(self, job, session_id)

    def call_labels(self, backend: Backend, model: str | None) -> tuple[str, str, str, str]:
        """The labels of a call to ``backend`` for ``model`` (see metrics.CALL_LABELS)."""
        if model is None:
            shown = ""
        elif model in backend.available_models():
            shown = model
        else:
            shown = OTHER_MODEL
        return backend.name, OPERATION, self.backend_types.get(backend.name, backend.name), shown


class SocketWatch:
    """One open socket: counted as open until :meth:`closed`."""

    # One per open socket, and idle sockets are many: no __dict__.
    __slots__ = ("_open", "observer", "started")

    def __init__(self, observer: Observer, user_id: str, session_id: str) -> None:
        self.observer = observer
        self.started = time.monotonic()
        self._open = True
        logs.bind(user_id=user_id, session_id=session_id)
        if observer.metrics is not None:
            observer.metrics.open_sockets.inc()
        logs.event(socket_logger, "socket_opened", {}, "socket opened")

    def closed(self, code: int, by: str) -> None:
        """The socket closed with ``code``, ``by`` the ``client`` or the ``server``."""
        if not self._open:
            return
        self._open = False
        metrics = self.observer.metrics
        if metrics is not None:
            metrics.open_sockets.dec()
        duration = time.monotonic() - self.started
        logs.event(
            socket_logger,
            "socket_closed",
            {"close_code": code, "closed_by": by, "duration_s": duration},
            "socket closed %d by the %s after %.3f s",
            code,
            by,
            duration,
        )


class ReplyWatch:
    """One turn: its model calls (:meth:`call`), its first text and the reply it stored."""

    __slots__ = ("_call", "first_text", "job", "observer", "started")

    def __init__(self, observer: Observer, job: Job, session_id: str) -> None:
        self.observer = observer
        self.job = job
        self.started = time.monotonic()
        self.first_text: float | None = None
        self._call: _Call | None = None
        # A job queued by another socket than the one that started this task: its own id.
        request_id = job.request_id or logs.new_request_id()
        logs.bind(request_id=request_id, user_id=job.owner, session_id=session_id)

    def call(self, backend: Backend, model: str | None) -> _Call:
        """A context manager around one model call: times it, and counts how it ended."""
        self._call = _Call(self.observer, self.observer.call_labels(backend, model))
        return self._call

    def first_chunk(self) -> None:
        """The reply's first text arrived (from the call in progress)."""
        if self.first_text is None:
            self.first_text = time.monotonic()
        if self._call is not None:
            self._call.first_chunk()

    def fell_back(self, backend: str, fallback: str) -> None:
        """``backend`` failed before its first text; ``fallback`` answers instead."""
        metrics = self.observer.metrics
        if metrics is not None:
            metrics.fallbacks.labels(backend, fallback).inc()

    def finished(self, reply: Message, error: str | None) -> None:
        """The reply was stored; ``error`` is the kind of failure the client was told of."""
        duration = time.monotonic() - self.started
        usage = reply.usage or {}
        metrics = self.observer.metrics
        if metrics is not None:
            metrics.replies.labels(reply.backend or "", reply.status).inc()
            if self._call is not None:
                for kind in ("input", "output"):
                    count = usage.get(f"{kind}_tokens")
                    if isinstance(count, int):
                        metrics.tokens.labels(*self._call.labels, kind).observe(count)
        fields: dict[str, Any] = {
            "status": reply.status,
            "backend": reply.backend,
            "model": reply.model,
            "message_id": reply.id,
            "time_to_first_token_s": (
                self.first_text - self.started if self.first_text is not None else None
            ),
            "duration_s": duration,
            "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens"),
            "error": error,
        }
        if self.observer.log_content:
            fields["user_message"] = self.job.content
            fields["reply_text"] = reply.content
        logs.event(
            reply_logger,
            "reply_finished",
            fields,
            "reply %s from %s in %.3f s",
            reply.status,
            reply.backend,
            duration,
        )


class _Call:
    """One call to a backend, as a context manager: its duration (with the kind of error it
    ended with, if any) and its time to the first text."""

    __slots__ = ("_first_seen", "labels", "metrics", "started")

    def __init__(self, observer: Observer, labels: tuple[str, str, str, str]) -> None:
        self.metrics = observer.metrics
        self.labels = labels
        self.started = time.monotonic()
        self._first_seen = False

    def first_chunk(self) -> None:
        if self.metrics is not None and not self._first_seen:
            self._first_seen = True
            self.metrics.first_chunk.labels(*self.labels).observe(time.monotonic() - self.started)

    def __enter__(self) -> _Call:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.metrics is None:
            return
        if error is None:
            error_type = ""
        elif isinstance(error, asyncio.CancelledError):
            error_type = "cancelled"
        elif isinstance(error, BackendError):
            error_type = error.kind
        else:
            # The client is told backend_error (see chatbot.chat.turn); the log has the rest.
            error_type = "backend_error"
        if error_type not in ("", "cancelled"):
            self.metrics.backend_errors.labels(self.labels[0], error_type).inc()
        self.metrics.duration.labels(*self.labels, error_type).observe(
            time.monotonic() - self.started
        )
