"""The chat page: ``/``, its static files under versioned URLs, ``/config.json``, and the
read-only page of a shared conversation, ``/s/<share id>``.

The page is plain files shipped in ``chatbot/static`` (no build step). Every URL in them is
relative, so the page works at ``/`` and wherever the app is mounted. Assets are served from
``static/<content hash>/...`` and cached for a year; the HTML itself is revalidated on every
load, so a new version of the page is picked up at once.

The shared page is built from the same files (``share.html`` and ``share.js``) and sent with
the same Content-Security-Policy. It needs no token and holds nothing but what the share
itself holds: the page names no configuration, and its script fetches
``api/shares/<share id>``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from chatbot.api_data import MAX_SHARE_ID_CHARS
from chatbot.errors import ConfigError, NotFound
from chatbot.runtime import runtime_of
from chatbot.serialize import error_response
from chatbot.settings import Settings

STATIC_DIR = Path(__file__).parent / "static"
#: The page's template: not an asset, so not served under ``static/``.
TEMPLATE = "index.html"
#: The shared page's template, served at ``s/<share id>``: one directory down.
SHARE_TEMPLATE = "share.html"
#: Replaced in the template by the versioned asset directory, e.g. ``static/3f9a0c1d2e4b/``.
STATIC_PLACEHOLDER = "{{static}}"
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",
}
IMMUTABLE = "public, max-age=31536000, immutable"
# A frame-ancestors value is a list of sources; these would end the directive or the header.
_UNSAFE_SOURCE = re.compile(r"[;,\x00-\x1f\x7f]")


def content_security_policy(settings: Settings) -> str:
    """The page's Content-Security-Policy: its own files only, no inline code, and the
    identity provider's origin for sign-in when OpenID Connect is configured."""
    if _UNSAFE_SOURCE.search(settings.frame_ancestors) or not settings.frame_ancestors.strip():
        raise ConfigError(
            f"CHATBOT_FRAME_ANCESTORS {settings.frame_ancestors!r} is not a CSP source list; "
            "write sources separated by spaces, e.g. 'self' https://intranet.example.com"
        )
    connect = ["'self'"]
    if settings.oidc_issuer is not None:
        parts = urlsplit(settings.oidc_issuer)
        connect.append(f"{parts.scheme}://{parts.netloc}")
    directives = [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src " + " ".join(connect),
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors " + " ".join(settings.frame_ancestors.split()),
    ]
    return "; ".join(directives)


def oidc_config(settings: Settings) -> dict[str, str] | None:
    """What the page needs to sign in with OpenID Connect (public values only), or None."""
    if settings.oidc_issuer is None or settings.oidc_client_id is None:
        return None
    return {
        "issuer": settings.oidc_issuer,
        "client_id": settings.oidc_client_id,
        "scopes": settings.oidc_scopes,
        "token": settings.oidc_token,
    }


@dataclass(frozen=True)
class Assets:
    """The page's files, read once: their bytes by relative path, one content hash, and the
    two pages made from their templates."""

    files: Mapping[str, bytes]
    version: str
    html: bytes
    share_html: bytes

    @classmethod
    def load(cls, directory: Path = STATIC_DIR) -> Assets:
        """Read every file under ``directory``; the templates become the pages' HTML."""
        files: dict[str, bytes] = {}
        for path in sorted(directory.rglob("*")):
            if path.is_file() and path.suffix in MEDIA_TYPES:
                files[path.relative_to(directory).as_posix()] = path.read_bytes()
        template = (directory / TEMPLATE).read_text(encoding="utf-8")
        share_template = (directory / SHARE_TEMPLATE).read_text(encoding="utf-8")
        digest = hashlib.sha256()
        for name, data in files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        # One version for the whole directory, so modules import each other by plain
        # relative paths (./vendor/dompurify.mjs) and always get the same release.
        version = digest.hexdigest()[:16]
        html = template.replace(STATIC_PLACEHOLDER, f"static/{version}/").encode()
        # s/<share id> is one level below the chat page: its assets are one level up.
        share_html = share_template.replace(STATIC_PLACEHOLDER, f"../static/{version}/").encode()
        return cls(files=files, version=version, html=html, share_html=share_html)


def routes(settings: Settings, assets: Assets | None = None) -> list[BaseRoute]:
    """The page's routes; ``create_app`` adds them when ``settings.web_ui`` is on."""
    assets = assets if assets is not None else Assets.load()
    csp = content_security_policy(settings)
    config = {"oidc": oidc_config(settings)}
    strict = {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }

    async def page(request: Request) -> Response:
        return Response(
            assets.html,
            media_type="text/html; charset=utf-8",
            headers={**strict, "Cache-Control": "no-cache"},
        )

    async def asset(request: Request) -> Response:
        name = str(request.path_params["path"])
        data = assets.files.get(name)
        template = name in (TEMPLATE, SHARE_TEMPLATE)
        if request.path_params["version"] != assets.version or data is None or template:
            # An old version's URL too: serving today's bytes under it would be cached as
            # that version for a year.
            return error_response(
                404,
                "not_found",
                "no such file; reload the page for the current version",
                headers=strict,
            )
        return Response(
            data,
            media_type=MEDIA_TYPES[Path(name).suffix],
            headers={**strict, "Cache-Control": IMMUTABLE},
        )

    async def shared(request: Request) -> Response:
        # The page of an unknown or revoked share is 404, as GET api/shares/<id> is; it still
        # shows (its script, getting the same 404, says the link does not work).
        share_id = str(request.path_params["share_id"])
        status = 200
        try:
            if len(share_id) > MAX_SHARE_ID_CHARS:
                raise NotFound("share not found")
            await runtime_of(request).store.get_share(share_id)
        except NotFound:
            status = 404
        return Response(
            assets.share_html,
            status_code=status,
            media_type="text/html; charset=utf-8",
            # Never kept by a cache: a revoked link must stop working at once.
            headers={**strict, "Cache-Control": "no-store", "X-Robots-Tag": "noindex"},
        )

    async def page_config(request: Request) -> Response:
        return JSONResponse(config, headers={**strict, "Cache-Control": "no-cache"})

    return [
        Route("/", page, methods=["GET"]),
        Route("/config.json", page_config, methods=["GET"]),
        Route("/static/{version}/{path:path}", asset, methods=["GET"]),
        Route("/s/{share_id}", shared, methods=["GET"]),
    ]
