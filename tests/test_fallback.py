"""Backends by configuration: fallbacks, system prompts, budgets, end to end."""

from __future__ import annotations

import json

import pytest

from chatbot.errors import ConfigError
from chatbot.settings import BackendConfig, Settings
from tests.backends import DownBackend, FlakyBackend, PromptBackend
from tests.conftest import LiveServer, ServerFactory, make_token, recv_json

ALICE = make_token("alice")
TYPES = {"down": DownBackend, "flaky": FlakyBackend, "prompt": PromptBackend}


def serve(start_server: ServerFactory, *configs: BackendConfig, **overrides: object) -> LiveServer:
    settings = start_server.settings(
        backends={c.name: c for c in configs}, default_backend=configs[0].name, **overrides
    )
    return start_server(settings, backend_types=TYPES)


def ask(server: LiveServer, message: str, **session: str) -> dict[str, object]:
    with server.http(ALICE) as http:
        session_id = http.post("/api/sessions", json=session).json()["session_id"]
    with server.ws(ALICE, session_id=session_id) as ws:
        ws.send(json.dumps({"message": message, "id": "m"}))
        return recv_json(ws)


def test_a_backend_down_before_its_first_token_falls_back(start_server: ServerFactory) -> None:
    server = serve(
        start_server,
        BackendConfig("primary", "down", fallback=("spare", "last")),
        BackendConfig("spare", "down", {"kind": "backend_timeout"}),
        BackendConfig("last", "prompt"),
    )
    reply = ask(server, "hi")
    assert reply["type"] == "message"
    assert (reply["backend"], reply["model"]) == ("last", "p-1")
    assert reply["message"] == "None|hi|p-1"
    with server.http(ALICE) as http:
        session_id = http.get("/api/sessions").json()["sessions"][0]["session_id"]
        stored = http.get(f"/api/sessions/{session_id}/messages").json()["messages"][-1]
    assert (stored["backend"], stored["model"], stored["status"]) == ("last", "p-1", "complete")


def test_no_fallback_for_a_plain_backend_error(start_server: ServerFactory) -> None:
    server = serve(
        start_server,
        BackendConfig("primary", "down", {"kind": "backend_error"}, fallback=("spare",)),
        BackendConfig("spare", "prompt"),
    )
    error = ask(server, "hi")
    assert error["type"] == "error"
    assert error["error"] == {
        "code": "backend_error", "message": "primary is down", "retryable": False,
    }  # fmt: skip


def test_no_fallback_once_text_was_sent(start_server: ServerFactory) -> None:
    server = serve(
        start_server,
        BackendConfig("flaky", "flaky", fallback=("spare",)),
        BackendConfig("spare", "prompt"),
    )
    error = ask(server, "fail-late")
    assert error["type"] == "error"
    assert "partial reply" in str(error["error"])


def test_the_last_fallbacks_error_is_reported(start_server: ServerFactory) -> None:
    server = serve(
        start_server,
        BackendConfig("a", "down", fallback=("b",)),
        BackendConfig("b", "down", {"kind": "backend_timeout"}),
    )
    error = ask(server, "hi")
    assert error["error"] == {"code": "backend_timeout", "message": "b is down", "retryable": True}


def test_system_prompt_precedence(start_server: ServerFactory) -> None:
    server = serve(
        start_server,
        BackendConfig("own", "prompt", system_prompt="backend prompt"),
        BackendConfig("bare", "prompt"),
        system_prompt="server prompt",
    )
    assert ask(server, "q", system_prompt="session prompt")["message"] == ("session prompt|q|p-1")
    assert ask(server, "q")["message"] == "backend prompt|q|p-1"
    assert ask(server, "q", backend="bare", model="p-2")["message"] == "server prompt|q|p-2"


def test_context_budget_trims_old_turns(start_server: ServerFactory) -> None:
    server = serve(start_server, BackendConfig("small", "prompt", context_tokens=12))
    with server.http(ALICE) as http:
        session_id = http.post("/api/sessions").json()["session_id"]
    with server.ws(ALICE, session_id=session_id) as ws:
        replies = []
        for text in ("one", "two", "three"):
            ws.send(json.dumps({"message": text}))
            replies.append(recv_json(ws)["message"])
    # Each turn costs about 5 tokens and the replies are long: only the newest fits.
    assert replies[-1] == "None|three|p-1"


def test_toml_keys_of_the_server_never_reach_the_backend(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "chatbot.toml"
    path.write_text(
        'default_backend = "a"\n'
        '[backends.a]\ntype = "echo"\ndelay = 0.1\nfallback = ["b"]\n'
        'system_prompt = "Be brief."\ncontext_tokens = 2000\n'
        '[backends.b]\ntype = "echo"\n'
    )
    settings = Settings.from_env({"CHATBOT_CONFIG": str(path)}, env_file=None)
    a = settings.backends["a"]
    assert a.options == {"delay": 0.1}
    assert (a.fallback, a.system_prompt, a.context_tokens) == (("b",), "Be brief.", 2000)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('fallback = ["nope"]', "fallback 'nope' is not another configured backend"),
        ('fallback = ["a"]', "fallback 'a' is not another configured backend"),
        ("fallback = 3", "fallback must be a list of backend names"),
        ("context_tokens = 0", "context_tokens must be a whole number above 0"),
        ("system_prompt = 1", "system_prompt must be a string"),
    ],
)
def test_bad_server_keys_are_refused(tmp_path: object, table: str, message: str) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "chatbot.toml"
    path.write_text(f'[backends.a]\ntype = "echo"\n{table}\n')
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"CHATBOT_CONFIG": str(path)}, env_file=None)


def test_a_retryable_backend_error_falls_back(start_server: ServerFactory) -> None:
    # A connection dropped before any text: the plugins call it a retryable backend_error.
    server = serve(
        start_server,
        BackendConfig("primary", "down", {"kind": "backend_error", "retryable": True},
                      fallback=("spare",)),
        BackendConfig("spare", "prompt"),
    )  # fmt: skip
    reply = ask(server, "hi")
    assert (reply["type"], reply["backend"]) == ("message", "spare")


def test_a_broken_fallback_hands_over_to_the_next(start_server: ServerFactory) -> None:
    server = serve(
        start_server,
        BackendConfig("a", "down", fallback=("b", "c")),
        BackendConfig("b", "down", {"kind": "backend_error"}),
        BackendConfig("c", "prompt"),
    )
    reply = ask(server, "hi")
    assert (reply["type"], reply["backend"], reply["model"]) == ("message", "c", "p-1")
