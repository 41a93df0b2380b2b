"""Printing the chat: replies as they stream, lines above the prompt, inert control text."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import TextIO

PROMPT = "you> "
REPLY = "assistant> "


def printable(text: str) -> str:
    """Model output and titles as inert text: control characters, the escape sequences a
    terminal would obey (colours, window titles, clipboard writes) included, are shown as
    ``^[``-style characters instead of being sent to the terminal."""
    out = []
    for char in text:
        code = ord(char)
        if char in "\n\t" or (0x20 <= code < 0x7F) or code > 0x9F:
            out.append(char)
        elif code < 0x20:
            out.append("^" + chr(code + 0x40))
        elif code == 0x7F:
            out.append("^?")
        else:
            out.append(f"\\x{code:02x}")
    return "".join(out)


def inline(text: str) -> str:
    """Text from the server on one line, inert: :func:`printable`, with line breaks and
    tabs as spaces (a title or an excerpt must not break the line it is shown on)."""
    return printable(text.replace("\r\n", " ").replace("\n", " ").replace("\t", " "))


def wants_colour(out: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether to emphasise with ANSI attributes: only on a terminal, and not when
    ``NO_COLOR`` is set to anything (https://no-color.org) or ``TERM`` is ``dumb``."""
    try:
        terminal = out.isatty()
    except ValueError:  # closed
        return False
    return terminal and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def duration(seconds: int) -> str:
    """A wait in words a reader takes in at a glance: ``45 s``, ``12 min``, ``4 h 59 min``,
    ``17 d 3 h``; rounded up, never shorter than the wait."""
    if seconds < 120:
        return f"{seconds} s"
    minutes = -(-seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    if minutes < 48 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    hours = -(-minutes // 60)
    days, rest = divmod(hours, 24)
    return f"{days} d {rest} h" if rest else f"{days} d"


def status_mark(text: str, status: str) -> str:
    """What follows a reply's text: nothing when it completed, else `` [cancelled]`` (or
    ``[error]``), without a second space after a text that ends with one."""
    if status == "complete":
        return ""
    gap = " " if text and not text[-1].isspace() else ""  # REPLY itself ends with one
    return f"{gap}[{printable(status)}]"


class Screen:
    """Where the chat is printed. A line that arrives while the user types is printed
    above the prompt, which is drawn again with what was typed so far."""

    def __init__(self, out: TextIO, err: TextIO, interactive: bool) -> None:
        self.out = out
        self.err = err
        self.interactive = interactive
        self.prompt = PROMPT if interactive else ""
        #: Search matches are shown in bold reverse video, else between brackets.
        self.colour = wants_colour(out)
        #: Set by the main thread while it waits in ``input()``.
        self.typing = False
        self._lock = threading.Lock()
        self._line_open = False

    def write(self, text: str) -> None:
        """Part of a line (a reply as it streams)."""
        if not text:
            return
        with self._lock:
            self.out.write(text)
            self.out.flush()
            self._line_open = not text.endswith("\n")

    def line(self, text: str, *, error: bool = False) -> None:
        """A whole line, on a line of its own; ``error``: one that ends the chat, to stderr."""
        stream = self.err if error else self.out
        with self._lock:
            if self.typing and self.interactive:
                self.out.write("\r\x1b[2K")
                self.out.flush()
                stream.write(text + "\n")
                stream.flush()
                if not error:  # an error line ends the chat: no prompt to come back to
                    self.out.write(self.prompt + _typed())
            else:
                if self._line_open:
                    self.out.write("\n")
                    self.out.flush()
                stream.write(text + "\n")
                stream.flush()
                self._line_open = False
            self.out.flush()

    def end_line(self) -> None:
        """Finish a line left open by :meth:`write`."""
        with self._lock:
            if self._line_open:
                self.out.write("\n")
                self.out.flush()
                self._line_open = False


def _typed() -> str:
    try:
        import readline
    except ImportError:  # pragma: no cover - platforms without readline
        return ""
    return readline.get_line_buffer()
