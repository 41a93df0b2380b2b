"""Hub events as notification payloads: small JSON objects, far under PostgreSQL's 8,000-byte
limit on a ``NOTIFY`` payload.

A payload carries ids and short texts only. A stored reply travels as its message id (the
receiving process reads the row); a delta's text is cut into pieces that fit. Every payload
names the process that sent it (``p``), so that a process skips its own, and a sequence
number (``n``): PostgreSQL drops a notification identical to one already sent in the same
transaction, and two deltas may well say the same thing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from chatbot.hub.base import Branch, Closed, Delta, Event, Failure, Reply, Started, Title

#: What a payload may take, in bytes of JSON, leaving room under PostgreSQL's 8,000.
MAX_PAYLOAD_BYTES = 7000
#: The longest text of one piece of a delta (in bytes of its JSON string).
MAX_TEXT_BYTES = 6000
#: Server-written texts (an error's message, a title, a close reason) are cut to this.
MAX_NOTE_CHARS = 1000


@dataclass(frozen=True, slots=True)
class StoredReply:
    """A reply announced by id: the receiver reads the message before delivering it."""

    session_id: str
    message_id: int
    reply_to: str | None
    only: str | None


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop the session's reply, wherever it is generated."""

    session_id: str


Wire = Started | Delta | StoredReply | Failure | Branch | Title | Closed | Cancel


def text_bytes(text: str) -> int:
    """The most ``text`` can take as a JSON string in a payload (escaped to ASCII, which is
    what a text holding a lone surrogate must be sent as)."""
    return len(json.dumps(text))


def split_text(text: str, limit: int = MAX_TEXT_BYTES) -> list[str]:
    """``text`` in pieces whose JSON strings each fit in ``limit`` bytes (a chunk of a
    backend's reply can be any size)."""
    if text_bytes(text) <= limit:
        return [text]
    pieces: list[str] = []
    start, size = 0, 2  # the quotes
    for index, char in enumerate(text):
        width = text_bytes(char) - 2
        if size + width > limit:
            pieces.append(text[start:index])
            start, size = index, 2
        size += width
    pieces.append(text[start:])
    return pieces


def dumps(payload: dict[str, Any]) -> str:
    """A payload as JSON text: UTF-8 where it can be, escaped where it cannot (a lone
    surrogate has no UTF-8 form)."""
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(payload, separators=(",", ":"))
    return text


def encode(event: Event | Cancel) -> dict[str, Any]:
    """The payload of an event (without ``p`` and ``n``, which the sender adds)."""
    s = event.session_id
    if isinstance(event, Delta):
        return {"t": "d", "s": s, "r": event.reply_to, "x": event.text}
    if isinstance(event, Started):
        return {"t": "s", "s": s, "r": event.reply_to}
    if isinstance(event, Reply):
        return {"t": "m", "s": s, "id": event.message.id, "r": event.reply_to, "o": event.only}
    if isinstance(event, Failure):
        return {
            "t": "f", "s": s, "c": event.code, "m": event.message[:MAX_NOTE_CHARS],
            "y": event.retryable, "r": event.reply_to, "a": event.retry_after, "o": event.only,
        }  # fmt: skip
    if isinstance(event, Branch):
        return {"t": "b", "s": s, "l": event.leaf_id}
    if isinstance(event, Title):
        return {"t": "t", "s": s, "x": event.title[:MAX_NOTE_CHARS]}
    if isinstance(event, Closed):
        return {"t": "c", "s": s, "k": event.code, "x": event.reason[:MAX_NOTE_CHARS]}
    return {"t": "x", "s": s}


def decode(payload: dict[str, Any]) -> Wire | None:
    """The event a payload carries; ``None`` for one this version does not know (a newer
    process in a rolling upgrade may send more)."""
    kind, s = payload.get("t"), payload.get("s")
    if not isinstance(s, str):
        return None
    if kind == "d":
        return Delta(s, str(payload["x"]), payload.get("r"))
    if kind == "s":
        return Started(s, payload.get("r"))
    if kind == "m":
        return StoredReply(s, int(payload["id"]), payload.get("r"), payload.get("o"))
    if kind == "f":
        after = payload.get("a")
        return Failure(
            s, str(payload["c"]), str(payload["m"]), bool(payload.get("y")), payload.get("r"),
            int(after) if after is not None else None, payload.get("o"),
        )  # fmt: skip
    if kind == "b":
        leaf = payload.get("l")
        return Branch(s, int(leaf) if leaf is not None else None)
    if kind == "t":
        return Title(s, str(payload["x"]))
    if kind == "c":
        return Closed(s, int(payload["k"]), str(payload["x"]))
    if kind == "x":
        return Cancel(s)
    return None
