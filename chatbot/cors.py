"""CORS for the HTTP API: front ends on the origins ``CHATBOT_ALLOWED_ORIGINS`` names may
call it from a browser.

The setting already decides which pages may open the chat socket; the same list governs the
API, so one origin is allowed everywhere or nowhere. Without it no CORS header is sent and
browsers keep other origins out (same origin only). Credentials are never allowed: the API
authenticates with the ``Authorization`` header, not with cookies, so a page from an allowed
origin still needs a token of its own.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from chatbot.origins import allowed_origins
from chatbot.settings import Settings

#: Every method the API routes answer.
METHODS = ("GET", "POST", "PATCH", "DELETE")
#: The request headers a front end sends (Content-Type for JSON bodies; its own request id).
HEADERS = ("Authorization", "Content-Type", "X-Request-ID")
#: Response headers a front end may read besides the CORS-safelisted ones: a 401's reason,
#: the request id to quote in a bug report.
EXPOSED = ("WWW-Authenticate", "X-Request-ID")
#: Seconds a browser may reuse a preflight's answer.
PREFLIGHT_MAX_AGE = 600


def cors_middleware(settings: Settings) -> list[Middleware]:
    """The CORS middleware for ``settings``, or none when only the same origin is allowed."""
    if not settings.allowed_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            # As browsers send them: the setting may be written otherwise (HTTPS://Host:443).
            allow_origins=allowed_origins(settings.allowed_origins),
            allow_methods=METHODS,
            allow_headers=HEADERS,
            allow_credentials=False,
            expose_headers=EXPOSED,
            max_age=PREFLIGHT_MAX_AGE,
        )
    ]
