"""The server holds every backend to ``first_token_timeout`` and ``total_timeout``, whatever
the backend itself does, and releases the backend's stream when a deadline passes."""

from __future__ import annotations

import json

import pytest

from chatbot.errors import ConfigError
from chatbot.settings import BackendConfig
from tests.backends import PromptBackend, RecordingBackend, SilentBackend, read_log
from tests.conftest import LiveServer, ServerFactory, make_token, recv_json, wait_for

ALICE = make_token("alice")
TYPES = {"silent": SilentBackend, "recorder": RecordingBackend, "prompt": PromptBackend}


def serve(start_server: ServerFactory, *configs: BackendConfig) -> LiveServer:
    settings = start_server.settings(
        backends={c.name: c for c in configs}, default_backend=configs[0].name
    )
    return start_server(settings, backend_types=TYPES)


def ask(server: LiveServer, message: str) -> tuple[str, dict[str, object]]:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": message, "id": "m"}))
        return str(session_id), recv_json(ws)


def stored(server: LiveServer, session_id: str) -> list[dict[str, object]]:
    with server.http(ALICE) as http:
        messages: list[dict[str, object]] = http.get(f"/api/sessions/{session_id}/messages").json()[
            "messages"
        ]
    return messages


def test_no_first_text_in_time_is_a_timeout_and_closes_the_stream(
    start_server: ServerFactory, tmp_path: object
) -> None:
    log = f"{tmp_path}/silent.log"
    server = serve(
        start_server, BackendConfig("mute", "silent", {"log": log}, first_token_timeout=0.3)
    )
    session_id, error = ask(server, "hello?")
    assert error == {
        "type": "error",
        "error": {
            "code": "backend_timeout",
            "message": "the backend 'mute' sent no text within 0.3 s (first_token_timeout)",
            "retryable": True,
        },
        "session_id": session_id,
        "reply_to": "m",
    }
    wait_for(lambda: read_log(log) == ["closed"], "the silent backend's stream to be closed")
    reply = stored(server, session_id)[-1]
    assert (reply["role"], reply["status"], reply["content"]) == ("assistant", "error", "")


def test_a_fallback_answers_when_the_first_backend_sends_nothing_in_time(
    start_server: ServerFactory, tmp_path: object
) -> None:
    server = serve(
        start_server,
        BackendConfig(
            "mute", "silent", {"log": f"{tmp_path}/s.log"}, fallback=("spare",),
            first_token_timeout=0.2,
        ),
        BackendConfig("spare", "prompt"),
    )  # fmt: skip
    _, reply = ask(server, "hi")
    assert (reply["type"], reply["backend"]) == ("message", "spare")
    assert reply["message"] == "None|hi|p-1"


def test_a_reply_past_its_total_time_keeps_its_text_and_says_why(
    start_server: ServerFactory, tmp_path: object
) -> None:
    log = f"{tmp_path}/rec.log"
    server = serve(
        start_server,
        BackendConfig(
            "slow", "recorder", {"log": log, "delay": 60, "chunks": 3}, total_timeout=0.5
        ),
    )
    session_id, error = ask(server, "go")
    assert error["type"] == "error"
    assert error["error"] == {
        "code": "backend_timeout",
        "message": "the reply took longer than 0.5 s (total_timeout of the backend 'slow'); "
        "the partial reply (3 characters) was stored",
        "retryable": True,
    }
    wait_for(lambda: "closed go after 1" in read_log(log), "the stream to be closed")
    reply = stored(server, session_id)[-1]
    assert (reply["status"], reply["content"]) == ("error", "w0 ")


@pytest.mark.parametrize("value", [0, -1, "10", True, float("inf")])
def test_a_timeout_must_be_a_positive_number(value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        BackendConfig.from_table("x", {"type": "echo", "total_timeout": value}, "chatbot.toml")
    assert str(caught.value) == (
        "chatbot.toml: [backends.x]: total_timeout must be a number of seconds > 0"
    )


def test_timeouts_are_the_servers_keys_not_the_backends_options() -> None:
    config = BackendConfig.from_table(
        "x", {"type": "echo", "first_token_timeout": 5, "delay": 1}, "chatbot.toml"
    )
    assert (config.first_token_timeout, config.total_timeout) == (5.0, 600.0)
    assert dict(config.options) == {"delay": 1}
