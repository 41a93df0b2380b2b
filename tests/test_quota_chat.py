"""Token quotas on the chat socket, end to end: a real server whose backend is the openai
plugin talking to a fake OpenAI on loopback (which counts the requests that reach it), and
``chatbot quota`` run as an operator runs it, as a process on the same database."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from chatbot.quotas import next_day, next_month
from chatbot.settings import BackendConfig
from tests.conftest import LiveServer, ServerFactory, make_token, recv_json
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.test_cli import cli_env, run_cli

KEY_ENV = "CHATBOT_TEST_OPENAI_KEY"
ALICE = make_token("alice")
#: What every reply of the fake uses: 7 tokens in, 5 out.
USED = (7, 5)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv(KEY_ENV, "sk-test-quota")
    fake = FakeOpenAI()
    fake.default = Reply(("Hello", " there"), usage=USED)
    server = LiveServer(fake.app).start()
    fake.base_url = server.url + "/v1"
    try:
        yield fake
    finally:
        server.stop()


def quota_server(start_server: ServerFactory, fake: FakeOpenAI, **settings: Any) -> LiveServer:
    """A chat server whose backend ``gpt`` is the openai plugin, talking to ``fake``."""
    options = {"model": "gpt-fake", "base_url": fake.base_url, "api_key_env": KEY_ENV}
    backends = {"gpt": BackendConfig("gpt", "openai", {**options, "max_retries": 0})}
    return start_server(backends=backends, default_backend="gpt", **settings)


def send(ws: ClientConnection, message_id: str, text: str = "hi") -> dict[str, Any]:
    """Send a message with an id; the frame that answers it."""
    ws.send(json.dumps({"message": text, "id": message_id}))
    return recv_json(ws)


def quota(server: LiveServer, tmp_path: Path, *args: str) -> str:
    """``chatbot quota ARGS`` on the server's database; what it printed."""
    database = server_database(tmp_path)
    result = run_cli(tmp_path, "quota", *args, env=cli_env(CHATBOT_DATABASE_URL=database))
    assert result.returncode == 0, result.stderr
    return result.stdout


def server_database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'chat.db'}"


def refusal(frame: dict[str, Any], session_id: str, reply_to: str, message: str) -> int:
    """Check ``frame`` is exactly the quota_exceeded frame; its retry_after."""
    error = frame.get("error", {})
    retry_after = error.get("retry_after")
    assert isinstance(retry_after, int) and retry_after > 0, frame
    assert frame == {
        "type": "error",
        "error": {
            "code": "quota_exceeded",
            "message": message,
            "retryable": True,
            "retry_after": retry_after,
        },
        "session_id": session_id,
        "reply_to": reply_to,
    }
    return retry_after


def seconds_until(reset: datetime, now: datetime) -> int:
    return math.ceil((reset - now).total_seconds())


DAILY_10 = (
    "you have used your quota of 10 tokens a day; the message was not stored, send it again "
    "after the quota resets at 00:00 UTC"
)


def test_over_the_daily_quota_a_message_is_refused_and_never_reaches_the_model(
    start_server: ServerFactory, fake: FakeOpenAI
) -> None:
    server = quota_server(start_server, fake, quota_tokens_per_day=10)
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        # Under the quota: answered, and the 12 tokens it used take the user past it.
        assert send(ws, "m1")["message"] == "Hello there"
        before = datetime.now(UTC)
        frame = send(ws, "m2", "and now?")
        after = datetime.now(UTC)
        retry_after = refusal(frame, session_id, "m2", DAILY_10)
        # Whole seconds to the next UTC midnight, counted when the server checked.
        assert seconds_until(next_day(after), after) <= retry_after
        assert retry_after <= seconds_until(next_day(before), before)
        # The socket stays open.
        ws.send(json.dumps({"type": "ping"}))
        assert recv_json(ws) == {"type": "pong"}
    assert len(fake.requests) == 1
    with server.http(ALICE) as http:
        messages = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
    # The refused message was not stored.
    assert [m["content"] for m in messages] == ["hi", "Hello there"]


def test_over_the_monthly_quota_the_wait_runs_to_the_first_of_next_month(
    start_server: ServerFactory, fake: FakeOpenAI
) -> None:
    server = quota_server(start_server, fake, quota_tokens_per_month=12)
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        send(ws, "m1")
        before = datetime.now(UTC)
        frame = send(ws, "m2")
        after = datetime.now(UTC)
    reset = next_month(after)
    message = (
        "you have used your quota of 12 tokens a month; the message was not stored, send it "
        f"again after the quota resets on {reset:%Y-%m-%d} at 00:00 UTC"
    )
    retry_after = refusal(frame, session_id, "m2", message)
    assert seconds_until(reset, after) <= retry_after <= seconds_until(next_month(before), before)
    assert len(fake.requests) == 1


def test_an_override_from_the_command_line_applies_from_the_next_message(
    start_server: ServerFactory, fake: FakeOpenAI, tmp_path: Path
) -> None:
    server = quota_server(start_server, fake, quota_tokens_per_day=10)
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        send(ws, "m1")
        refusal(send(ws, "m2"), session_id, "m2", DAILY_10)

        assert quota(server, tmp_path, "set", "--user", "alice", "--per-day", "1000") == (
            "quota of alice: 1000 tokens a day, no limit a month; it comes before any plan "
            "in their token and before the server's quota\n"
        )
        # Sent again as it was: now answered.
        assert send(ws, "m2")["message"] == "Hello there"
        assert len(fake.requests) == 2
        assert quota(server, tmp_path, "show", "--user", "alice") == (
            "quota of alice: 1000 tokens a day, no limit a month (an override of `chatbot "
            "quota set`)\nused: 24 tokens today, 24 this month (UTC)\n"
        )

        assert quota(server, tmp_path, "clear", "--user", "alice").startswith(
            "removed the override of alice;"
        )
        refusal(send(ws, "m3"), session_id, "m3", DAILY_10)
    assert len(fake.requests) == 2


def test_a_plan_in_the_token_sets_the_quota_and_an_override_comes_before_it(
    start_server: ServerFactory, fake: FakeOpenAI, tmp_path: Path
) -> None:
    server = quota_server(start_server, fake, quota_claim="plan")
    free = make_token("alice", plan={"tokens_per_day": 5, "tokens_per_month": 1000})
    with server.ws(free) as ws:
        session_id = recv_json(ws)["session_id"]
        send(ws, "m1")
        message = DAILY_10.replace("10 tokens", "5 tokens")
        refusal(send(ws, "m2"), session_id, "m2", message)
    # A provider whose custom attributes are strings sends the plan as JSON text.
    text_plan = make_token("carol", plan='{"tokens_per_month": 12}')
    with server.ws(text_plan) as ws:
        session_id = recv_json(ws)["session_id"]
        send(ws, "m1")
        assert send(ws, "m2")["error"]["code"] == "quota_exceeded"
    # No plan, and no quota on the server: no limit.
    with server.ws(make_token("bob")) as ws:
        recv_json(ws)
        for n in range(3):
            assert send(ws, f"m{n}")["message"] == "Hello there"
    assert len(fake.requests) == 2 + 3

    quota(server, tmp_path, "set", "--user", "alice", "--unlimited")
    with server.ws(free) as ws:
        recv_json(ws)
        assert send(ws, "m1")["message"] == "Hello there"


def test_a_malformed_plan_leaves_the_token_valid_and_the_server_quota_applies(
    start_server: ServerFactory, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    server = quota_server(start_server, fake, quota_claim="plan", quota_tokens_per_day=10)
    token = make_token("alice", plan={"tokens_per_day": "lots"})
    with server.ws(token) as ws:
        session_id = recv_json(ws)["session_id"]
        send(ws, "m1")
        refusal(send(ws, "m2"), session_id, "m2", DAILY_10)
    with server.http(token) as http:
        assert http.get("/api/usage").status_code == 200
    # Said once, without the claim's value; not at every request.
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "chatbot.auth" and r.levelno == logging.WARNING
    ]
    assert warnings == [
        "a token's 'plan' claim is not a quota plan (tokens_per_day is not a whole number "
        ">= 0); the server's own quotas apply to it (see CHATBOT_QUOTA_CLAIM in "
        "docs/configuration.md)"
    ]


def test_an_answered_message_sent_again_over_quota_gets_its_stored_reply(
    start_server: ServerFactory, fake: FakeOpenAI
) -> None:
    server = quota_server(start_server, fake, quota_tokens_per_day=10)
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        first = send(ws, "m1")
        again = send(ws, "m1")
    assert again == first
    assert again["type"] == "message"
    assert len(fake.requests) == 1
    with server.ws(ALICE, session_id=session_id) as ws:
        # A regeneration over quota is refused before the branch changes.
        ws.send(json.dumps({"type": "regenerate", "id": "r1"}))
        refusal(recv_json(ws), session_id, "r1", DAILY_10)
    with server.http(ALICE) as http:
        session = http.get(f"/api/sessions/{session_id}").json()
    assert session["leaf_id"] == first["message_id"]
    assert len(fake.requests) == 1


def test_a_quota_of_zero_refuses_with_no_time_to_wait(
    start_server: ServerFactory, fake: FakeOpenAI
) -> None:
    server = quota_server(start_server, fake, quota_tokens_per_day=0)
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        frame = send(ws, "m1")
    assert frame == {
        "type": "error",
        "error": {
            "code": "quota_exceeded",
            "message": "your quota allows no tokens a day; the message was not stored. Ask "
            "the operator of this server for a quota",
            "retryable": False,
        },
        "session_id": session_id,
        "reply_to": "m1",
    }
    assert fake.requests == []


def test_the_refusal_goes_to_the_socket_that_sent_the_message_alone(
    start_server: ServerFactory, fake: FakeOpenAI
) -> None:
    server = quota_server(start_server, fake, quota_tokens_per_day=10)
    with server.ws(ALICE) as sender:
        session_id = recv_json(sender)["session_id"]
        with server.ws(ALICE, session_id=session_id) as other:
            send(sender, "m1")
            assert recv_json(other)["message"] == "Hello there"
            refusal(send(sender, "m2"), session_id, "m2", DAILY_10)
            # Published before the sender got it: had it gone to the other socket too, it
            # would come before this pong.
            other.send(json.dumps({"type": "ping"}))
            assert recv_json(other) == {"type": "pong"}
