"""Log lines a machine can read: one JSON object per line, and the ids that tie them together.

Every record carries, when known, the ``request_id`` of the HTTP request or socket it
happened in, the ``user_id`` of the token that made it and the ``session_id`` it concerns.
They live in context variables (:func:`bind`), which asyncio copies into the tasks a handler
starts, so a line logged deep in a backend's plugin still says whose reply it was.

* :class:`RequestIds`: ASGI middleware that gives each request and socket its id: the
  client's ``X-Request-ID`` when it is sane, else a new one; returned in the response's (or
  the socket's upgrade response's) ``X-Request-ID`` header.
* :class:`JsonFormatter`: ``CHATBOT_LOG_FORMAT=json``; uvicorn's access and error lines too.
* :func:`event`: a line the operator's tools look for (``socket_closed``,
  ``reply_finished``...), with its fields, readable in either format.

The redaction filter (:mod:`chatbot.redact`) runs before any formatter, on the message and
its arguments; the fields of an event are redacted here, as they are written.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbot.redact import redact

REQUEST_ID_HEADER = "x-request-id"
#: A request id taken from a client: letters, digits and ``._:-``, at most 64 of them.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

#: The ids of what this task serves: (request id, user id, session id). One variable, not
#: three: each idle socket's context holds one entry.
_ids: contextvars.ContextVar[tuple[str | None, str | None, str | None]] = contextvars.ContextVar(
    "chatbot_log_ids", default=(None, None, None)
)
_NAMES = ("request_id", "user_id", "session_id")
#: The attribute of a record that holds an event's fields (see :func:`event`).
FIELDS = "chatbot_fields"


def bind(
    *, request_id: str | None = None, user_id: str | None = None, session_id: str | None = None
) -> None:
    """Set what the records logged from now on in this task (and in the tasks it starts)
    say they concern; an argument left out keeps its value."""
    old_request, old_user, old_session = _ids.get()
    _ids.set(
        (
            old_request if request_id is None else request_id,
            old_user if user_id is None else user_id,
            old_session if session_id is None else session_id,
        )
    )


def current_request_id() -> str | None:
    """The id of the request or socket this code runs for, if any."""
    return _ids.get()[0]


def context() -> dict[str, str]:
    """The ids bound in this task, by name."""
    return {name: value for name, value in zip(_NAMES, _ids.get(), strict=True) if value}


def sane_request_id(value: str | None) -> str | None:
    """``value`` if a client's request id may be kept as it is: short, plain characters,
    and nothing the redaction filter would hide (a client must not get its token written
    to the log by calling it a request id)."""
    if value is None or not _SANE_REQUEST_ID.fullmatch(value) or redact(value) != value:
        return None
    return value


def new_request_id() -> str:
    """A fresh request id: 96 random bits, URL-safe."""
    return secrets.token_urlsafe(12)


class RequestIds:
    """ASGI middleware: each HTTP request and each socket gets a request id, bound for the
    records logged while it is served and sent back in ``X-Request-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return self.app(scope, receive, send)
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = sane_request_id(value.decode("latin-1"))
                break
        request_id = given or new_request_id()
        # In the task that serves this request or socket, which has a context of its own
        # (uvicorn's); the user and the session are this request's to bind, none before.
        _ids.set((request_id, None, None))
        start = "http.response.start" if kind == "http" else "websocket.accept"
        # The app's own coroutine, not one of ours around it: a socket open for hours keeps
        # this small sender alive, not a frame of this middleware.
        return self.app(scope, receive, _SendWithId(send, start, request_id))


class _SendWithId:
    """``send`` that adds ``X-Request-ID`` to the response's start (or the socket's accept)."""

    __slots__ = ("header", "send", "start")

    def __init__(self, send: Send, start: str, request_id: str) -> None:
        self.send = send
        self.start = start
        self.header = (REQUEST_ID_HEADER.encode(), request_id.encode())

    async def __call__(self, message: Message) -> None:
        if message["type"] == self.start:
            message = {**message, "headers": [*message.get("headers", []), self.header]}
        await self.send(message)


def event(
    logger: logging.Logger,
    name: str,
    fields: Mapping[str, Any],
    text: str,
    *args: object,
    level: int = logging.INFO,
) -> None:
    """Log the event ``name``: ``text % args`` is the line a person reads (the text format),
    and ``fields`` go into the JSON object beside ``event``."""
    logger.log(level, text, *args, extra={FIELDS: {"event": name, **fields}})


def _timestamp(created: float) -> str:
    seconds = time.gmtime(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(created % 1 * 1000):03d}Z"


def _clean(value: Any) -> Any:
    """A field's value as written: text passes the redaction filter."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, float):
        return round(value, 6)
    return value


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The parts of uvicorn's access line (``client - "METHOD path HTTP/v" status``)."""
    args = record.args
    if not (isinstance(args, tuple) and len(args) == 5):
        return {}
    client, method, path, version, status = args
    return {"client": client, "method": method, "path": path, "http_version": version,
            "status": status}  # fmt: skip


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC), ``level``, ``logger``, ``message``, the
    bound ids, an event's fields, uvicorn's access fields, and an ``exception``'s text."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(context())
        if record.name == "uvicorn.access":
            line.update(_access_fields(record))
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, Mapping):
            line.update({key: _clean(value) for key, value in fields.items()})
        if record.exc_info and not record.exc_text:
            # Redacted: the filter sets exc_text before any formatter runs; this is for a
            # handler without it.
            record.exc_text = redact(self.formatException(record.exc_info))
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def use_json(log_config: dict[str, Any]) -> dict[str, Any]:
    """Make every formatter of a ``dictConfig`` dictionary (uvicorn's ``log_config``) the
    JSON one, so that uvicorn's lines come out as JSON like the rest; the same dictionary."""
    formatters = log_config.setdefault("formatters", {})
    for name in list(formatters) or ["default", "access"]:
        formatters[name] = {"()": f"{__name__}.JsonFormatter"}
    return log_config
