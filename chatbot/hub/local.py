"""The hub of one process: events go straight to the listeners in memory."""

from __future__ import annotations

import logging

from chatbot.hub.base import (
    CancelHandler,
    Closed,
    Delta,
    Event,
    Failure,
    Hub,
    InProgress,
    Listener,
    Reply,
    Started,
)

logger = logging.getLogger("chatbot.hub")


class _Progress:
    __slots__ = ("parts", "reply_to")

    def __init__(self, reply_to: str | None) -> None:
        self.reply_to = reply_to
        self.parts: list[str] = []


class LocalHub(Hub):
    """Listeners by session, and the text of each reply in progress, in this process."""

    def __init__(self) -> None:
        self._listeners: dict[str, dict[Listener, None]] = {}
        self._progress: dict[str, _Progress] = {}
        self._cancel: CancelHandler | None = None

    def subscribe(self, session_id: str, listener: Listener) -> None:
        self._listeners.setdefault(session_id, {})[listener] = None

    def unsubscribe(self, session_id: str, listener: Listener) -> None:
        listeners = self._listeners.get(session_id)
        if listeners is not None:
            listeners.pop(listener, None)
            if not listeners:
                del self._listeners[session_id]

    def publish(self, event: Event) -> None:
        session_id = event.session_id
        if isinstance(event, Delta):
            progress = self._progress.get(session_id)
            if progress is not None:
                progress.parts.append(event.text)
        elif isinstance(event, Started):
            self._progress[session_id] = _Progress(event.reply_to)
        elif isinstance(event, Reply | Failure | Closed) and not getattr(event, "only", None):
            self._progress.pop(session_id, None)
        listeners = self._listeners.get(session_id)
        if not listeners:
            return
        for listener in list(listeners):
            try:
                listener(event)
            except Exception:
                # One broken socket must not keep the event from the others.
                logger.exception("a listener failed on an event of a session")

    def snapshot(self, session_id: str) -> InProgress | None:
        progress = self._progress.get(session_id)
        if progress is None or not progress.parts:
            return None
        text = "".join(progress.parts)
        progress.parts = [text]
        return InProgress(progress.reply_to, text)

    def has_listeners(self, session_id: str) -> bool:
        """Whether a socket of this process is on the session."""
        return session_id in self._listeners

    def sessions(self) -> list[str]:
        """The sessions a socket of this process is on."""
        return list(self._listeners)

    def forget(self, session_id: str) -> None:
        """Drop the session's reply in progress (it ended where this hub did not see it)."""
        self._progress.pop(session_id, None)

    def forget_all(self, *, keep: set[str]) -> None:
        """Drop every reply in progress but those of the sessions in ``keep``."""
        for session_id in [s for s in self._progress if s not in keep]:
            del self._progress[session_id]

    def serve_cancels(self, handler: CancelHandler) -> None:
        self._cancel = handler

    def cancel(self, session_id: str) -> None:
        if self._cancel is not None:
            self._cancel(session_id)
