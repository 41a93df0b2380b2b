"""How the SDK's failures become :class:`chatbot.errors.BackendError`.

The messages are written here, never copied from the exception: an SDK message can hold
the response body, and a traceback or a request's headers can hold the key. What Anthropic
said (its error type and message, the request id) goes to the server log instead.
"""

from __future__ import annotations

import importlib
from typing import Any

import anthropic

from chatbot.backends import logger_for
from chatbot.errors import BackendError, BackendErrorKind

logger = logger_for("anthropic")

#: Anthropic's error types (the ``error.type`` of an error body or ``error`` event) that
#: say the service, not the request, failed: sending the same message later may work.
_TRANSIENT_TYPES: dict[str, BackendErrorKind] = {
    "overloaded_error": "backend_unavailable",
    "api_error": "backend_unavailable",
    "rate_limit_error": "backend_unavailable",
    "timeout_error": "backend_timeout",
}

_RETRYABLE_STATUSES = frozenset({408, 409, 429})
_OVERLOADED_STATUS = 529


def _http_library_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """The timeout and the base exception classes of the HTTP library under the SDK.

    The SDK wraps the transport's exceptions while it sends a request, but what fails while
    a started stream is read reaches the caller as the HTTP library raised it: ``httpx``'s
    exceptions with the SDKs built on httpx, ``httpx2``'s with those built on httpx2
    (anthropic 2.x).
    """
    timeouts: list[type[Exception]] = []
    errors: list[type[Exception]] = []
    for name in ("httpx", "httpx2"):
        try:
            module: Any = importlib.import_module(name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        errors.append(module.HTTPError)
    return tuple(timeouts), tuple(errors)


HTTP_TIMEOUT_ERRORS, HTTP_ERRORS = _http_library_errors()


def _error_type(body: object) -> str | None:
    """``error.type`` of Anthropic's error body ``{"type": "error", "error": {...}}``."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("type"), str):
            return str(error["type"])
    return None


def _api_message(body: object) -> str | None:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
    return None


def _retry_after(exc: anthropic.APIStatusError) -> str:
    """`` (retry after N s)`` from the response's headers, when Anthropic said."""
    headers = exc.response.headers
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(header)
        if raw is None:
            continue
        try:
            seconds = float(raw) / scale
        except ValueError:
            continue
        if seconds >= 0:
            return f"; retry after {seconds:g} s"
    return ""


def _log(backend: str, exc: anthropic.APIStatusError, during_stream: bool) -> None:
    logger.warning(
        "backend %r: Anthropic %s %s (request id %s): %s",
        backend,
        "sent an error event" if during_stream else f"answered HTTP {exc.status_code}",
        _error_type(exc.body) or "without an error type",
        exc.response.headers.get("request-id") or "unknown",
        _api_message(exc.body) or "no message",
    )


def from_stream_event(exc: anthropic.APIStatusError, *, backend: str) -> BackendError:
    """An ``error`` event in a stream that had started (the HTTP status was 200)."""
    _log(backend, exc, during_stream=True)
    error_type = _error_type(exc.body) or "an unknown error"
    kind = _TRANSIENT_TYPES.get(error_type)
    if error_type == "overloaded_error":
        message = "Anthropic is overloaded and stopped the reply (overloaded_error)"
    else:
        message = f"Anthropic stopped the reply with {error_type}"
    if kind is None:
        return BackendError(message, kind="backend_error", retryable=False)
    return BackendError(message + "; try again later", kind=kind, retryable=True)


def from_status_error(
    exc: anthropic.APIStatusError, *, backend: str, key_env: str, model: str
) -> BackendError:
    """An error status in answer to the request (after the SDK's own retries)."""
    _log(backend, exc, during_stream=False)
    status = exc.status_code
    error_type = _error_type(exc.body)
    detail = f"HTTP {status}" + (f" {error_type}" if error_type else "")
    if isinstance(exc, anthropic.AuthenticationError):
        return BackendError(
            f"Anthropic rejected the API key ({detail}); check the {key_env} environment variable",
            kind="backend_error",
        )
    if isinstance(exc, anthropic.PermissionDeniedError):
        return BackendError(
            f"the API key in {key_env} may not do this ({detail}); check the key's permissions",
            kind="backend_error",
        )
    if isinstance(exc, anthropic.RateLimitError):
        return BackendError(
            f"Anthropic's rate limit was reached ({detail}){_retry_after(exc)}",
            kind="backend_unavailable",
            retryable=True,
        )
    if status == _OVERLOADED_STATUS or error_type == "overloaded_error":
        return BackendError(
            f"Anthropic is overloaded ({detail}); try again later{_retry_after(exc)}",
            kind="backend_unavailable",
            retryable=True,
        )
    if isinstance(exc, anthropic.InternalServerError) or status >= 500:
        return BackendError(
            f"the Anthropic API failed ({detail}); try again later{_retry_after(exc)}",
            kind="backend_unavailable",
            retryable=True,
        )
    if isinstance(exc, anthropic.NotFoundError):
        return BackendError(
            f"Anthropic does not know this model or endpoint ({detail}); check the model "
            f"name {model!r} and base_url",
            kind="backend_error",
        )
    if isinstance(exc, anthropic.BadRequestError):
        return BackendError(f"Anthropic rejected the request ({detail})", kind="backend_error")
    if status in _RETRYABLE_STATUSES:
        return BackendError(
            f"the Anthropic API failed ({detail}){_retry_after(exc)}",
            kind="backend_unavailable",
            retryable=True,
        )
    return BackendError(f"Anthropic rejected the request ({detail})", kind="backend_error")


def from_request_error(
    exc: anthropic.AnthropicError, *, backend: str, key_env: str, model: str
) -> BackendError:
    """Any SDK error raised before the stream started."""
    if isinstance(exc, anthropic.APITimeoutError):
        return BackendError(
            "the Anthropic API did not answer in time", kind="backend_timeout", retryable=True
        )
    if isinstance(exc, anthropic.APIConnectionError):
        logger.warning("backend %r: cannot connect to the Anthropic API", backend)
        return BackendError(
            "cannot connect to the Anthropic API", kind="backend_unavailable", retryable=True
        )
    if isinstance(exc, anthropic.APIStatusError):
        return from_status_error(exc, backend=backend, key_env=key_env, model=model)
    if isinstance(exc, anthropic.APIResponseValidationError):
        return BackendError("Anthropic sent a response that cannot be read", retryable=True)
    logger.warning("backend %r: the Anthropic SDK failed: %s", backend, type(exc).__name__)
    return BackendError("the Anthropic client failed", kind="backend_error")


def from_transport_error(exc: Exception, *, backend: str) -> BackendError:
    """The HTTP library failed while a started stream was read."""
    if isinstance(exc, HTTP_TIMEOUT_ERRORS):
        return BackendError(
            "the Anthropic API stopped sending in the middle of the reply",
            kind="backend_timeout",
            retryable=True,
        )
    logger.warning(
        "backend %r: the connection to Anthropic broke mid-reply: %s", backend, type(exc).__name__
    )
    return BackendError(
        "the connection to the Anthropic API was lost in the middle of the reply",
        kind="backend_error",
        retryable=True,
    )


def incomplete(*, backend: str) -> BackendError:
    """The stream ended without ``message_stop``."""
    logger.warning("backend %r: the Anthropic stream ended without message_stop", backend)
    return BackendError(
        "the Anthropic API ended the stream before the reply was complete",
        kind="backend_error",
        retryable=True,
    )
