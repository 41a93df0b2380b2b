"""The ``anthropic`` backend with the real SDK, against the fake Messages API on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from typing import Any, cast

import pytest
from chatbot_anthropic import AnthropicBackend

from chatbot.backends import ChatMessage, ChatRequest, Usage, discover
from chatbot.errors import BackendError, ConfigError
from chatbot.settings import BackendConfig
from tests.conftest import LiveServer, ServerFactory, make_token, recv_json
from tests.fakes.anthropic_server import (
    FakeAnthropic,
    MidStreamDrop,
    MidStreamError,
    Reply,
    Scripted,
    Stall,
    StatusError,
    overloaded,
    rate_limited,
    server_error,
)

KEY = "sk-ant-test-key-0123456789-do-not-leak"
Item = str | Usage


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
        ({"model": "m", "temperature": 1.5}, "temperature must be a number between 0 and 1"),
        ({"model": "m", "temperature": True}, "temperature must be a number"),
        ({"model": "m", "max_tokens": 0}, "max_tokens must be a whole number >= 1"),
        ({"model": "m", "max_tokens": 10.5}, "max_tokens must be a whole number"),
        ({"model": "m", "max_retries": -1}, "max_retries must be a whole number >= 0"),
        ({"model": "m", "first_token_timeout": 0}, "first_token_timeout must be a number"),
        ({"model": "m", "total_timeout": "10"}, "total_timeout must be a number"),
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


def test_stall_before_the_first_byte_times_out(fake: FakeAnthropic, upstream: LiveServer) -> None:
    fake.script(Stall(seconds=30))
    started = time.monotonic()
    error = fail(backend_for(upstream, first_token_timeout=0.5))
    assert time.monotonic() - started < 5
    assert (error.kind, error.retryable) == ("backend_timeout", True)
    assert "first_token_timeout" in error.message
    assert fake.wait_until(lambda: fake.last.aborted), "the stalled request was not aborted"


def test_the_whole_reply_is_bounded(fake: FakeAnthropic, upstream: LiveServer) -> None:
    fake.script(Reply(["tick "] * 50, delay=0.1))
    items, error = run(backend_for(upstream, total_timeout=0.6), ask("hi"))
    assert error is not None
    assert (error.kind, error.retryable) == ("backend_timeout", True)
    assert "total_timeout" in error.message
    assert 1 <= len(texts(items)) < 50
    assert fake.wait_until(lambda: fake.last.aborted)


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
    fake.script(Reply([f"w{n} " for n in range(100)], delay=0.05))
    backend = backend_for(upstream)

    async def main() -> list[Item]:
        await backend.start()
        try:
            stream = cast(AsyncGenerator[Item, None], backend.stream(ask("hi")))
            got = [await anext(stream), await anext(stream)]
            await stream.aclose()
            return got
        finally:
            await backend.aclose()

    assert asyncio.run(main()) == ["w0 ", "w1 "]
    assert fake.wait_until(lambda: fake.last.aborted), "the upstream request was not aborted"
    assert fake.last.sent_chunks < 100


def test_cancelling_the_task_aborts_the_upstream_request(
    fake: FakeAnthropic, upstream: LiveServer
) -> None:
    fake.script(Reply([f"w{n} " for n in range(100)], delay=0.05))
    backend = backend_for(upstream)
    received: list[Item] = []

    async def consume(two: asyncio.Event) -> None:
        async for item in backend.stream(ask("hi")):
            received.append(item)
            if len(received) == 2:
                two.set()

    async def main() -> None:
        await backend.start()
        try:
            two = asyncio.Event()
            task = asyncio.create_task(consume(two))
            await asyncio.wait_for(two.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        finally:
            await backend.aclose()

    asyncio.run(main())
    assert fake.wait_until(lambda: fake.last.aborted), "the upstream request was not aborted"
    assert fake.last.sent_chunks < 100


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
    fake.script(Reply(["Hi", " there", "!"], input_tokens=9, output_tokens=3))
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
        listed = http.get("/api/backends").json()
    assert listed["backends"] == [
        {
            "name": "claude",
            "type": "anthropic",
            "default": True,
            "default_model": "claude-test",
            "models": ["claude-test"],
        }
    ]
