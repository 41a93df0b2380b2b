"""Keep credentials out of log lines, uvicorn's access and error logs included.

The server reads tokens from the ``Authorization`` header and the ``bearer.`` subprotocol
only, and neither is logged. A client may still put a token in the query string (which is
refused), and uvicorn logs every request line, WebSocket upgrades included
(``"WebSocket /ws/chat/?token=..." [accepted]``). :class:`RedactSecrets` rewrites each log
record before it is formatted:

* the value of a query parameter named like a credential (``token``, ``access_token``,
  ``jwt``, ``auth``, ``authorization``...; also percent-encoded, in any case) becomes
  ``[redacted]``;
* anything shaped like a JWT (``eyJ...``.``...``.``...``), what follows ``Bearer `` or
  ``bearer.``, and a vendor's API key (``sk-...``: OpenAI's ``sk-proj-...``, Anthropic's
  ``sk-ant-...``) becomes ``[redacted]``, wherever it appears in the message, its arguments
  or an exception's text.

``chatbot serve`` routes every logger, the root included, to uvicorn's handlers and installs
the filter on them (:func:`server_log_config`): a plugin's own logger, an SDK's or its HTTP
client's pass it too. Under ``uvicorn --factory chatbot.app:create_app`` or when the app is
embedded, configure logging the same way (docs/security.md shows a configuration).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

REDACTED = "[redacted]"
#: Query parameters whose values never reach a log line (compared in lower case).
SECRET_PARAMETERS = frozenset(
    {
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "jwt",
        "auth",
        "authorization",
        "bearer",
        "api_key",
        "apikey",
        "password",
        "secret",
    }
)
FILTER_NAME = "chatbot_redact_secrets"
CLIENT_FAULTS_FILTER = "chatbot_client_faults"

# A query string: from "?" up to whitespace or a quote (uvicorn quotes the request line).
_QUERY = re.compile(r"\?[^\s\"'<>]*")
# A JWS or JWE in compact form: its header is base64url JSON, so it starts with "eyJ".
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]*")
_BEARER = re.compile(r"(?i)\b(bearer[ .])[^\s\"',;]+")
# A vendor's API key: "sk-" then a letter or digit and at least 7 more key characters.
_API_KEY = re.compile(r"(?<![\w-])sk-[A-Za-z0-9][\w-]{7,}")
_SEPARATORS = re.compile(r"([&;])")
# A credential parameter outside a "?..." query, e.g. in a logged ASGI scope's query_string.
_PARAMETER = re.compile(
    r"(?i)(?<![\w%.-])(" + "|".join(sorted(SECRET_PARAMETERS)) + r")=[^&;\s\"'<>#]*"
)


def _redact_query(match: re.Match[str]) -> str:
    parts = _SEPARATORS.split(match.group(0)[1:])
    for index in range(0, len(parts), 2):
        name, equals, _ = parts[index].partition("=")
        if equals and unquote_plus(name).strip().lower() in SECRET_PARAMETERS:
            parts[index] = f"{name}={REDACTED}"
    return "?" + "".join(parts)


def redact(text: str) -> str:
    """``text`` with credentials replaced by ``[redacted]``."""
    text = _BEARER.sub(lambda m: m.group(1) + REDACTED, text)
    text = _JWT.sub(REDACTED, text)
    text = _API_KEY.sub(REDACTED, text)
    text = _QUERY.sub(_redact_query, text)
    return _PARAMETER.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


class RedactSecrets(logging.Filter):
    """A logging filter that redacts credentials in each record; it drops no record.

    String arguments are redacted one by one, so that formatters that unpack them
    (uvicorn's access formatter reads five) keep working; a record with other arguments
    is rendered first, then redacted as a whole.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple) and args:
            if all(isinstance(a, str | int | float | None) for a in args):
                record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
            else:
                record.msg, record.args = redact(record.getMessage()), ()
        elif isinstance(args, Mapping) and args:
            record.msg, record.args = redact(record.getMessage()), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


#: What uvicorn logs, with a traceback, when a client sends a frame that is not UTF-8.
CLIENT_FAULTS = frozenset({"Invalid UTF-8 sequence received from client."})


class ClientFaultsWithoutTraceback(logging.Filter):
    """A client's malformed frame is the client's fault, not the server's: uvicorn closes
    the socket with 1007 and logs the exception with a traceback at ERROR. Keep one WARNING
    line instead, so that any client cannot fill the error log with stack traces."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in CLIENT_FAULTS:
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def add_redaction(log_config: dict[str, Any]) -> dict[str, Any]:
    """Put :class:`RedactSecrets` and :class:`ClientFaultsWithoutTraceback` on every handler
    of a ``logging.config.dictConfig`` dictionary (uvicorn's ``log_config``); returns the
    same dictionary."""
    filters_config = log_config.setdefault("filters", {})
    filters_config[FILTER_NAME] = {"()": f"{__name__}.RedactSecrets"}
    filters_config[CLIENT_FAULTS_FILTER] = {"()": f"{__name__}.ClientFaultsWithoutTraceback"}
    for handler in log_config.get("handlers", {}).values():
        filters = handler.setdefault("filters", [])
        for name in (CLIENT_FAULTS_FILTER, FILTER_NAME):
            if name not in filters:
                filters.append(name)
    return log_config


def server_log_config(base: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of uvicorn's ``log_config`` ``base`` through which every record passes the
    filters once: the root logger writes to its ``default`` handler, so a plugin's own
    logger, an SDK's and asyncio's are redacted as uvicorn's and chatbot's are.

    uvicorn's loggers keep their handlers and do not propagate, so their lines are not
    repeated. The root is at WARNING (an HTTP client's line per request stays out);
    ``chatbot`` and its plugins (``chatbot.backends.<type>``) log from INFO.
    """
    config = copy.deepcopy(dict(base))
    config.setdefault("loggers", {})["chatbot"] = {"level": "INFO"}
    config["root"] = {"handlers": ["default"], "level": "WARNING"}
    return add_redaction(config)
