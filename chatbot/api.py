"""The HTTP API under ``/api``: sessions, their messages, the configured backends."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from chatbot.auth import Identity, bearer_from_header
from chatbot.errors import InvalidRequest, MessageNotFound, NotFound
from chatbot.hub.base import Branch, Hub, Title
from chatbot.protocol import CLOSE_NOT_FOUND
from chatbot.runtime import Runtime, runtime_of
from chatbot.serialize import is_utf8, message_json, session_json
from chatbot.stores.base import SessionStore

logger = logging.getLogger("chatbot.api")

MAX_TITLE_CHARS = 200
MAX_SESSION_ID_CHARS = 64
#: Seconds ``/readyz`` waits for the store and the hub to answer.
READY_TIMEOUT = 5.0


async def _authenticate(request: Request) -> tuple[Runtime, Identity]:
    runtime = runtime_of(request)
    return runtime, await runtime.verifier.verify(bearer_from_header(request.headers))


def _limit(request: Request, default: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= 100:
        raise InvalidRequest("invalid_limit", "limit must be an integer from 1 to 100")
    return int(raw)


def _message_id(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise InvalidRequest(f"invalid_{name}", f"{name} must be a message id (an integer)")
    return int(raw)


def _session_id(request: Request) -> str:
    session_id = str(request.path_params["session_id"])
    if len(session_id) > MAX_SESSION_ID_CHARS:
        # Cannot be an id this server issued; the same answer as for any unknown id.
        raise NotFound()
    return session_id


async def _json_object(request: Request, *, required: bool) -> dict[str, Any]:
    body = await request.body()
    if not body.strip():
        if required:
            raise InvalidRequest("invalid_body", "the request body must be a JSON object", 400)
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidRequest("invalid_json", "the request body is not valid JSON", 400) from None
    if not isinstance(data, dict):
        raise InvalidRequest("invalid_body", "the request body must be a JSON object", 400)
    return data


def _optional_string(data: dict[str, Any], name: str, max_chars: int) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_chars or not is_utf8(value):
        raise InvalidRequest(
            f"invalid_{name}", f"{name} must be a string of at most {max_chars} characters"
        )
    return value


async def list_sessions(request: Request) -> Response:
    runtime, identity = await _authenticate(request)
    limit = _limit(request, default=20)
    cursor = request.query_params.get("cursor") or None
    page = await runtime.store.list_sessions(identity.user_id, limit=limit, cursor=cursor)
    return JSONResponse(
        {
            "sessions": [session_json(s) for s in page.sessions],
            "next_cursor": page.next_cursor,
        }
    )


async def create_session(request: Request) -> Response:
    runtime, identity = await _authenticate(request)
    data = await _json_object(request, required=False)
    unknown = set(data) - {"title", "backend", "model", "system_prompt"}
    if unknown:
        raise InvalidRequest(
            "invalid_body",
            f"unknown field {sorted(unknown)[0]!r}; "
            "a session takes title, backend, model and system_prompt",
        )
    title = _optional_string(data, "title", MAX_TITLE_CHARS)
    system_prompt = _optional_string(data, "system_prompt", runtime.settings.max_message_chars)
    backend_name = _optional_string(data, "backend", 200) or runtime.backends.default
    backend = runtime.backends.get(backend_name)
    model = _optional_string(data, "model", 200)
    models = backend.available_models()
    if model is None:
        model = backend.default_model
    elif models and model not in models:
        raise InvalidRequest(
            "unknown_model",
            f"the backend {backend.name!r} has no model {model!r}; it offers: " + ", ".join(models),
        )
    # At CHATBOT_MAX_SESSIONS_PER_USER: 429 too_many_sessions.
    session = await runtime.store.create_session(
        identity.user_id,
        backend=backend.name,
        title=title,
        model=model,
        system_prompt=system_prompt,
        limit=runtime.settings.max_sessions_per_user,
    )
    return JSONResponse(session_json(session), status_code=201)


async def get_session(request: Request) -> Response:
    runtime, identity = await _authenticate(request)
    session = await runtime.store.get_session(identity.user_id, _session_id(request))
    return JSONResponse(session_json(session))


async def update_session(request: Request) -> Response:
    """Rename the session (``title``) and/or switch its current branch (``leaf_id``)."""
    runtime, identity = await _authenticate(request)
    session_id = _session_id(request)
    data = await _json_object(request, required=True)
    if not data or set(data) - {"title", "leaf_id"}:
        raise InvalidRequest("invalid_body", "send title, leaf_id or both")
    # Both fields are checked before either is applied: a request refused changes nothing.
    title = _optional_string(data, "title", MAX_TITLE_CHARS)
    session = None
    if "leaf_id" in data:
        leaf_id = data["leaf_id"]
        if isinstance(leaf_id, bool) or not isinstance(leaf_id, int) or not 0 < leaf_id < 2**62:
            raise InvalidRequest("invalid_leaf_id", "leaf_id must be a message id (an integer)")
        before = await runtime.store.get_session(identity.user_id, session_id)
        session = await runtime.store.switch_branch(identity.user_id, session_id, leaf_id)
        if session.leaf_id != before.leaf_id:
            runtime.hub.publish(Branch(session_id, session.leaf_id))
    if "title" in data:
        session = await runtime.store.rename_session(identity.user_id, session_id, title)
        if title is not None:
            runtime.hub.publish(Title(session_id, title))
    assert session is not None
    return JSONResponse(session_json(session))


async def make_title(request: Request) -> Response:
    """Make a new title now (from the title backend, or the first words)."""
    runtime, identity = await _authenticate(request)
    session_id = _session_id(request)
    session = await runtime.workers.title_session(
        identity.user_id, session_id, only_if_untitled=False
    )
    assert session is not None
    return JSONResponse(session_json(session))


async def delete_session(request: Request) -> Response:
    runtime, identity = await _authenticate(request)
    session_id = _session_id(request)
    await runtime.store.delete_session(identity.user_id, session_id)
    runtime.hub.close_session(session_id, CLOSE_NOT_FOUND, "session not found")
    return Response(status_code=204)


async def list_messages(request: Request) -> Response:
    runtime, identity = await _authenticate(request)
    session_id = _session_id(request)
    limit = _limit(request, default=50)
    before = _message_id(request, "before")
    after = _message_id(request, "after")
    if before is not None and after is not None:
        raise InvalidRequest("invalid_cursor", "give before or after, not both")
    leaf_id = _message_id(request, "leaf_id")
    page = await runtime.store.list_messages(
        identity.user_id, session_id, limit=limit, before=before, after=after, leaf_id=leaf_id
    )
    messages = [message_json(m, page.siblings.get(m.id)) for m in page.messages]
    return JSONResponse({"messages": messages, "has_more": page.has_more})


async def delete_message(request: Request) -> Response:
    """Delete a message and everything below it."""
    runtime, identity = await _authenticate(request)
    session_id = _session_id(request)
    raw = str(request.path_params["message_id"])
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise MessageNotFound()
    before = await runtime.store.get_session(identity.user_id, session_id)
    session = await runtime.store.delete_message(identity.user_id, session_id, int(raw))
    if session.leaf_id != before.leaf_id:
        runtime.hub.publish(Branch(session_id, session.leaf_id))
    return Response(status_code=204)


async def list_backends(request: Request) -> Response:
    runtime, _ = await _authenticate(request)
    backends = [
        {
            "name": backend.name,
            "type": runtime.settings.backends[backend.name].type,
            "default": backend.name == runtime.backends.default,
            "default_model": backend.default_model,
            "models": backend.available_models(),
        }
        for backend in runtime.backends
    ]
    return JSONResponse({"backends": backends, "default": runtime.backends.default})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _answers(name: str, ping: Callable[[], Awaitable[None]]) -> bool:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await ping()
    except Exception as exc:
        # The type alone: a driver's message may quote the database's address or user.
        logger.warning("not ready: the %s does not answer (%s)", name, type(exc).__name__)
        return False
    return True


async def readiness(store: SessionStore, hub: Hub) -> dict[str, str]:
    """``ok`` or ``failed`` for the store and the hub, asked at once, each within
    ``READY_TIMEOUT`` seconds."""
    checks = {"store": store.ping, "hub": hub.ping}
    answers = await asyncio.gather(*(_answers(name, ping) for name, ping in checks.items()))
    return {name: "ok" if ok else "failed" for name, ok in zip(checks, answers, strict=True)}


async def readyz(request: Request) -> Response:
    """Ready when the store and the hub answer; else ``503`` naming what does not."""
    runtime = runtime_of(request)
    checks = await readiness(runtime.store, runtime.hub)
    failed = [name for name, state in checks.items() if state != "ok"]
    if not failed:
        return JSONResponse({"status": "ready"})
    verb = "does" if len(failed) == 1 else "do"
    message = f"the {' and the '.join(failed)} {verb} not answer"
    # The API's error shape, and which check failed: no address, no driver's message.
    return JSONResponse(
        {"error": {"code": "not_ready", "message": message}, "checks": checks}, status_code=503
    )


Handler = Callable[[Request], Awaitable[Response]]


def _route(path: str, **handlers: Handler) -> Route:
    """One route per path, so that a 405 answer lists every method the path allows."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, endpoint, methods=list(handlers))


routes = [
    _route("/api/sessions", GET=list_sessions, POST=create_session),
    _route(
        "/api/sessions/{session_id}",
        GET=get_session,
        PATCH=update_session,
        DELETE=delete_session,
    ),
    _route("/api/sessions/{session_id}/messages", GET=list_messages),
    _route("/api/sessions/{session_id}/messages/{message_id}", DELETE=delete_message),
    _route("/api/sessions/{session_id}/title", POST=make_title),
    _route("/api/backends", GET=list_backends),
    _route("/healthz", GET=healthz),
    _route("/readyz", GET=readyz),
]
