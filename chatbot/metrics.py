"""Prometheus metrics: the series of one application and the ``/metrics`` route that serves
them in the text exposition format.

Each application has a registry of its own, never prometheus-client's global one: a process
may build several (the tests do, a host app may mount two), and each serves its own series.
Each ``chatbot serve`` process serves the series of that process; Prometheus scrapes every
process and adds them up. Under ``uvicorn --workers N``, where one port leads to any of N
processes, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory: every process then writes
its values there and ``/metrics`` answers with the sum over all of them
(prometheus-client's multiprocess mode).

The model calls are measured after the OpenTelemetry GenAI semantic conventions, as
OpenTelemetry's Prometheus exporter names them (dots become underscores, the unit a suffix):
``gen_ai_client_operation_duration_seconds``,
``gen_ai_client_operation_time_to_first_chunk_seconds`` and ``gen_ai_client_token_usage``,
with the conventions' bucket boundaries. No label holds a user's or a session's id: every
label takes one of a few values the operator's configuration fixes.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)
from starlette.datastructures import Secret
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatbot.errors import ConfigError
from chatbot.serialize import error_response

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
#: The conventions' boundaries for durations (seconds) and for token counts.
DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BUCKETS = (
    1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864,
)  # fmt: skip
#: The labels of a model call: the configured backend, then the conventions' attributes.
CALL_LABELS = ("backend", "gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")
#: What a refused message is refused for.
REFUSALS = ("busy", "rate_limited", "flooding")
STATUSES = ("complete", "cancelled", "error")
BACKEND_ERROR_KINDS = ("backend_error", "backend_timeout", "backend_unavailable")


def multiprocess_dir() -> str | None:
    """The directory of prometheus-client's multiprocess mode, when it is on."""
    return os.environ.get(MULTIPROCESS_VARIABLE) or None


class Metrics:
    """Every series of one application, in a registry of its own."""

    def __init__(self, backends: Iterable[str] = ()) -> None:
        directory = multiprocess_dir()
        if directory is not None and not os.path.isdir(directory):
            raise ConfigError(
                f"{MULTIPROCESS_VARIABLE} names {directory!r}, which is not a directory; "
                "create it (empty, for this server alone) or unset the variable"
            )
        self.registry = CollectorRegistry()
        registry = self.registry
        self.open_sockets = Gauge(
            "chatbot_open_sockets",
            "Chat sockets open now",
            registry=registry,
            # Under several processes: the sum over the processes alive.
            multiprocess_mode="livesum",
        )
        self.sockets_refused = Counter(
            "chatbot_sockets_refused",
            "Chat sockets closed right after the upgrade, by close code",
            ["code"],
            registry=registry,
        )
        self.messages = Counter(
            "chatbot_messages_received",
            "Chat messages received on sockets (type message or regenerate)",
            ["type"],
            registry=registry,
        )
        self.refused = Counter(
            "chatbot_messages_refused",
            "Chat messages refused: busy (the session's queue is full), rate_limited, "
            "flooding (the socket was closed 4429)",
            ["reason"],
            registry=registry,
        )
        self.replies = Counter(
            "chatbot_replies",
            "Replies stored, by backend and status",
            ["backend", "status"],
            registry=registry,
        )
        self.backend_errors = Counter(
            "chatbot_backend_errors",
            "Backend calls that failed, by backend and error kind (a fallback may answer)",
            ["backend", "kind"],
            registry=registry,
        )
        self.fallbacks = Counter(
            "chatbot_backend_fallbacks",
            "Replies handed from a backend that failed before its first text to its fallback",
            ["backend", "fallback"],
            registry=registry,
        )
        self.duration = Histogram(
            "gen_ai_client_operation_duration",
            "Duration of a model call, from the request to the end of its stream",
            [*CALL_LABELS, "error_type"],
            unit="seconds",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.first_chunk = Histogram(
            "gen_ai_client_operation_time_to_first_chunk",
            "Time from a model call's request to its first chunk of text",
            CALL_LABELS,
            unit="seconds",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens of a reply as its backend counted them, input and output",
            [*CALL_LABELS, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        # Every series a dashboard divides by or alerts on exists from the start, at 0.
        for reason in REFUSALS:
            self.refused.labels(reason)
        for kind in ("message", "regenerate"):
            self.messages.labels(kind)
        for backend in backends:
            for status in STATUSES:
                self.replies.labels(backend, status)
            for error in BACKEND_ERROR_KINDS:
                self.backend_errors.labels(backend, error)
        if directory is None:
            # The process's memory, CPU and file descriptors; in multiprocess mode they
            # would be one process's among many.
            ProcessCollector(registry=registry)

    def exposition(self) -> bytes:
        """The text format of every series: this process's, or in multiprocess mode the
        sum over every process that wrote to the directory."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def process_ends(self) -> None:
        """In multiprocess mode, take this process's open sockets out of the sum."""
        directory = multiprocess_dir()
        if directory is not None:
            multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


def metrics_route(metrics: Metrics, token: Secret | None) -> Route:
    """``GET /metrics``; with ``token``, only for ``Authorization: Bearer <token>``."""
    expected = str(token).encode() if token is not None else None

    async def endpoint(request: Request) -> Response:
        if expected is not None:
            given = request.headers.get("authorization")
            if not given:
                return error_response(
                    401, "missing_token", "missing token", headers={"WWW-Authenticate": "Bearer"}
                )
            scheme, _, value = given.partition(" ")
            # Compared in constant time, so that the answer's timing tells nothing of it.
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                value.strip().encode(), expected
            ):
                return error_response(
                    401,
                    "invalid_token",
                    "invalid token",
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
                )
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", endpoint, methods=["GET"])
