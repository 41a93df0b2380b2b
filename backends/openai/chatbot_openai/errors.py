"""Turning the SDK's exceptions into :class:`chatbot.errors.BackendError`.

The messages reach the chat client as they are, so they say what happened and what to do,
and carry only the backend's name, the HTTP status and the upstream's short error code:
never the key, a header, an upstream response body or a traceback.
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

# An upstream error code worth repeating: a short identifier such as ``rate_limit_exceeded``.
_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
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

    def timeout(self, seconds: float, *, first_token: bool) -> BackendError:
        upstream = self.options.upstream
        if first_token:
            what = f"{upstream} sent no reply within {seconds:g} seconds"
        else:
            what = f"{upstream} did not finish the reply within {seconds:g} seconds"
        return self._error(f"{what}; try again", "backend_timeout", True)

    def not_started(self) -> BackendError:
        return self._error("the backend is not started", "backend_unavailable", True)

    def status(self, exc: openai.APIStatusError, model: str) -> BackendError:
        """An HTTP error status before the reply started."""
        upstream = self.options.upstream
        status = exc.status_code
        code = exc.code if isinstance(exc.code, str) and _CODE.fullmatch(exc.code) else None
        label = f"HTTP {status}" + (f" {code}" if code else "")
        if status == 429:
            if code == "insufficient_quota":
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
        code = exc.code if isinstance(exc.code, str) and _CODE.fullmatch(exc.code) else None
        detail = f" ({code})" if code else ""
        return self._error(
            f"{upstream} reported an error during the reply{detail}",
            "backend_error",
            not sent_text,
        )

    def dropped(self, *, sent_text: bool) -> BackendError:
        return self._error(
            f"the connection to {self.options.upstream} was lost during the reply",
            "backend_error",
            not sent_text,
        )
