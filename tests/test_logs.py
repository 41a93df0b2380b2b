"""``CHATBOT_LOG_FORMAT=json``: the lines a real ``chatbot serve`` writes, parsed as a log
collector would, and the request ids that tie them to what a client sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from chatbot.logs import sane_request_id
from tests.conftest import expect_close, make_token, recv_json
from tests.processes import ServeProcess

ALICE = make_token("alice")
QUESTION = "what is the colour of the sky over Lisbon"


def serve_json(tmp_path: Path, **env: str) -> ServeProcess:
    """``chatbot serve`` writing JSON, without the sign-in link (a line of its own, with a
    token, meant for a person at a terminal)."""
    return ServeProcess(
        tmp_path,
        lambda port: ["-m", "chatbot", "serve", "--port", str(port), "--no-link"],
        CHATBOT_LOG_FORMAT="json",
        **env,
    )


def chat(server: ServeProcess, request_id: str) -> tuple[str, str]:
    """One message and its reply on a new session; the session id and the request id the
    server answered the upgrade with."""
    headers = {"Authorization": f"Bearer {ALICE}", "X-Request-ID": request_id}
    with connect(server.ws_url, additional_headers=headers) as ws:
        answered = ws.response.headers["X-Request-ID"]
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": QUESTION}))
        assert recv_json(ws)["message"] == f"Echo: {QUESTION}"
    return session_id, answered


def lines(output: str) -> list[dict[str, Any]]:
    """Every line of the output, each one a JSON object."""
    parsed = []
    for line in output.splitlines():
        record = json.loads(line)
        assert isinstance(record, dict), line
        parsed.append(record)
    return parsed


def only(records: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    [record] = [r for r in records if all(r.get(k) == v for k, v in fields.items())]
    return record


def test_json_logs_hold_no_sign_in_link_unless_asked_for(tmp_path: Path) -> None:
    server = ServeProcess(
        tmp_path, lambda port: ["-m", "chatbot", "serve", "--port", str(port)],
        CHATBOT_LOG_FORMAT="json",
    )  # fmt: skip
    with server:
        pass
    output = server.stop()
    records = lines(output)  # every line a JSON object: no bare link among them
    assert "#token=" not in output
    assert any("chatbot token --sub" in str(r.get("message")) for r in records)


def test_chatbot_serve_writes_json_lines_that_tie_a_reply_to_its_socket(tmp_path: Path) -> None:
    with serve_json(tmp_path) as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            listed = http.get(
                "/api/sessions", headers={"Authorization": f"Bearer {ALICE}", "X-Request-ID": "r-1"}
            )
        assert listed.headers["x-request-id"] == "r-1"
        session_id, answered = chat(server, "ws-1")
        assert answered == "ws-1"
        output = server.stop()

    records = lines(output)
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    [running] = [r for r in records if r["message"].startswith("Uvicorn running on http://")]
    assert (running["logger"], running["level"]) == ("uvicorn.error", "INFO")

    access = only(records, logger="uvicorn.access", request_id="r-1")
    assert (access["method"], access["path"], access["status"]) == ("GET", "/api/sessions", 200)
    assert access["user_id"] == "alice"

    ids = {"request_id": "ws-1", "user_id": "alice", "session_id": session_id}
    opened = only(records, event="socket_opened")
    assert opened.items() >= ids.items()
    reply = only(records, event="reply_finished")
    assert reply.items() >= {
        **ids, "status": "complete", "backend": "echo", "model": "echo", "error": None,
        "input_tokens": len(QUESTION.split()), "output_tokens": len(QUESTION.split()) + 1,
    }.items()  # fmt: skip
    assert isinstance(reply["message_id"], int)
    assert 0 <= reply["time_to_first_token_s"] <= reply["duration_s"]
    closed = only(records, event="socket_closed")
    assert closed.items() >= {**ids, "close_code": 1000, "closed_by": "client"}.items()
    assert closed["duration_s"] >= 0
    # What the user wrote and what the token says stay out of the log.
    assert "Lisbon" not in output
    for part in ALICE.split("."):
        assert part not in output


def test_the_message_text_is_logged_only_when_asked_for(tmp_path: Path) -> None:
    with serve_json(tmp_path, CHATBOT_LOG_CONTENT="true") as server:
        chat(server, "ws-2")
        output = server.stop()
    reply = only(lines(output), event="reply_finished")
    assert reply["user_message"] == QUESTION
    assert reply["reply_text"] == f"Echo: {QUESTION}"
    for part in ALICE.split("."):
        assert part not in output


def test_refused_sockets_are_logged_with_their_close_code(tmp_path: Path) -> None:
    with serve_json(tmp_path) as server:
        headers = {"Authorization": "Bearer not-a-token", "X-Request-ID": "bad-1"}
        with connect(server.ws_url, additional_headers=headers) as ws:
            assert expect_close(ws) == (4401, "invalid token")
        output = server.stop()
    refused = only(lines(output), event="socket_refused")
    assert refused.items() >= {"close_code": 4401, "reason": "invalid token"}.items()
    assert refused["request_id"] == "bad-1"
    assert "user_id" not in refused


@pytest.mark.parametrize(
    "given",
    [
        make_token("alice"),  # a client's own token, as a request id, stays out of the log
        "Bearer abc",
        "sk-proj-Abc123_def456-GHI789",
        "has spaces",
        "x" * 65,
        "",
        "é",
    ],
)
def test_an_unfit_request_id_is_replaced(given: str) -> None:
    assert sane_request_id(given) is None


@pytest.mark.parametrize("given", ["r-1", "0f8fad5b-d9cb-469f-a165-70867728950e", "a.b:c_d"])
def test_a_plain_request_id_is_kept(given: str) -> None:
    assert sane_request_id(given) == given


def test_an_unfit_request_id_gets_a_new_one(tmp_path: Path) -> None:
    with serve_json(tmp_path) as server:
        answered = httpx.get(
            f"{server.url}/healthz", headers={"X-Request-ID": ALICE}, timeout=10
        ).headers["x-request-id"]
        output = server.stop()
    assert answered != ALICE
    assert sane_request_id(answered) == answered
    access = only(lines(output), logger="uvicorn.access", request_id=answered)
    assert access["path"] == "/healthz"
    assert ALICE.split(".")[1] not in output
