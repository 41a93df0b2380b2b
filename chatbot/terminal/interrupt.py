"""Ctrl-C in ``chatbot chat``: one KeyboardInterrupt in the main thread for each press, also
when it comes while readline is drawing the prompt."""

from __future__ import annotations

import _thread
import collections
import contextlib
import select
import signal
import socket
import threading
import time
from types import FrameType

#: How often the main thread is nudged until it has raised the Ctrl-C.
NUDGE_INTERVAL = 0.05
#: False on Windows, which has no readline either: Python's own handling of Ctrl-C stays.
_THREAD_SIGNALS = hasattr(signal, "pthread_kill")


class CtrlC:
    """Raises each Ctrl-C in the main thread as KeyboardInterrupt, wherever it waits.

    Python runs a signal's handler in the main thread between two steps of Python code.
    ``input()`` with readline waits for a key in ``select()``, and only runs the handlers
    when a signal interrupts that wait: a SIGINT that comes after ``input()`` has begun but
    before ``select()`` (the prompt being drawn) would wait for the next key. So SIGINT's
    own handler does nothing but have its number written to a socket
    (``signal.set_wakeup_fd``); a thread of its own reads it and nudges the main thread with
    SIGUSR1, again and again until the nudge's handler has raised that Ctrl-C: a nudge with
    no Ctrl-C left to raise does nothing. Which thread the kernel hands SIGINT to does not
    matter either.
    """

    def __init__(self) -> None:
        self._main = threading.get_ident()
        #: One entry per Ctrl-C the main thread has still to raise.
        self._pending: collections.deque[int] = collections.deque()
        self._open = True
        if not _THREAD_SIGNALS:
            return
        self._nudge = signal.SIGUSR1
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)  # a signal handler must never wait
        self._old_wakeup = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._old_handlers = {
            signal.SIGINT: signal.signal(signal.SIGINT, _noted),
            self._nudge: signal.signal(self._nudge, self._raise),
        }
        self._thread = threading.Thread(target=self._watch, name="ctrl-c", daemon=True)
        self._thread.start()

    def interrupt(self) -> None:
        """From any thread: a KeyboardInterrupt in the main thread, as a Ctrl-C would."""
        if not _THREAD_SIGNALS:
            _thread.interrupt_main()
            return
        with contextlib.suppress(OSError):  # closed: the chat is over anyway
            self._writer.send(bytes([signal.SIGINT]))

    def _raise(self, number: int, frame: FrameType | None) -> None:
        # The nudge, in the main thread: only the watcher's count says whether there is a
        # Ctrl-C to raise, so that each one is raised exactly once. SIGINT's own handler
        # raises nothing: once readline has returned on a KeyboardInterrupt, input() runs
        # the pending handlers again, the nudge sent for that Ctrl-C may be one of them,
        # and a handler that returns then becomes a SystemError.
        if self._open and self._pending:
            self._pending.popleft()
            raise KeyboardInterrupt

    def _watch(self) -> None:
        nudge_at = 0.0
        while True:
            timeout = None
            if self._pending:
                now = time.monotonic()
                if now >= nudge_at:
                    signal.pthread_kill(self._main, self._nudge)
                    nudge_at = now + NUDGE_INTERVAL
                timeout = nudge_at - now
            readable, _, _ = select.select([self._reader], [], [], timeout)
            if readable:
                numbers = self._reader.recv(512)
                if not numbers:
                    return  # closed
                # Each signal writes its number; the nudges' own are not Ctrl-Cs.
                self._pending.extend(n for n in numbers if n == signal.SIGINT)

    def close(self) -> None:
        """Stop watching; SIGINT and SIGUSR1 get their previous handlers back."""
        if not _THREAD_SIGNALS:
            return
        self._open = False  # from now on a late nudge or Ctrl-C raises nothing
        signal.set_wakeup_fd(self._old_wakeup)
        self._writer.close()
        self._thread.join()  # no nudge after this: SIGUSR1's default would end the process
        for number, handler in self._old_handlers.items():
            if handler is not None:
                signal.signal(number, handler)
        self._reader.close()


def _noted(number: int, frame: FrameType | None) -> None:
    """SIGINT: nothing to do here; its number is on its way to the watcher."""


def read_line(prompt: str) -> str:
    """``input(prompt)``, where a Ctrl-C is always a KeyboardInterrupt."""
    try:
        return input(prompt)
    except SystemError as exc:
        # Once readline has returned on a Ctrl-C, input() runs the pending signal handlers
        # again with the KeyboardInterrupt already set: a handler that returns then (a
        # second Ctrl-C at that very instant) turns it into a SystemError caused by it.
        if isinstance(exc.__cause__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
