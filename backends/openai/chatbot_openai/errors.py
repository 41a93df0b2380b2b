"""Turning the SDK's exceptions into :class:`chatbot.errors.BackendError`.

The messages reach the chat client as they are, so they say what happened and what to do,
and carry only the backend's name, the HTTP status and the upstream's error ``type`` and
``code`` when they are identifiers: never the key, a header, an upstream's message, a
response body or a traceback.

An error body is ``{"error": {"message", "type", "param", "code"}}``. OpenAI's ``code`` is a
string or ``null``; servers speaking its API also send a number or a digit string (vLLM:
``400``, LiteLLM: ``"429"``), and some send only a ``type`` (Ollama: ``"api_error"``).
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping

import openai

from chatbot.errors import BackendError, BackendErrorKind
from chatbot_openai.options import OpenAIOptions

# An upstream error type or code worth repeating: a short identifier such as
# ``rate_limit_exceeded``, ``BadRequestError`` or ``1301``, never a sentence.
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# A media type as a Content-Type header gives it, e.g. ``application/json``.
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")
# The modules whose exceptions mean the connection failed while the body was being read
# (openai 1.x lets them through mid-stream; later versions wrap them in APIConnectionError).
_TRANSPORT_MODULES = frozenset({"httpx", "httpcore", "httpx2", "httpcore2", "h11", "h2"})


def retry_after_seconds(headers: Mapping[str, str]) -> int | None:
    """Seconds the upstream asked to wait (``retry-after-ms`` or ``retry-after``), if any."""
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return max(1, math.ceil(float(value) / 1000))
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return max(1, math.ceil(seconds))


def _identifier(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and _IDENTIFIER.fullmatch(value):
        return value
    return None


def error_fields(error_type: object, code: object, status: int | None = None) -> list[str]:
    """``type X`` and ``code Y`` of an upstream error, those that are identifiers; a code
    that only repeats the HTTP ``status`` (or the type) is left out."""
    type_, code_ = _identifier(error_type), _identifier(code)
    fields = [f"type {type_}"] if type_ else []
    if code_ and code_ not in (type_, str(status)):
        fields.append(f"code {code_}")
    return fields


def error_object(body: object) -> Mapping[str, object] | None:
    """The error in a JSON body: ``{"error": {...}}``, or vLLM's older ``{"object": "error",
    ...}``; ``None`` when the body is no error."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        return error
    if body.get("object") == "error":
        return body
    return {} if error else None


def document_type(content_type: str | None) -> str | None:
    """The media type of a response that is a whole document (JSON or a web page) rather
    than a stream of events; ``None`` for a stream, or a type the SDK may still read as one."""
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if not _MEDIA_TYPE.fullmatch(media_type):
        return None
    if media_type.endswith(("/json", "+json")) or media_type == "text/html":
        return media_type
    return None


def is_transport_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the HTTP client's own error (a dropped or broken connection)."""
    return type(exc).__module__.split(".")[0] in _TRANSPORT_MODULES


class ErrorMapper:
    """Builds the ``BackendError`` for one backend; every message names the backend."""

    def __init__(self, name: str, options: OpenAIOptions) -> None:
        self.name = name
        self.options = options

    def _error(self, message: str, kind: BackendErrorKind, retryable: bool) -> BackendError:
        text = f"backend {self.name!r}: {message}"
        key = self.options.api_key
        if len(key) >= 4:
            # Belt and braces: nothing above includes the key, but never let it through.
            text = text.replace(key, "***")
        return BackendError(text, kind=kind, retryable=retryable)

    def _key_hint(self) -> str:
        where = f"[backends.{self.name}]"
        if self.options.api_key_env is None and self.options.base_url is not None:
            return f"it needs an API key: set api_key_env in {where} to the variable holding it"
        variable = self.options.api_key_env or "OPENAI_API_KEY"
        return f"check the key in the {variable} environment variable"

    def not_started(self) -> BackendError:
        return self._error("the backend is not started", "backend_unavailable", True)

    def status(self, exc: openai.APIStatusError, model: str) -> BackendError:
        """An HTTP error status before the reply started."""
        upstream = self.options.upstream
        status = exc.status_code
        label = ", ".join([f"HTTP {status}", *error_fields(exc.type, exc.code, status)])
        if status == 429:
            if "insufficient_quota" in (_identifier(exc.type), _identifier(exc.code)):
                return self._error(
                    f"the account has no quota left at {upstream} ({label}); "
                    "check its plan and billing",
                    "backend_unavailable",
                    False,
                )
            wait = retry_after_seconds(exc.response.headers)
            if wait is None:
                when = "try again later"
            else:
                when = f"try again in {wait} second{'s' if wait != 1 else ''}"
            return self._error(
                f"{upstream} is rate limiting requests ({label}); {when}",
                "backend_unavailable",
                True,
            )
        if status in (401, 403):
            refused = "rejected the API key" if status == 401 else "refused access"
            return self._error(
                f"{upstream} {refused} ({label}); {self._key_hint()}", "backend_error", False
            )
        if status == 404:
            return self._error(
                f"{upstream} found no model {model!r} ({label}); "
                "check model and base_url in the configuration",
                "backend_error",
                False,
            )
        if status == 408:
            return self._error(
                f"{upstream} timed out ({label}); try again", "backend_timeout", True
            )
        if status == 409 or status >= 500:
            return self._error(
                f"{upstream} failed ({label}); try again", "backend_unavailable", True
            )
        return self._error(f"{upstream} refused the request ({label})", "backend_error", False)

    def api(
        self, exc: openai.APIError, model: str, *, streaming: bool, sent_text: bool
    ) -> BackendError:
        """Any SDK error: ``streaming`` once the response has started, ``sent_text`` once
        part of the reply was yielded (then sending the message again would repeat it)."""
        upstream = self.options.upstream
        if isinstance(exc, openai.APIStatusError):
            return self.status(exc, model)
        if isinstance(exc, openai.APITimeoutError):
            return self._error(f"{upstream} timed out; try again", "backend_timeout", True)
        if isinstance(exc, openai.APIConnectionError):
            if streaming:
                return self.dropped(sent_text=sent_text)
            return self._error(
                f"could not connect to {upstream}; try again", "backend_unavailable", True
            )
        fields = error_fields(exc.type, exc.code)
        detail = f" ({', '.join(fields)})" if fields else ""
        return self._error(
            f"{upstream} reported an error during the reply{detail}",
            "backend_error",
            not sent_text,
        )

    def not_a_stream(self, media_type: str, body: object) -> BackendError:
        """A streaming request answered with a whole document: the server does not stream,
        or ``base_url`` leads elsewhere; asking again gets the same answer."""
        error = error_object(body)
        if error is None:
            what = media_type
        else:
            fields = error_fields(error.get("type"), error.get("code"))
            what = "an error" + (f" ({', '.join(fields)})" if fields else "")
        return self._error(
            f"{self.options.upstream} answered with {what} instead of a stream of events "
            '("stream": true); check base_url',
            "backend_error",
            False,
        )

    def dropped(self, *, sent_text: bool) -> BackendError:
        return self._error(
            f"the connection to {self.options.upstream} was lost during the reply",
            "backend_error",
            not sent_text,
        )
