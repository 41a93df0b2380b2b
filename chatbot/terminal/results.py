"""Search results as ``/search`` prints them: a line naming the message, then its excerpt
with the matches emphasised. Everything from the server is shown inert, on one line."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from chatbot.terminal.screen import inline

#: Bold reverse video around a match, and back to normal text after it.
EMPHASIS = ("\x1b[1;7m", "\x1b[22;27m")
#: Around a match when colours are off.
BRACKETS = ("[", "]")


def spans(matches: Any, length: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` pairs of ``matches`` that fit a text of ``length`` characters,
    in order and without overlaps; anything else the server sent is left out."""
    valid = sorted(
        (start, end)
        for pair in (matches if isinstance(matches, list) else [])
        if isinstance(pair, list) and len(pair) == 2
        for start, end in [pair]
        if type(start) is int and type(end) is int and 0 <= start < end <= length
    )
    kept: list[tuple[int, int]] = []
    for start, end in valid:
        if kept and start < kept[-1][1]:
            kept[-1] = (kept[-1][0], max(kept[-1][1], end))
        else:
            kept.append((start, end))
    return kept


def emphasised(snippet: str, matches: Any, marks: Sequence[str]) -> str:
    """``snippet`` on one line, inert, with each match between ``marks`` (opening, closing).

    The marks go around the matched text itself, and the control characters in it are
    made inert piece by piece, so an escape sequence in a message can neither hide a mark
    nor move it."""
    opening, closing = marks
    pieces = []
    at = 0
    for start, end in spans(matches, len(snippet)):
        pieces.append(inline(snippet[at:start]))
        pieces.append(opening + inline(snippet[start:end]) + closing)
        at = end
    pieces.append(inline(snippet[at:]))
    return "".join(pieces)


def heading(result: dict[str, Any]) -> str:
    """The first line of a result: its session's title (or id), who wrote the message and
    when (local time), and the session's id for ``/switch``."""
    session_id = inline(str(result.get("session_id", "")))
    title = inline(str(result.get("title") or "")).strip()
    role = inline(str(result.get("role", "")))
    where = f"{title} (session {session_id})" if title else f"session {session_id}"
    try:
        when = f", {datetime.fromisoformat(result['created_at']).astimezone():%Y-%m-%d %H:%M}"
    except (KeyError, TypeError, ValueError):
        when = ""
    return f"{where}, {role}{when}"


def result_lines(results: list[dict[str, Any]], *, colour: bool) -> list[str]:
    """Two lines per result: :func:`heading`, then the excerpt, indented."""
    marks = EMPHASIS if colour else BRACKETS
    lines = []
    for result in results:
        lines.append(heading(result))
        excerpt = emphasised(str(result.get("snippet", "")), result.get("matches"), marks)
        lines.append("  " + excerpt)
    return lines
