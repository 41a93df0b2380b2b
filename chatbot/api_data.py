"""The HTTP API over conversations as data: search, export and import, shared links.

Every route but ``GET /api/shares/{share_id}`` (whose unguessable id is its only key) is
scoped by the authenticated user, and a session of another user answers exactly like a
missing one.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatbot.api import _authenticate, _json_object, _limit, _route, _session_id
from chatbot.errors import InvalidRequest, NotFound
from chatbot.runtime import runtime_of
from chatbot.search import parse_query, snippet
from chatbot.serialize import session_json, timestamp
from chatbot.stores.base import Message, Session, SessionStore, utcnow
from chatbot.transfer import ImportedSession, export_json, export_markdown, parse_import

IMPORT_PATH = "/api/sessions/import"
#: A search pages through at most this many results.
MAX_SEARCH_OFFSET = 1_000
MAX_SHARE_ID_CHARS = 64


def new_share_id() -> str:
    """An unguessable share id (192 random bits), never starting with ``-``."""
    while (value := secrets.token_urlsafe(24)).startswith("-"):
        pass
    return value


def _offset(cursor: str | None) -> int:
    if cursor is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        offset = json.loads(raw)["offset"]
    except (ValueError, TypeError, KeyError, RecursionError, binascii.Error):
        raise InvalidRequest("invalid_cursor", "cursor is not one this server issued") from None
    if isinstance(offset, bool) or not isinstance(offset, int) or not offset > 0:
        raise InvalidRequest("invalid_cursor", "cursor is not one this server issued")
    return offset


def _cursor(offset: int) -> str:
    raw = json.dumps({"offset": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def search(request: Request) -> Response:
    runtime, identity = await _authenticate(request)
    query = parse_query(request.query_params.get("q", ""))
    limit = _limit(request, default=20)
    cursor = request.query_params.get("cursor") or None
    if cursor is not None and len(cursor) > 64:
        raise InvalidRequest("invalid_cursor", "cursor is not one this server issued")
    offset = _offset(cursor)
    if offset >= MAX_SEARCH_OFFSET:
        return JSONResponse({"results": [], "next_cursor": None})
    hits = await runtime.store.search(identity.user_id, query, limit=limit + 1, offset=offset)
    results = []
    for hit in hits[:limit]:
        text, matches = snippet(hit.message.content, query)
        results.append(
            {
                "session_id": hit.message.session_id,
                "message_id": hit.message.id,
                "role": hit.message.role,
                "created_at": timestamp(hit.message.created_at),
                "title": hit.title,
                "snippet": text,
                "matches": [list(span) for span in matches],
            }
        )
    more = len(hits) > limit and offset + limit < MAX_SEARCH_OFFSET
    return JSONResponse(
        {"results": results, "next_cursor": _cursor(offset + limit) if more else None}
    )


async def _branch(store: SessionStore, owner: str, session: Session) -> list[Message]:
    """The whole current branch, root first."""
    if session.leaf_id is None:
        return []
    return await store.branch_to(owner, session.id, session.leaf_id, limit=session.message_count)


def _filename(session: Session, extension: str) -> str:
    return f"chatbot-{session.id}.{extension}"


async def export_session(request: Request) -> Response:
    runtime, identity = await _authenticate(request)
    session_id = _session_id(request)
    kind = request.query_params.get("format", "json")
    if kind not in ("json", "markdown"):
        raise InvalidRequest("invalid_format", "format must be json or markdown")
    session = await runtime.store.get_session(identity.user_id, session_id)
    if kind == "markdown":
        branch = await _branch(runtime.store, identity.user_id, session)
        return Response(
            export_markdown(session, branch, exported_at=utcnow()),
            media_type="text/markdown; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{_filename(session, "md")}"'},
        )
    messages = await runtime.store.all_messages(identity.user_id, session_id)
    return JSONResponse(
        export_json(session, messages),
        headers={"Content-Disposition": f'attachment; filename="{_filename(session, "json")}"'},
    )


async def import_sessions(request: Request) -> Response:
    runtime, identity = await _authenticate(request)
    body = await request.body()
    # Up to CHATBOT_MAX_IMPORT_BYTES of JSON to read and check: off the event loop, so that
    # the other sockets and requests do not wait for it.
    imported = await run_in_threadpool(_read_import, body)
    sessions = await runtime.store.import_sessions(
        identity.user_id,
        imported,
        backend=runtime.backends.default,
        limit=runtime.settings.max_sessions_per_user,
    )
    return JSONResponse({"sessions": [session_json(s) for s in sessions]}, status_code=201)


def _read_import(body: bytes) -> list[ImportedSession]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidRequest("invalid_json", "the request body is not valid JSON", 400) from None
    return parse_import(data)


def _share_url(request: Request, share_id: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/s/{share_id}"


def _public_message(message: Message) -> dict[str, Any]:
    """A message as a share shows it: no ids, no client ids, no usage."""
    return {
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "created_at": timestamp(message.created_at),
        "model": message.model,
    }


async def create_share(request: Request) -> Response:
    runtime, identity = await _authenticate(request)
    session_id = _session_id(request)
    await _json_object(request, required=False)
    session = await runtime.store.get_session(identity.user_id, session_id)
    branch = await _branch(runtime.store, identity.user_id, session)
    if not branch:
        raise InvalidRequest("empty_session", "the session holds no message to share yet")
    share_id = new_share_id()
    share = await runtime.store.create_share(
        identity.user_id, session_id, share_id, [_public_message(m) for m in branch]
    )
    body = {
        "share_id": share.id,
        "url": _share_url(request, share.id),
        "title": share.title,
        "created_at": timestamp(share.created_at),
        "message_count": len(share.messages),
    }
    return JSONResponse(body, status_code=201)


async def list_shares(request: Request) -> Response:
    runtime, identity = await _authenticate(request)
    shares = await runtime.store.list_shares(identity.user_id, _session_id(request))
    return JSONResponse(
        {
            "shares": [
                {
                    "share_id": share.id,
                    "url": _share_url(request, share.id),
                    "title": share.title,
                    "created_at": timestamp(share.created_at),
                    "message_count": len(share.messages),
                }
                for share in shares
            ]
        }
    )


async def delete_share(request: Request) -> Response:
    runtime, identity = await _authenticate(request)
    session_id = _session_id(request)
    share_id = str(request.path_params["share_id"])
    if len(share_id) > MAX_SHARE_ID_CHARS:
        raise NotFound("share not found")
    await runtime.store.delete_share(identity.user_id, session_id, share_id)
    return Response(status_code=204)


async def read_share(request: Request) -> Response:
    """A shared branch, for anyone who has its id."""
    runtime = runtime_of(request)
    share_id = str(request.path_params["share_id"])
    if len(share_id) > MAX_SHARE_ID_CHARS:
        raise NotFound("share not found")
    share = await runtime.store.get_share(share_id)
    return JSONResponse(
        {
            "share_id": share.id,
            "title": share.title,
            "created_at": timestamp(share.created_at),
            "messages": share.messages,
        },
        headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex"},
    )


routes = [
    # Before /api/sessions/{session_id}, which would take "import" for a session id.
    _route(IMPORT_PATH, POST=import_sessions),
    _route("/api/search", GET=search),
    _route("/api/sessions/{session_id}/export", GET=export_session),
    _route("/api/sessions/{session_id}/shares", GET=list_shares, POST=create_share),
    _route("/api/sessions/{session_id}/shares/{share_id}", DELETE=delete_share),
    _route("/api/shares/{share_id}", GET=read_share),
]
