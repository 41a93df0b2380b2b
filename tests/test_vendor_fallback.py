"""Fallback between the real vendor plugins: an unreachable or rate-limited OpenAI-compatible
server, then Anthropic answers; the frame and the stored message say which one did."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from chatbot.settings import BackendConfig
from tests.conftest import LiveServer, ServerFactory, make_token, recv_json
from tests.fakes.anthropic_server import FakeAnthropic, Reply
from tests.fakes.openai_server import FakeOpenAI

KEY = "sk-fallback-key-0123456789"
ALICE = make_token("alice")


@pytest.fixture
def claude() -> Iterator[tuple[FakeAnthropic, LiveServer]]:
    fake = FakeAnthropic(api_key=KEY, default=Reply(chunks=("From", " Claude")))
    server = LiveServer(fake.app()).start()
    yield fake, server
    server.stop()


@pytest.fixture
def local() -> Iterator[tuple[FakeOpenAI, LiveServer]]:
    fake = FakeOpenAI()
    server = LiveServer(fake.app).start()
    yield fake, server
    server.stop()


def chat(server: LiveServer, *messages: str) -> tuple[str, list[dict[str, object]]]:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        replies = []
        for n, message in enumerate(messages):
            ws.send(json.dumps({"message": message, "id": str(n)}))
            replies.append(recv_json(ws))
    return session_id, replies


def test_unreachable_local_server_falls_back_to_anthropic(
    start_server: ServerFactory,
    claude: tuple[FakeAnthropic, LiveServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    settings = start_server.settings(
        backends={
            "local": BackendConfig(
                "local", "openai",
                {"base_url": "http://127.0.0.1:9/v1", "model": "llama3.2", "max_retries": 0},
                fallback=("claude",),
            ),
            "claude": BackendConfig(
                "claude", "anthropic",
                {"base_url": claude[1].url, "model": "claude-fake", "max_retries": 0},
            ),
        },
        default_backend="local",
    )  # fmt: skip
    server = start_server(settings)
    session_id, [reply] = chat(server, "hello")
    assert reply["message"] == "From Claude"
    assert (reply["backend"], reply["model"]) == ("claude", "claude-fake")
    with server.http(ALICE) as http:
        stored = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
    assert (stored[1]["backend"], stored[1]["model"]) == ("claude", "claude-fake")
    assert claude[0].requests[0].body["messages"] == [{"role": "user", "content": "hello"}]


def test_rate_limited_then_recovered(
    start_server: ServerFactory,
    claude: tuple[FakeAnthropic, LiveServer],
    local: tuple[FakeOpenAI, LiveServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    fake, upstream = local
    fake.rate_limit(retry_after=1)
    settings = start_server.settings(
        backends={
            "local": BackendConfig(
                "local", "openai",
                {"base_url": upstream.url + "/v1", "model": "llama3.2", "max_retries": 0},
                fallback=("claude",),
            ),
            "claude": BackendConfig(
                "claude", "anthropic",
                {"base_url": claude[1].url, "model": "claude-fake", "max_retries": 0},
            ),
        },
        default_backend="local",
    )  # fmt: skip
    server = start_server(settings)
    _, replies = chat(server, "first", "second")
    assert [r["backend"] for r in replies] == ["claude", "local"]
    assert replies[1]["message"] == "Hello from the fake."
    # The fake counts words: "first", "From Claude" and "second" went as context.
    assert replies[1]["usage"] == {"input_tokens": 4, "output_tokens": 5}
