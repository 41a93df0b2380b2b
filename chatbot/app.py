"""``create_app()``: the whole server as one Starlette application.

Run it with ``chatbot serve`` or ``uvicorn --factory chatbot.app:create_app``, or mount it
inside another ASGI app (see docs/embedding.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from chatbot import api, api_data, api_usage, coordination, web
from chatbot.api_data import IMPORT_PATH
from chatbot.auth import TokenVerifier
from chatbot.backends import Backend
from chatbot.connection import Sockets
from chatbot.cors import cors_middleware
from chatbot.errors import AuthError, InvalidRequest, NotFound, TokenMissing
from chatbot.jwt_secret import with_jwt_secret
from chatbot.limits import limits_for
from chatbot.logs import RequestIds
from chatbot.metrics import metrics_route
from chatbot.middleware import BodySizeLimit
from chatbot.observe import Observer
from chatbot.openapi import openapi
from chatbot.protocol import CLOSE_GOING_AWAY
from chatbot.registry import BackendRegistry
from chatbot.runtime import STATE_KEY, Runtime
from chatbot.serialize import error_response
from chatbot.settings import Settings
from chatbot.stores import store_for_url
from chatbot.websocket import chat_endpoint

logger = logging.getLogger("chatbot")


async def _auth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    # RFC 6750: no error code when no credentials were sent.
    challenge = "Bearer" if isinstance(exc, TokenMissing) else 'Bearer error="invalid_token"'
    return error_response(
        401, exc.reason.replace(" ", "_"), exc.reason, headers={"WWW-Authenticate": challenge}
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, "not_found", str(exc))


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidRequest)
    return error_response(exc.status, exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        str(exc.detail),
        headers=dict(exc.headers or {}),
    )


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", "the server failed; try again later")


def create_app(
    settings: Settings | None = None,
    *,
    backend_types: Mapping[str, type[Backend]] | None = None,
) -> Starlette:
    """Build the application. ``settings`` default to the environment (``Settings.from_env``).

    ``backend_types`` adds backend classes by type name without an entry point, for tests
    and for apps that embed the server with their own backend.
    """
    if settings is None:
        settings = Settings.from_env()
    settings, note = with_jwt_secret(settings)
    if note is not None:
        # A warning, so that it shows even where nothing configured logging (--factory).
        logger.warning(note)
    verifier = TokenVerifier(settings)
    backends = BackendRegistry.from_settings(settings, backend_types)
    # Built with the app, not its lifespan: /metrics serves this app's series.
    observer = Observer.from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Runtime]]:
        store = store_for_url(settings.database_url, pool_size=settings.database_pool_size)
        await store.open()
        try:
            if settings.auto_migrate:
                applied = await store.migrate()
                if applied:
                    logger.info("applied migrations: %s", ", ".join(applied))
            await backends.start()
            hub, workers = coordination.build(store, backends, settings, observer)
            await hub.start()
            limits = limits_for(settings, store)
            await limits.start()
            await workers.start()
            runtime = Runtime(
                settings, store, backends, verifier, hub, workers, limits, Sockets(), observer
            )
            # The server's graceful shutdown (chatbot.server) finds the runtime here.
            app.state.chatbot = runtime
            # In the background: an identity provider that is down must not hold up the start.
            discovery = asyncio.create_task(verifier.prefetch())
            try:
                yield {STATE_KEY: runtime}
            finally:
                discovery.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await discovery
                # Under `chatbot serve` the server drained already; under another server
                # (uvicorn --factory, a host app) the sockets are closed by now, and the
                # replies in flight still get their grace and are stored.
                await runtime.drain(
                    settings.shutdown_grace, CLOSE_GOING_AWAY, "server shutting down"
                )
                # After the drain, whose sockets give their slots back one by one.
                await limits.aclose()
                await hub.aclose()
                await backends.aclose()
                app.state.chatbot = None
                if observer.metrics is not None:
                    observer.metrics.process_ends()
        finally:
            await store.close()

    routes = [
        *api_data.routes,
        *api_usage.routes,
        *api.routes,
        Route("/openapi.json", openapi, methods=["GET"]),
        WebSocketRoute("/ws/chat/", chat_endpoint),
        WebSocketRoute("/ws/chat", chat_endpoint),
    ]
    if observer.metrics is not None:
        routes.append(metrics_route(observer.metrics, settings.metrics_token))
    if settings.web_ui:
        routes += web.routes(settings)
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            # Outermost: every answer carries its X-Request-ID, a 413 and a preflight too.
            Middleware(RequestIds),
            # Then CORS, so that a 413 from the body limit also carries the CORS headers
            # (a front end on another origin could not read it otherwise).
            *cors_middleware(settings),
            # Outside the routes, so that a body too large is refused before any handler
            # reads it.
            Middleware(
                BodySizeLimit,
                max_bytes=settings.max_body_bytes,
                larger={IMPORT_PATH: settings.max_import_bytes},
            ),
        ],
        exception_handlers={
            AuthError: _auth_error,
            NotFound: _not_found,
            InvalidRequest: _invalid,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
