"""``/metrics``: the series a chat changes, scraped from a real server as Prometheus would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from chatbot.backends import Backend, ChatRequest, Usage
from chatbot.errors import ConfigError
from chatbot.metrics import TOKEN_BUCKETS, Metrics
from chatbot.settings import BackendConfig
from tests.backends import DownBackend
from tests.conftest import SECRET, LiveServer, ServerFactory, make_token, recv_json, wait_for
from tests.processes import ServeProcess

ALICE = make_token("alice")
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]
#: The labels of a model call to the echo backend, as every gen_ai_* series carries them.
ECHO = {
    "backend": "echo",
    "gen_ai_operation_name": "chat",
    "gen_ai_provider_name": "echo",
    "gen_ai_request_model": "echo",
}
#: Histograms of durations: their buckets and sums depend on the clock, their counts do not.
TIMED = (
    "gen_ai_client_operation_duration_seconds",
    "gen_ai_client_operation_time_to_first_chunk_seconds",
)


def parse(text: str) -> Series:
    """Every sample of a scrape by name and labels, less the creation times and the
    process's own series (memory, CPU), which change on their own."""
    found: Series = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("process_"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = dict(sample.labels)
            if "le" in labels:
                # A bucket's bound as a number: "4.0", "1.048576e+06" and "+Inf" alike.
                labels["le"] = str(float(labels["le"]))
            found[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return found


def scrape(server: LiveServer, token: str | None = None) -> Series:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{server.url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def changes(before: Series, after: Series) -> Series:
    """The samples whose value changed (a series new since ``before`` counts from 0)."""
    return {k: v for k, v in after.items() if before.get(k, 0.0) != v}


def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted(labels.items()))


def ask(server: LiveServer, message: str, backend: str) -> dict[str, object]:
    with server.http(ALICE) as http:
        session_id = http.post("/api/sessions", json={"backend": backend}).json()["session_id"]
    with server.ws(ALICE, session_id=session_id) as ws:
        ws.send(json.dumps({"message": message}))
        return recv_json(ws)


def open_sockets(server: LiveServer) -> float:
    return scrape(server)[key("chatbot_open_sockets")]


@pytest.fixture
def chat_server(start_server: ServerFactory) -> LiveServer:
    """Echo, a backend that is down and hands over to echo, and one that fails for good."""
    settings = start_server.settings(
        backends={
            "echo": BackendConfig("echo", "echo"),
            "down": BackendConfig("down", "down", fallback=("echo",)),
            "broken": BackendConfig("broken", "down", {"kind": "backend_error"}),
        },
        default_backend="echo",
    )
    return start_server(settings, backend_types={"down": DownBackend})


def test_a_chat_changes_exactly_its_series(chat_server: LiveServer) -> None:
    server = chat_server
    before = scrape(server)
    assert before[key("chatbot_open_sockets")] == 0
    # Known before any traffic, so that a rate over them starts from 0.
    assert before[key("chatbot_replies_total", backend="broken", status="error")] == 0
    assert before[key("chatbot_messages_refused_total", reason="busy")] == 0

    assert ask(server, "hello there", "echo")["message"] == "Echo: hello there"
    assert ask(server, "hi", "down")["message"] == "Echo: hi"
    error = ask(server, "hi", "broken")
    assert error["type"] == "error"
    wait_for(lambda: open_sockets(server) == 0, "the sockets to be counted as closed")
    after = scrape(server)

    changed = changes(before, after)
    timed = {k: v for k, v in changed.items() if k[0].startswith(TIMED)}
    counts = {k: v for k, v in timed.items() if k[0].endswith("_count")}
    assert counts == {
        key("gen_ai_client_operation_duration_seconds_count", **ECHO, error_type=""): 2,
        key(
            "gen_ai_client_operation_duration_seconds_count",
            backend="down", gen_ai_operation_name="chat", gen_ai_provider_name="down",
            gen_ai_request_model="", error_type="backend_unavailable",
        ): 1,
        key(
            "gen_ai_client_operation_duration_seconds_count",
            backend="broken", gen_ai_operation_name="chat", gen_ai_provider_name="down",
            gen_ai_request_model="", error_type="backend_error",
        ): 1,
        # Only calls that sent text have a first chunk.
        key("gen_ai_client_operation_time_to_first_chunk_seconds_count", **ECHO): 2,
    }  # fmt: skip
    for (name, labels), count in counts.items():
        # Every call falls in the last bucket, whatever it took.
        infinite = (name.replace("_count", "_bucket"), tuple(sorted((*labels, ("le", "inf")))))
        assert after[infinite] == count

    untimed = {k: v for k, v in changed.items() if k not in timed}
    tokens = "gen_ai_client_token_usage"
    # Echo counts the words of the prompt (2, then 1) and its chunks ("Echo: hello there": 3,
    # "Echo: hi": 2).
    token_buckets = {
        key(f"{tokens}_bucket", **ECHO, gen_ai_token_type=kind, le=le): value
        for kind, values in (("input", (2, 1)), ("output", (3, 2)))
        for le, value in _cumulative(values).items()
    }
    assert untimed == {
        key("chatbot_messages_received_total", type="message"): 3,
        key("chatbot_replies_total", backend="echo", status="complete"): 2,
        key("chatbot_replies_total", backend="broken", status="error"): 1,
        key("chatbot_backend_errors_total", backend="down", kind="backend_unavailable"): 1,
        key("chatbot_backend_errors_total", backend="broken", kind="backend_error"): 1,
        key("chatbot_backend_fallbacks_total", backend="down", fallback="echo"): 1,
        key(f"{tokens}_count", **ECHO, gen_ai_token_type="input"): 2,
        key(f"{tokens}_sum", **ECHO, gen_ai_token_type="input"): 3,
        key(f"{tokens}_count", **ECHO, gen_ai_token_type="output"): 2,
        key(f"{tokens}_sum", **ECHO, gen_ai_token_type="output"): 5,
        **token_buckets,
    }
    # No label names a user or a session.
    labels = {name for (_, pairs) in after for name, _ in pairs}
    assert labels == {
        "type", "reason", "backend", "status", "kind", "fallback", "le", "error_type",
        "gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model",
        "gen_ai_token_type",
    }  # fmt: skip


def _cumulative(values: tuple[int, ...]) -> dict[str, float]:
    """The buckets of the token histogram that ``values`` fill: the count at or under each
    bound, for the bounds that count any."""
    bounds = [*TOKEN_BUCKETS, float("inf")]
    counts = {str(float(b)): float(sum(v <= b for v in values)) for b in bounds}
    return {le: count for le, count in counts.items() if count}


class AnyModel(Backend):
    """Lists no models, so a session may name any: the label must not take that name."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        yield f"answered by {request.model}"


def test_a_model_the_backend_does_not_list_is_labelled_other(
    start_server: ServerFactory,
) -> None:
    settings = start_server.settings(
        backends={"any": BackendConfig("any", "any")}, default_backend="any"
    )
    server = start_server(settings, backend_types={"any": AnyModel})
    with server.http(ALICE) as http:
        created = http.post("/api/sessions", json={"model": "alice-picked-this-name"})
        session_id = created.json()["session_id"]
    with server.ws(ALICE, session_id=session_id) as ws:
        ws.send(json.dumps({"message": "hi"}))
        assert recv_json(ws)["message"] == "answered by alice-picked-this-name"
    labels = {
        "backend": "any",
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "any",
        "gen_ai_request_model": "other",
    }
    series = scrape(server)
    assert (
        series[key("gen_ai_client_operation_duration_seconds_count", **labels, error_type="")] == 1
    )
    assert series[key("gen_ai_client_operation_time_to_first_chunk_seconds_count", **labels)] == 1
    assert not any("alice-picked-this-name" in str(name) for name in series)


def test_open_sockets_are_counted_while_open(server: LiveServer) -> None:
    assert open_sockets(server) == 0
    with server.ws(ALICE) as first, server.ws(ALICE) as second:
        recv_json(first), recv_json(second)
        assert open_sockets(server) == 2
    wait_for(lambda: open_sockets(server) == 0, "both sockets to be counted as closed")


def test_refused_messages_are_counted_by_reason(start_server: ServerFactory) -> None:
    settings = start_server.settings(
        # Slow enough that m1 is still waiting while m2 and m3 arrive.
        backends={"echo": BackendConfig("echo", "echo", {"delay": 1.0})},
        session_queue_size=1,
        rate_limit_per_minute=3,
    )
    server = start_server(settings)
    before = scrape(server)
    with server.ws(ALICE) as ws:
        recv_json(ws)  # the session id
        ws.send(json.dumps({"message": "m0", "id": "m0", "stream": True}))
        # Its first text: m0's turn has left the queue.
        assert recv_json(ws)["type"] == "delta"
        for n in (1, 2, 3):
            ws.send(json.dumps({"message": f"m{n}", "id": f"m{n}"}))
        # m1 waits, m2 finds the queue full, m3 is over the rate.
        replies: set[str] = set()
        codes: dict[str, str] = {}
        while replies != {"m0", "m1"}:
            frame = recv_json(ws)
            if frame["type"] == "message":
                replies.add(frame["reply_to"])
            elif frame["type"] == "error":
                codes[frame["reply_to"]] = frame["error"]["code"]
    assert codes == {"m2": "busy", "m3": "rate_limited"}
    changed = changes(before, scrape(server))
    assert changed[key("chatbot_messages_received_total", type="message")] == 4
    assert changed[key("chatbot_messages_refused_total", reason="busy")] == 1
    assert changed[key("chatbot_messages_refused_total", reason="rate_limited")] == 1
    assert key("chatbot_messages_refused_total", reason="flooding") not in changed


def test_each_application_counts_its_own(start_server: ServerFactory) -> None:
    one, two = start_server(), start_server()
    with one.ws(ALICE) as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": "only here"}))
        recv_json(ws)
    assert scrape(one)[key("chatbot_messages_received_total", type="message")] == 1
    assert scrape(two)[key("chatbot_messages_received_total", type="message")] == 0


METRICS_TOKEN = "metrics-token-that-is-long-enough-0123456789"


def test_the_token_gate(start_server: ServerFactory) -> None:
    from starlette.datastructures import Secret

    server = start_server(metrics_token=Secret(METRICS_TOKEN))
    with server.http() as http:
        missing = http.get("/metrics")
        wrong = http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}x"})
        a_users = http.get("/metrics", headers={"Authorization": f"Bearer {ALICE}"})
        basic = http.get("/metrics", headers={"Authorization": f"Basic {METRICS_TOKEN}"})
        right = http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json() == {"error": {"code": "missing_token", "message": "missing token"}}
    for refused in (wrong, a_users, basic):
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        assert refused.json()["error"]["code"] == "invalid_token"
        assert METRICS_TOKEN not in refused.text
    assert right.status_code == 200
    assert "chatbot_open_sockets 0.0" in right.text


def test_metrics_can_be_switched_off(start_server: ServerFactory) -> None:
    server = start_server(metrics=False)
    with server.http() as http:
        assert http.get("/metrics").status_code == 404
        assert "/metrics" not in http.get("/openapi.json").json()["paths"]
        assert http.get("/readyz").json() == {"status": "ready"}


def test_uvicorn_workers_share_their_series(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    directory.mkdir()
    command = [
        "-m", "uvicorn", "--factory", "chatbot.app:create_app", "--workers", "2",
        "--log-level", "warning", "--port",
    ]  # fmt: skip
    with ServeProcess(
        tmp_path, lambda port: [*command, str(port)], PROMETHEUS_MULTIPROC_DIR=str(directory)
    ) as server:
        # Each connection lands on either process; the sum is the same whichever.
        for n in range(6):
            with connect(
                server.ws_url, additional_headers={"Authorization": f"Bearer {ALICE}"}
            ) as ws:
                recv_json(ws)
                ws.send(json.dumps({"message": f"m{n}"}))
                assert recv_json(ws)["message"] == f"Echo: m{n}"

        def totals() -> tuple[float, float, float]:
            found = parse(httpx.get(f"{server.url}/metrics", timeout=10).text)
            return (
                found[key("chatbot_messages_received_total", type="message")],
                found[key("chatbot_replies_total", backend="echo", status="complete")],
                found[key("chatbot_open_sockets")],
            )

        # Whichever process answers the scrape, and however many times.
        for _ in range(4):
            wait_for(lambda: totals() == (6, 6, 0), "every process's counts in the sum")
    assert SECRET not in server.log.read_text()


def test_a_multiprocess_directory_that_is_missing_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(missing))
    with pytest.raises(ConfigError) as refused:
        Metrics()
    assert str(refused.value) == (
        f"PROMETHEUS_MULTIPROC_DIR names {str(missing)!r}, which is not a directory; "
        "create it (empty, for this server alone) or unset the variable"
    )
