"""``GET /api/usage`` end to end: a real server, the echo backend (which reports usage), real
sockets and HTTP."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from chatbot.settings import BackendConfig
from tests.conftest import LiveServer, ServerFactory, make_token, recv_json

ALICE = make_token("alice")
BOB = make_token("bob")


def _today() -> date:
    return datetime.now(UTC).date()


def ask(server: LiveServer, token: str, *messages: str, session_id: str | None = None) -> str:
    """Send ``messages`` on a session (a new one without ``session_id``); its id. Each
    reply's usage is the one its frame showed."""
    with server.ws(token, session_id=session_id) as ws:
        if session_id is None:
            session_id = str(recv_json(ws)["session_id"])
        for n, message in enumerate(messages):
            ws.send(json.dumps({"message": message, "id": f"m{n}"}))
            assert recv_json(ws)["type"] == "message"
    return session_id


def usage(server: LiveServer, token: str = ALICE, **params: str) -> dict[str, Any]:
    with server.http(token) as http:
        response = http.get("/api/usage", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_totals_of_the_replies_are_the_callers_and_survive_deleting_the_session(
    server: LiveServer,
) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        seen = []
        for n, text in enumerate(["hello there", "how are you today"]):
            ws.send(json.dumps({"message": text, "id": f"m{n}"}))
            seen.append(recv_json(ws)["usage"])
    # The echo backend counts the words of what it was sent and the chunks it answered.
    assert seen == [
        {"input_tokens": 2, "output_tokens": 3},
        {"input_tokens": 2 + 3 + 4, "output_tokens": 5},
    ]
    today = _today().isoformat()
    expected_day = {"day": today, "input_tokens": 11, "output_tokens": 8, "replies": 2}

    body = usage(server)
    assert body == {
        "from": (_today() - timedelta(days=29)).isoformat(),
        "to": today,
        "group_by": "day",
        "groups": [expected_day],
        "total": {"input_tokens": 11, "output_tokens": 8, "replies": 2},
        "quota": None,
    }
    assert usage(server, BOB)["groups"] == []
    assert usage(server, BOB)["total"] == {"input_tokens": 0, "output_tokens": 0, "replies": 0}

    with server.http(ALICE) as http:
        assert http.delete(f"/api/sessions/{session_id}").status_code == 204
    assert usage(server)["groups"] == [expected_day]


def test_grouped_by_backend_and_by_model(start_server: ServerFactory) -> None:
    backends = {
        "echo": BackendConfig("echo", "echo"),
        "parrot": BackendConfig("parrot", "echo", {"model": "polly"}),
    }
    server = start_server(backends=backends, default_backend="echo")
    ask(server, ALICE, "one two")
    with server.http(ALICE) as http:
        parrot = http.post("/api/sessions", json={"backend": "parrot"}).json()["session_id"]
    ask(server, ALICE, "three", session_id=parrot)

    by_backend = usage(server, group_by="backend")
    assert by_backend["group_by"] == "backend"
    assert by_backend["groups"] == [
        {"backend": "echo", "input_tokens": 2, "output_tokens": 3, "replies": 1},
        {"backend": "parrot", "input_tokens": 1, "output_tokens": 2, "replies": 1},
    ]
    assert usage(server, group_by="model")["groups"] == [
        {"backend": "echo", "model": "echo", "input_tokens": 2, "output_tokens": 3, "replies": 1},
        {"backend": "parrot", "model": "polly", "input_tokens": 1, "output_tokens": 2,
         "replies": 1},
    ]  # fmt: skip
    assert usage(server, group_by="model")["total"] == {
        "input_tokens": 3,
        "output_tokens": 5,
        "replies": 2,
    }


def test_a_range_takes_both_ends_and_defaults_to_the_30_days_ending_at_to(
    server: LiveServer,
) -> None:
    ask(server, ALICE, "hi")
    today = _today()
    day = lambda n: (today + timedelta(days=n)).isoformat()  # noqa: E731

    assert len(usage(server, **{"from": day(0), "to": day(0)})["groups"]) == 1
    assert usage(server, **{"from": day(1)} | {"to": day(5)})["groups"] == []
    assert usage(server, **{"from": day(-365), "to": day(0)})["groups"] != []
    assert usage(server, to=day(-1))["groups"] == []
    body = usage(server, to=day(-1))
    assert (body["from"], body["to"]) == (day(-30), day(-1))
    # Days long ago: the default range stops at the first day there is.
    body = usage(server, to="0001-01-10")
    assert (body["from"], body["to"]) == ("0001-01-01", "0001-01-10")


NOT_A_DAY = "must be a date written YYYY-MM-DD (a UTC day)"


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        ({"from": "2026-13-01"}, "invalid_from", f"from {NOT_A_DAY}"),
        ({"from": "2026-1-1"}, "invalid_from", f"from {NOT_A_DAY}"),
        ({"to": "20260101"}, "invalid_to", f"to {NOT_A_DAY}"),
        ({"to": ""}, "invalid_to", f"to {NOT_A_DAY}"),
        ({"to": "yesterday"}, "invalid_to", f"to {NOT_A_DAY}"),
        ({"from": "2026-02-02", "to": "2026-02-01"}, "invalid_range",
         "from (2026-02-02) is after to (2026-02-01); give from <= to"),
        ({"from": "2025-01-01", "to": "2026-01-02"}, "invalid_range",
         "from 2025-01-01 to 2026-01-02 is more than 366 days; ask for a year at most at a time"),
        ({"group_by": "week"}, "invalid_group_by", "group_by must be day, backend or model"),
    ],
)  # fmt: skip
def test_a_bad_range_or_grouping_is_422_saying_what_to_send(
    server: LiveServer, params: dict[str, str], code: str, message: str
) -> None:
    with server.http(ALICE) as http:
        response = http.get("/api/usage", params=params)
    assert response.status_code == 422
    assert response.json() == {"error": {"code": code, "message": message}}


def test_a_leap_year_fits_in_one_request(server: LiveServer) -> None:
    body = usage(server, **{"from": "2024-01-01", "to": "2024-12-31"})
    assert body["groups"] == []


def test_usage_needs_a_token(server: LiveServer) -> None:
    with server.http() as http:
        response = http.get("/api/usage")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "missing_token"


def test_the_report_shows_the_quota_that_applies_and_what_was_used(
    start_server: ServerFactory,
) -> None:
    server = start_server(quota_tokens_per_day=1000, quota_claim="plan")
    ask(server, ALICE, "hello there")
    assert usage(server)["quota"] == {
        "tokens_per_day": 1000,
        "tokens_per_month": None,
        "used_today": 5,
        "used_this_month": 5,
    }
    # A token's plan comes before the server's quota.
    planned = make_token("alice", plan={"tokens_per_month": 50})
    assert usage(server, planned)["quota"] == {
        "tokens_per_day": None,
        "tokens_per_month": 50,
        "used_today": 5,
        "used_this_month": 5,
    }
