"""The ``anthropic`` backend with the real SDK, against the fake Messages API on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncGenerator, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from chatbot_anthropic import AnthropicBackend
from websockets.sync.client import connect

from chatbot.backends import ChatMessage, ChatRequest, Usage, discover
from chatbot.errors import BackendError, ConfigError
from chatbot.settings import BackendConfig
from tests.conftest import LiveServer, ServerFactory, bearer, make_token, recv_json, wait_for
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    MidStreamDrop,
    MidStreamError,
    Reply,
    Scripted,
    Stall,
    StatusError,
    UsageIn,
    overloaded,
    rate_limited,
    server_error,
)
from tests.processes import ServeProcess

KEY = "sk-ant-test-key-0123456789-do-not-leak"
Item = str | Usage
#: A pause of the fake longer than any wait of the test: it ends early only if the client
#: goes away.
HELD = 60.0


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_CUSTOM_HEADERS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake() -> FakeAnthropic:
    return FakeAnthropic()


@pytest.fixture
def upstream(fake: FakeAnthropic) -> Iterator[LiveServer]:
    server = LiveServer(fake.app()).start()
    yield server
    server.stop()


def backend_for(upstream: LiveServer, **options: Any) -> AnthropicBackend:
    return AnthropicBackend(
        "claude",
        {"model": "claude-test", "base_url": upstream.url, "max_retries": 0, **options},
    )


def ask(*turns: tuple[str, str] | str, system_prompt: str | None = None) -> ChatRequest:
    messages = [
        ChatMessage("user", turn) if isinstance(turn, str) else ChatMessage(*turn)  # type: ignore[arg-type]
        for turn in turns
    ]
    return ChatRequest(messages=messages, model=None, system_prompt=system_prompt)


def run(backend: AnthropicBackend, request: ChatRequest) -> tuple[list[Item], BackendError | None]:
    """Start the backend, read the whole stream, close the backend."""

    async def main() -> tuple[list[Item], BackendError | None]:
        await backend.start()
        items: list[Item] = []
        try:
            async for item in backend.stream(request):
                items.append(item)
        except BackendError as exc:
            return items, exc
        finally:
            await backend.aclose()
        return items, None

    return asyncio.run(main())


def fail(backend: AnthropicBackend, request: ChatRequest | None = None) -> BackendError:
    _, error = run(backend, request or ask("hi"))
    assert error is not None, "the stream did not fail"
    assert KEY not in str(error) and KEY not in error.message
    return error


def texts(items: Sequence[Item]) -> list[str]:
    return [item for item in items if isinstance(item, str)]


# --- a normal reply ---------------------------------------------------------------------


def test_chunks_in_order_then_usage(fake: FakeAnthropic, upstream: LiveServer) -> None:
    fake.script(Reply(["Hel", "lo", ", ", "world"], input_tokens=17, output_tokens=5))
    items, error = run(backend_for(upstream), ask("hi"))
    assert error is None
    assert items == ["Hel", "lo", ", ", "world", Usage(input_tokens=17, output_tokens=5)]
    assert fake.last.finished and not fake.last.aborted


@pytest.mark.parametrize("usage_in", ["message_start", "both", "message_delta"])
def test_usage_wherever_the_input_tokens_are_told(
    fake: FakeAnthropic, upstream: LiveServer, usage_in: UsageIn
) -> None:
    fake.script(Reply(["Hi"], input_tokens=23, output_tokens=7, usage_in=usage_in))
    items, error = run(backend_for(upstream), ask("hi"))
    assert error is None
    assert items == ["Hi", Usage(input_tokens=23, output_tokens=7)]


def test_request_body_and_headers(
    fake: FakeAnthropic, upstream: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_KEY_FOR_TESTS", "sk-ant-other-key")
    backend = backend_for(
        upstream,
        api_key_env="CLAUDE_KEY_FOR_TESTS",
        temperature=0.25,
        system_prompt="from the options",
    )
    request = ask(
        ("assistant", "a greeting nobody asked for"),
        ("user", "first"),
        ("user", "second"),
        ("assistant", "answer"),
        ("assistant", "more answer"),
        ("user", "third"),
        system_prompt="You are terse.",
    )
    _, error = run(backend, request)
    assert error is None
    sent = fake.last
    assert sent.api_key == "sk-ant-other-key"
    assert sent.anthropic_version
    body = sent.body
    assert body["model"] == "claude-test"
    assert body["max_tokens"] == 4096
    assert body["temperature"] == 0.25
    assert body["stream"] is True
    assert body["system"] == "You are terse."
    assert body["messages"] == [
        {"role": "user", "content": "first\n\nsecond"},
        {"role": "assistant", "content": "answer\n\nmore answer"},
        {"role": "user", "content": "third"},
    ]


def test_system_prompt_option_and_defaults(fake: FakeAnthropic, upstream: LiveServer) -> None:
    run(backend_for(upstream, system_prompt="Be kind.", max_tokens=100), ask("hi"))
    assert fake.last.body["system"] == "Be kind."
    assert fake.last.body["max_tokens"] == 100
    run(backend_for(upstream), ask("hi"))
    body = fake.last.body
    assert "system" not in body and "temperature" not in body
    assert all(m["role"] != "system" for m in body["messages"])
    assert fake.last.api_key == KEY


def test_session_model_is_sent(fake: FakeAnthropic, upstream: LiveServer) -> None:
    backend = backend_for(upstream, models=["claude-big", "claude-small"])
    assert backend.available_models() == ["claude-test", "claude-big", "claude-small"]
    assert backend.default_model == "claude-test"
    request = ChatRequest(messages=[ChatMessage("user", "hi")], model="claude-small")
    run(backend, request)
    assert fake.last.body["model"] == "claude-small"


# --- configuration ----------------------------------------------------------------------


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(ConfigError) as caught:
        AnthropicBackend("claude", {"model": "claude-test"})
    assert "set the ANTHROPIC_API_KEY environment variable" in str(caught.value)
    assert "[backends.claude]" in str(caught.value)


def test_empty_custom_key_variable_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_CLAUDE_KEY", "")
    with pytest.raises(ConfigError, match="set the MY_CLAUDE_KEY environment variable"):
        AnthropicBackend("claude", {"model": "claude-test", "api_key_env": "MY_CLAUDE_KEY"})


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({}, "needs a model"),
        ({"model": ""}, "model must be a non-empty string"),
        ({"model": "m", "temprature": 0.5}, "no option 'temprature'; it takes: model, models,"),
        ({"model": "m", "temperature": 1.5}, "temperature must be a number from 0 to 1"),
        ({"model": "m", "temperature": True}, "temperature must be a number"),
        ({"model": "m", "max_tokens": 0}, "max_tokens must be a whole number >= 1"),
        ({"model": "m", "max_tokens": 10.5}, "max_tokens must be a whole number"),
        ({"model": "m", "max_retries": -1}, "max_retries must be a whole number >= 0"),
        # The server's keys: it strips them from the table before the backend sees it.
        ({"model": "m", "first_token_timeout": 5}, "no option 'first_token_timeout'"),
        ({"model": "m", "total_timeout": 10}, "no option 'total_timeout'"),
        ({"model": "m", "connect_timeout": -1}, "connect_timeout must be a number"),
        ({"model": "m", "models": []}, "models must be a non-empty list"),
        ({"model": "m", "models": "m"}, "models must be a non-empty list"),
        ({"model": "m", "base_url": "localhost:8080"}, "base_url must be an http"),
        ({"model": "m", "api_key_env": ""}, "api_key_env must be a non-empty string"),
    ],
)
def test_bad_options(options: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AnthropicBackend("claude", options)
    assert complaint in str(caught.value)
    assert str(caught.value).startswith("[backends.claude]: ")


def test_registered_as_an_entry_point() -> None:
    entry_point = discover()["anthropic"]
    assert entry_point.load() is AnthropicBackend


def test_the_key_is_not_in_the_repr(upstream: LiveServer) -> None:
    assert KEY not in repr(backend_for(upstream))


# --- failures before the stream ---------------------------------------------------------


def test_rate_limit_is_retried_then_reported(fake: FakeAnthropic, upstream: LiveServer) -> None:
    fake.script(*[rate_limited(retry_after="0.01")] * 3)
    error = fail(backend_for(upstream, max_retries=2))
    assert (error.kind, error.retryable) == ("backend_unavailable", True)
    assert "429" in error.message and "retry after 0.01 s" in error.message
    assert len(fake.requests) == 3


def test_rate_limit_then_success(fake: FakeAnthropic, upstream: LiveServer) -> None:
    fake.script(rate_limited(retry_after="0.01"), Reply(["fine"]))
    items, error = run(backend_for(upstream, max_retries=1), ask("hi"))
    assert error is None
    assert texts(items) == ["fine"]
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("scripted", "status"),
    [(server_error(), "500"), (overloaded(), "529"), (StatusError(503, "api_error", "x"), "503")],
)
def test_server_errors_are_unavailable(
    fake: FakeAnthropic, upstream: LiveServer, scripted: StatusError, status: str
) -> None:
    fake.script(scripted)
    error = fail(backend_for(upstream))
    assert (error.kind, error.retryable) == ("backend_unavailable", True)
    assert status in error.message
    if status == "529":
        assert "overloaded" in error.message


def test_wrong_key_says_which_variable_to_check(
    upstream: LiveServer, fake: FakeAnthropic, caplog: pytest.LogCaptureFixture
) -> None:
    fake.api_key = "sk-ant-the-right-one"
    with caplog.at_level(logging.DEBUG):
        error = fail(backend_for(upstream, max_retries=2))
    assert (error.kind, error.retryable) == ("backend_error", False)
    assert "401" in error.message and "ANTHROPIC_API_KEY" in error.message
    assert len(fake.requests) == 1
    assert KEY not in caplog.text
    # The operator's record is under chatbot.backends, where `chatbot serve` logs it.
    [record] = [r for r in caplog.records if "answered HTTP 401" in r.getMessage()]
    assert record.name == "chatbot.backends.anthropic"


def test_permission_denied_and_bad_request(fake: FakeAnthropic, upstream: LiveServer) -> None:
    fake.script(StatusError(403, "permission_error", "no"))
    denied = fail(backend_for(upstream))
    assert (denied.kind, denied.retryable) == ("backend_error", False)
    assert "ANTHROPIC_API_KEY" in denied.message
    fake.script(StatusError(400, "invalid_request_error", f"bad request with {KEY}"))
    bad = fail(backend_for(upstream))
    assert (bad.kind, bad.retryable) == ("backend_error", False)
    assert "400" in bad.message


def test_unreachable_api_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = AnthropicBackend(
        "claude", {"model": "m", "base_url": f"http://127.0.0.1:{port}", "max_retries": 0}
    )
    error = fail(backend)
    assert (error.kind, error.retryable) == ("backend_unavailable", True)


def claude_server(start_server: ServerFactory, upstream: LiveServer, **config: Any) -> LiveServer:
    """A chat server whose default backend ``claude`` is the plugin, talking to ``upstream``;
    ``config`` sets the server's keys of the table (``first_token_timeout``...)."""
    options = {"model": "claude-test", "base_url": upstream.url, "max_retries": 0}
    settings = start_server.settings(
        backends={"claude": BackendConfig("claude", "anthropic", options, **config)},
        default_backend="claude",
    )
    return start_server(settings)


def ask_server(server: LiveServer) -> tuple[list[str], dict[str, Any], str]:
    """Send one streamed message; the deltas, the final frame and the session id."""
    with server.ws(make_token("alice")) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "hi", "id": "t", "stream": True}))
        deltas: list[str] = []
        frame = recv_json(ws)
        while frame.get("type") == "delta":
            deltas.append(frame["delta"])
            frame = recv_json(ws)
    return deltas, frame, session_id


def test_stall_before_the_first_byte_times_out(
    start_server: ServerFactory, fake: FakeAnthropic, upstream: LiveServer
) -> None:
    fake.script(Stall(seconds=30))
    server = claude_server(start_server, upstream, first_token_timeout=0.5)
    deltas, frame, _ = ask_server(server)
    assert deltas == []
    assert frame["error"] == {
        "code": "backend_timeout",
        "message": "the backend 'claude' sent no text within 0.5 s (first_token_timeout)",
        "retryable": True,
    }
    # The server closed the plugin's stream, and that aborted the upstream request.
    wait_for(lambda: fake.last.finished, "the stalled request to end")
    assert fake.last.aborted


def test_the_whole_reply_is_bounded(
    start_server: ServerFactory, fake: FakeAnthropic, upstream: LiveServer
) -> None:
    fake.script(Reply(["tick "] * 100, delay=0.1))
    server = claude_server(start_server, upstream, total_timeout=1)
    deltas, frame, session_id = ask_server(server)
    assert frame["error"]["code"] == "backend_timeout"
    assert frame["error"]["message"].startswith(
        "the reply took longer than 1 s (total_timeout of the backend 'claude')"
    )
    assert 1 <= len(deltas) < 100
    wait_for(lambda: fake.last.finished, "the upstream request to end")
    assert fake.last.aborted
    with server.http(make_token("alice")) as http:
        stored = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
    assert (stored[-1]["status"], stored[-1]["content"]) == ("error", "".join(deltas))


# --- failures in the middle of the stream -----------------------------------------------


@pytest.mark.parametrize(
    ("error_type", "kind", "retryable"),
    [
        ("overloaded_error", "backend_unavailable", True),
        ("api_error", "backend_unavailable", True),
        ("invalid_request_error", "backend_error", False),
    ],
)
def test_error_event_after_some_text(
    fake: FakeAnthropic, upstream: LiveServer, error_type: str, kind: str, retryable: bool
) -> None:
    fake.script(MidStreamError(["one ", "two "], error_type=error_type, message=f"boom {KEY}"))
    items, error = run(backend_for(upstream), ask("hi"))
    assert items == ["one ", "two "]
    assert error is not None
    assert (error.kind, error.retryable) == (kind, retryable)
    assert error_type in error.message
    assert KEY not in str(error)


def test_connection_dropped_mid_stream(fake: FakeAnthropic, upstream: LiveServer) -> None:
    fake.script(MidStreamDrop(["one ", "two "]))
    items, error = run(backend_for(upstream), ask("hi"))
    assert items == ["one ", "two "]
    assert error is not None
    assert error.kind == "backend_error"
    assert "lost" in error.message


# --- closing and cancelling -------------------------------------------------------------


def test_closing_the_stream_aborts_the_upstream_request(
    fake: FakeAnthropic, upstream: LiveServer
) -> None:
    # The fake holds its second chunk until the test ends (or the client goes away).
    fake.script(Reply(["w0 ", "w1 "], delay=HELD))
    backend = backend_for(upstream)

    async def main() -> list[Item]:
        await backend.start()
        try:
            stream = cast(AsyncGenerator[Item, None], backend.stream(ask("hi")))
            got = [await anext(stream)]
            await stream.aclose()
            return got
        finally:
            await backend.aclose()

    assert asyncio.run(main()) == ["w0 "]
    wait_for(lambda: fake.last.finished, "the upstream request to end")
    # It ended while the fake still held the rest: the client went away.
    assert (fake.last.aborted, fake.last.sent_chunks) == (True, 1)


def test_cancelling_the_task_aborts_the_upstream_request(
    fake: FakeAnthropic, upstream: LiveServer
) -> None:
    # The fake holds its second chunk until the test ends (or the client goes away).
    fake.script(Reply(["w0 ", "w1 "], delay=HELD))
    backend = backend_for(upstream)
    received: list[Item] = []

    async def consume(one: asyncio.Event) -> None:
        async for item in backend.stream(ask("hi")):
            received.append(item)
            one.set()

    async def main() -> None:
        await backend.start()
        try:
            one = asyncio.Event()
            task = asyncio.create_task(consume(one))
            await asyncio.wait_for(one.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await backend.aclose()

    asyncio.run(main())
    assert received == ["w0 "]
    wait_for(lambda: fake.last.finished, "the upstream request to end")
    # It ended while the fake still held the rest: the client went away.
    assert (fake.last.aborted, fake.last.sent_chunks) == (True, 1)


@pytest.mark.parametrize(
    "scripted",
    [
        rate_limited(),
        server_error(),
        overloaded(),
        StatusError(401, "authentication_error", "invalid x-api-key"),
        MidStreamError(),
        MidStreamDrop(),
    ],
)
def test_the_key_never_appears_in_errors_or_logs(
    fake: FakeAnthropic,
    upstream: LiveServer,
    scripted: Scripted,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.script(scripted)
    with caplog.at_level(logging.DEBUG):
        error = fail(backend_for(upstream))
    assert KEY not in repr(error)
    assert error.__cause__ is None
    assert KEY not in caplog.text


# --- end to end -------------------------------------------------------------------------


def test_websocket_reply_comes_from_anthropic(
    start_server: ServerFactory, fake: FakeAnthropic, upstream: LiveServer
) -> None:
    # The input tokens told only at the end, as the LiteLLM proxy does: they are stored.
    fake.script(
        Reply(["Hi", " there", "!"], input_tokens=9, output_tokens=3, usage_in="message_delta")
    )
    options = {"model": "claude-test", "base_url": upstream.url, "max_retries": 0}
    settings = start_server.settings(
        backends={"claude": BackendConfig("claude", "anthropic", options)},
        default_backend="claude",
        system_prompt="Answer briefly.",
    )
    server = start_server(settings)
    with server.ws(make_token("alice")) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "Hello Claude", "session_id": session_id}))
        assert recv_json(ws) == {"message": "Hi there!", "session_id": session_id}
    sent = fake.last
    assert sent.api_key == KEY
    assert sent.body["messages"] == [{"role": "user", "content": "Hello Claude"}]
    assert sent.body["system"] == "Answer briefly."
    with server.http(make_token("alice")) as http:
        stored = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
        listed = http.get("/api/backends").json()
    assert stored[-1]["usage"] == {"input_tokens": 9, "output_tokens": 3}
    assert listed["backends"] == [
        {
            "name": "claude",
            "type": "anthropic",
            "default": True,
            "default_model": "claude-test",
            "models": ["claude-test"],
        }
    ]


def test_credentials_in_anthropics_error_text_are_redacted_in_the_server_log(
    fake: FakeAnthropic, upstream: LiveServer, tmp_path: Path
) -> None:
    # The upstream's error message goes to the operator's log; a proxy in front of the API
    # may quote a token or a header in it.
    leaked = make_token("quoted-by-the-upstream")
    fake.script(
        StatusError(400, "invalid_request_error", f"bad token {leaked}; Authorization: Bearer xyz")
    )
    config = tmp_path / "chatbot.toml"
    config.write_text(
        f"""
default_backend = "claude"

[backends.claude]
type = "anthropic"
model = "claude-test"
base_url = "{upstream.url}"
max_retries = 0
""",
        encoding="utf-8",
    )
    with ServeProcess(tmp_path, ANTHROPIC_API_KEY=KEY, CHATBOT_CONFIG=str(config)) as server:
        with connect(server.ws_url, additional_headers=bearer(make_token("alice"))) as ws:
            recv_json(ws)
            ws.send(json.dumps({"message": "hi"}))
            frame = recv_json(ws)
        output = server.stop()
    assert frame["type"] == "error"
    assert "400 invalid_request_error" in frame["error"]["message"]
    # The line is in the log, with the credentials redacted.
    assert "Anthropic answered HTTP 400 invalid_request_error" in output
    assert "bad token [redacted]; Authorization: Bearer [redacted]" in output
    _, payload, signature = leaked.split(".")
    assert payload not in output and signature not in output
    assert "Bearer xyz" not in output
    assert KEY not in output
