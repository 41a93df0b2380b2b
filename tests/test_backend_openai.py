"""The openai backend through the real ``openai`` SDK, against a fake OpenAI on loopback.

Needs the plugin installed next to chatbot: ``python -m pip install -e backends/openai``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from chatbot_openai import OpenAIBackend
from chatbot_openai.options import PLACEHOLDER_KEY

from chatbot.backends import ChatMessage, ChatRequest, Usage, discover
from chatbot.errors import BackendError, ConfigError
from chatbot.settings import BackendConfig
from tests.conftest import LiveServer, ServerFactory, make_token, recv_json, wait_for
from tests.fakes.openai_server import Failure, FakeOpenAI, RecordedRequest, Reply

KEY = "sk-test-0123456789abcdefSECRET"
KEY_ENV = "CHATBOT_TEST_OPENAI_KEY"
#: A pause of the fake longer than any wait of the test: it ends early only if the client
#: goes away.
HELD = 60.0
HELLO = ChatRequest(messages=[ChatMessage("user", "Hello there")])


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    server = LiveServer(fake.app).start()
    fake.base_url = server.url + "/v1"
    try:
        yield fake
    finally:
        server.stop()


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY


def options(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    """Options pointing at the fake, with the key from ``KEY_ENV`` and fast retries."""
    return {
        "model": "gpt-fake",
        "base_url": fake.base_url,
        "api_key_env": KEY_ENV,
        "max_retries": 0,
        **extra,
    }


@dataclass
class Outcome:
    items: list[str | Usage]
    error: BaseException | None = None

    @property
    def text(self) -> list[str]:
        return [item for item in self.items if isinstance(item, str)]

    @property
    def usage(self) -> Usage | None:
        found = [item for item in self.items if isinstance(item, Usage)]
        return found[-1] if found else None

    def backend_error(self) -> BackendError:
        assert isinstance(self.error, BackendError), f"expected a BackendError: {self.error!r}"
        assert KEY not in str(self.error)
        assert KEY not in repr(self.error)
        assert "Traceback" not in str(self.error)
        assert self.error.__cause__ is None
        return self.error


def run(
    opts: Mapping[str, Any],
    request: ChatRequest = HELLO,
    *,
    take: int | None = None,
    name: str = "gpt",
) -> Outcome:
    """Stream one reply with a started backend; ``take`` stops after that many items with
    ``aclose()``, as the server does when it cancels a reply."""

    async def main() -> Outcome:
        backend = OpenAIBackend(name, opts)
        await backend.start()
        outcome = Outcome([])
        try:
            stream = backend.stream(request)
            try:
                async for item in stream:
                    outcome.items.append(item)
                    if take is not None and len(outcome.items) >= take:
                        break
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
        except BackendError as exc:
            outcome.error = exc
        finally:
            await backend.aclose()
        return outcome

    return asyncio.run(main())


def only_request(fake: FakeOpenAI) -> RecordedRequest:
    requests = fake.requests
    assert len(requests) == 1, requests
    return requests[0]


# -- packaging ---------------------------------------------------------------------------


def test_registered_as_the_openai_entry_point() -> None:
    assert discover()["openai"].load() is OpenAIBackend


# -- a normal reply ----------------------------------------------------------------------


def test_streams_the_chunks_in_order_then_the_usage(fake: FakeOpenAI, key: str) -> None:
    fake.reply(["Hel", "lo", ", ", "world", "!"], usage=(12, 5))
    outcome = run(options(fake))
    assert outcome.error is None
    assert outcome.items == ["Hel", "lo", ", ", "world", "!", Usage(12, 5)]
    assert only_request(fake).wait_finished() == "completed"


def test_the_request_carries_model_prompt_options_and_key(fake: FakeOpenAI, key: str) -> None:
    request = ChatRequest(
        messages=[
            ChatMessage("user", "one"),
            ChatMessage("assistant", "two"),
            ChatMessage("user", "three"),
        ],
        model="gpt-other",
    )
    opts = options(
        fake,
        models=["gpt-fake", "gpt-other"],
        system_prompt="Be brief.",
        temperature=0.3,
        max_tokens=64,
    )
    assert run(opts, request).text == list(FakeOpenAI.default.chunks)
    sent = only_request(fake)
    assert sent.authorization == f"Bearer {KEY}"
    body = sent.body
    assert body["model"] == "gpt-other"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "three"},
    ]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.3
    assert body["max_tokens"] == 64


def test_the_sessions_system_prompt_wins_and_unset_options_are_not_sent(
    fake: FakeOpenAI, key: str
) -> None:
    request = ChatRequest(messages=[ChatMessage("user", "hi")], system_prompt="Session says.")
    run(options(fake, system_prompt="Configured."), request)
    run(options(fake), ChatRequest(messages=[ChatMessage("user", "hi")]))
    first, second = fake.requests
    assert first.body["messages"][0] == {"role": "system", "content": "Session says."}
    assert first.body["model"] == "gpt-fake"
    assert second.body["messages"] == [{"role": "user", "content": "hi"}]
    assert "temperature" not in second.body
    assert "max_tokens" not in second.body


def test_the_key_comes_from_openai_api_key_by_default(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    # No base_url option: the SDK's own OPENAI_BASE_URL leads it to the fake instead.
    monkeypatch.setenv("OPENAI_BASE_URL", str(fake.base_url))
    run({"model": "gpt-fake", "max_retries": 0})
    assert only_request(fake).authorization == f"Bearer {KEY}"


def test_a_base_url_gets_no_key_unless_api_key_env_names_one(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    opts = {"model": "gpt-fake", "base_url": fake.base_url, "max_retries": 0}
    # A local server needs no key, and OPENAI_API_KEY is not sent to another server.
    run(opts)
    assert only_request(fake).authorization == f"Bearer {PLACEHOLDER_KEY}"
    run({**opts, "api_key_env": "OPENAI_API_KEY"})
    assert fake.requests[1].authorization == f"Bearer {KEY}"


# -- configuration -----------------------------------------------------------------------


def test_a_missing_key_names_the_variable_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError) as caught:
        OpenAIBackend("gpt", {"model": "gpt-4o-mini"})
    assert "set the OPENAI_API_KEY environment variable" in str(caught.value)
    assert "api_key_env in [backends.gpt]" in str(caught.value)

    monkeypatch.setenv(KEY_ENV, "  ")
    with pytest.raises(ConfigError, match=f"set the {KEY_ENV} environment variable"):
        OpenAIBackend(
            "local",
            {"model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": KEY_ENV},
        )


def test_a_local_server_needs_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    backend = OpenAIBackend(
        "ollama", {"model": "llama3.2", "base_url": "http://localhost:11434/v1"}
    )
    assert backend.default_model == "llama3.2"
    assert backend.available_models() == ["llama3.2"]


def test_models_lists_what_a_session_may_choose(key: str) -> None:
    backend = OpenAIBackend(
        "gpt", {"model": "gpt-4o-mini", "models": ["gpt-4o", "gpt-4o-mini"], "api_key_env": KEY_ENV}
    )
    assert backend.default_model == "gpt-4o-mini"
    assert backend.available_models() == ["gpt-4o-mini", "gpt-4o"]
    assert KEY not in repr(backend.config)


def test_an_unknown_option_lists_the_valid_ones(key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        OpenAIBackend("gpt", {"model": "m", "api_key_env": KEY_ENV, "temprature": 1})
    message = str(caught.value)
    assert "'temprature'" in message
    for name in ("model", "models", "base_url", "api_key_env", "system_prompt", "temperature"):
        assert name in message
    for name in ("max_tokens", "connect_timeout", "max_retries"):
        assert name in message
    # The server's keys: it strips them from the table, and the plugin does not take them.
    assert "first_token_timeout" not in message and "total_timeout" not in message


@pytest.mark.parametrize(
    ("option", "value", "complaint"),
    [
        ("model", None, "needs a model"),
        ("model", 3, "model must be a non-empty string"),
        ("models", "gpt-4o", "models must be"),
        ("models", [], "models must be"),
        ("base_url", "localhost:11434", "base_url must be"),
        ("api_key_env", "NOT A NAME", "api_key_env must be"),
        ("system_prompt", 1, "system_prompt must be"),
        ("temperature", 2.5, "temperature must be"),
        ("temperature", True, "temperature must be"),
        ("max_tokens", 0, "max_tokens must be"),
        ("max_tokens", 1.5, "max_tokens must be"),
        ("connect_timeout", 0, "connect_timeout must be"),
        ("max_retries", -1, "max_retries must be"),
        ("first_token_timeout", 60, "no option 'first_token_timeout'"),
    ],
)
def test_bad_option_values_say_what_to_fix(
    key: str, option: str, value: object, complaint: str
) -> None:
    opts: dict[str, Any] = {"model": "m", "api_key_env": KEY_ENV, option: value}
    if value is None:
        del opts[option]
    with pytest.raises(ConfigError, match=complaint) as caught:
        OpenAIBackend("gpt", opts)
    assert str(caught.value).startswith("[backends.gpt]: ")


def test_streaming_before_start_is_a_backend_error(key: str) -> None:
    async def main() -> None:
        backend = OpenAIBackend("gpt", {"model": "m", "api_key_env": KEY_ENV})
        with pytest.raises(BackendError, match="not started"):
            async for _ in backend.stream(HELLO):
                pass

    asyncio.run(main())


# -- upstream errors ---------------------------------------------------------------------


def test_429_is_retryable_unavailable_after_the_sdks_retries(fake: FakeOpenAI, key: str) -> None:
    fake.rate_limit(retry_after=7, retry_after_ms=20, times=3)
    outcome = run(options(fake, max_retries=2))
    error = outcome.backend_error()
    assert (error.kind, error.retryable) == ("backend_unavailable", True)
    assert "'gpt'" in error.message
    assert "429" in error.message
    # retry-after-ms (20 ms) is the finer of the two headers, as the SDK reads them.
    assert "try again in 1 second" in error.message
    assert outcome.items == []
    # The first attempt and max_retries=2 retries, then the SDK gave up.
    assert len(fake.requests) == 3


def test_retry_after_in_seconds_is_named(fake: FakeOpenAI, key: str) -> None:
    fake.rate_limit(retry_after=7)
    error = run(options(fake, max_retries=0)).backend_error()
    assert "try again in 7 seconds" in error.message


def test_a_429_then_a_reply_succeeds_through_the_sdks_retry(fake: FakeOpenAI, key: str) -> None:
    fake.rate_limit(retry_after=None, retry_after_ms=10)
    fake.reply(["after ", "a retry"])
    outcome = run(options(fake, max_retries=2))
    assert outcome.error is None
    assert outcome.text == ["after ", "a retry"]
    assert len(fake.requests) == 2


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retryable_unavailable(fake: FakeOpenAI, key: str, status: int) -> None:
    fake.server_error(status=status)
    error = run(options(fake)).backend_error()
    assert (error.kind, error.retryable) == ("backend_unavailable", True)
    assert f"HTTP {status}" in error.message
    assert "gpt" in error.message


def test_a_wrong_key_names_the_variable_never_the_key(fake: FakeOpenAI, key: str) -> None:
    fake.api_key = "sk-the-right-one"
    error = run(options(fake, max_retries=2)).backend_error()
    assert (error.kind, error.retryable) == ("backend_error", False)
    assert "401" in error.message
    assert f"check the key in the {KEY_ENV} environment variable" in error.message
    assert "Incorrect API key" not in error.message
    assert len(fake.requests) == 1  # a 401 is not retried


def test_an_unknown_model_is_not_retryable(fake: FakeOpenAI, key: str) -> None:
    fake.models = frozenset({"gpt-fake"})
    request = ChatRequest(messages=[ChatMessage("user", "hi")], model="gpt-nope")
    error = run(options(fake, models=["gpt-fake", "gpt-nope"]), request).backend_error()
    assert (error.kind, error.retryable) == ("backend_error", False)
    assert "404" in error.message
    assert "gpt-nope" in error.message


@pytest.mark.parametrize(
    ("status", "type_", "code", "label"),
    [
        # OpenAI: a type and a string code.
        (400, "invalid_request_error", "context_length_exceeded",
         "HTTP 400, type invalid_request_error, code context_length_exceeded"),
        # A digit string (LiteLLM) or a number (vLLM) that is not the status says more.
        (400, "invalid_request_error", "1301", "HTTP 400, type invalid_request_error, code 1301"),
        (422, None, 1301, "HTTP 422, code 1301"),
        # The status again says nothing new; the type still does.
        (400, "BadRequestError", 400, "HTTP 400, type BadRequestError)"),
        (400, "invalid_request_error", "400", "HTTP 400, type invalid_request_error)"),
        # Ollama: a type and a null code.
        (400, "api_error", None, "HTTP 400, type api_error)"),
        # Free text is not an identifier, and is not repeated.
        (400, "the request was bad", "no good", "(HTTP 400)"),
    ],
)  # fmt: skip
def test_the_error_type_and_code_are_named_in_any_form(
    fake: FakeOpenAI, key: str, status: int, type_: str | None, code: str | int | None, label: str
) -> None:
    fake.push(Failure(status, "the upstream's own words", type_, code))
    error = run(options(fake)).backend_error()
    assert (error.kind, error.retryable) == ("backend_error", False)
    assert label in error.message
    assert "own words" not in error.message


@pytest.mark.parametrize(
    ("type_", "code"),
    [("insufficient_quota", "insufficient_quota"), ("insufficient_quota", "429"),
     ("insufficient_quota", None), ("requests", "insufficient_quota")],
)  # fmt: skip
def test_no_quota_left_is_not_retryable_whichever_field_says_it(
    fake: FakeOpenAI, key: str, type_: str, code: str | None
) -> None:
    fake.push(Failure(429, "You exceeded your current quota", type_, code))
    error = run(options(fake)).backend_error()
    assert (error.kind, error.retryable) == ("backend_unavailable", False)
    assert "no quota left" in error.message
    assert "check its plan and billing" in error.message


def test_an_error_event_mid_reply_names_its_type_and_code(fake: FakeOpenAI, key: str) -> None:
    fake.reply(["one "], error=Failure(500, "The model crashed", "server_error", 500))
    outcome = run(options(fake))
    assert outcome.items == ["one "]
    error = outcome.backend_error()
    assert (error.kind, error.retryable) == ("backend_error", False)
    assert error.message == (
        "backend 'gpt': the server at "
        f"{fake.base_url.split('/')[2]} reported an error during the reply "
        "(type server_error, code 500)"
    )


@pytest.mark.parametrize(
    ("script", "said"),
    [
        (Reply(("a whole reply",), whole=True), "answered with application/json instead of"),
        (Failure(200, "streaming is off", "invalid_request_error", "400"),
         "answered with an error (type invalid_request_error, code 400) instead of"),
    ],
)  # fmt: skip
def test_json_instead_of_a_stream_is_final(
    start_server: ServerFactory, fake: FakeOpenAI, key: str, script: Reply | Failure, said: str
) -> None:
    # A server that does not stream answers every try the same way: retrying cannot help,
    # and the operator has to change the configuration.
    fake.push(script)
    server = openai_server(start_server, fake)
    with server.ws(make_token("alice")) as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": "hi", "id": "j"}))
        frame = recv_json(ws)
    assert frame["type"] == "error", frame
    assert (frame["error"]["code"], frame["error"]["retryable"]) == ("backend_error", False)
    message = frame["error"]["message"]
    assert said in message
    assert message.endswith('a stream of events ("stream": true); check base_url')
    assert "a whole reply" not in message and "streaming is off" not in message
    assert len(fake.requests) == 1


def test_nothing_listening_is_retryable_unavailable(key: str) -> None:
    closed = LiveServer(FakeOpenAI().app)  # bound, never started: the port refuses
    port = closed.port
    closed.sock.close()
    opts = {
        "model": "m",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "api_key_env": KEY_ENV,
        "max_retries": 0,
    }
    error = run(opts).backend_error()
    assert (error.kind, error.retryable) == ("backend_unavailable", True)
    assert f"127.0.0.1:{port}" in error.message


# -- timeouts: the server's deadlines close the plugin's stream ---------------------------


def ask(server: LiveServer, *, stream: bool = False) -> tuple[list[str], dict[str, Any], str]:
    """Send one message; the deltas before the final frame, that frame, the session id."""
    with server.ws(make_token("alice")) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "hi", "id": "t", "stream": stream}))
        deltas: list[str] = []
        frame = recv_json(ws)
        while frame.get("type") == "delta":
            deltas.append(frame["delta"])
            frame = recv_json(ws)
    return deltas, frame, session_id


def test_a_stall_before_the_first_byte_times_out_and_aborts_the_request(
    start_server: ServerFactory, fake: FakeOpenAI, key: str
) -> None:
    fake.stall(30)
    server = openai_server(start_server, fake, max_retries=2, first_token_timeout=0.5)
    _, frame, _ = ask(server)
    assert frame["error"] == {
        "code": "backend_timeout",
        "message": "the backend 'gpt' sent no text within 0.5 s (first_token_timeout)",
        "retryable": True,
    }
    # Closing the plugin's stream closed the request: the fake saw the client go away.
    assert only_request(fake).wait_finished() == "aborted"


def test_headers_without_text_count_as_no_first_token(
    start_server: ServerFactory, fake: FakeOpenAI, key: str
) -> None:
    fake.reply(["too late"], first_delay=30)
    server = openai_server(start_server, fake, first_token_timeout=0.5)
    _, frame, _ = ask(server)
    assert frame["error"]["code"] == "backend_timeout"
    assert "first_token_timeout" in frame["error"]["message"]
    assert only_request(fake).wait_finished() == "aborted"


def test_the_total_timeout_bounds_a_slow_reply(
    start_server: ServerFactory, fake: FakeOpenAI, key: str
) -> None:
    fake.reply([f"w{i} " for i in range(100)], delay=0.1)
    server = openai_server(start_server, fake, first_token_timeout=5, total_timeout=1)
    deltas, frame, session_id = ask(server, stream=True)
    assert frame["error"]["code"] == "backend_timeout"
    assert frame["error"]["message"].startswith(
        "the reply took longer than 1 s (total_timeout of the backend 'gpt')"
    )
    assert 1 <= len(deltas) < 100
    assert deltas == [f"w{i} " for i in range(len(deltas))]
    assert only_request(fake).wait_finished() == "aborted"
    with server.http(make_token("alice")) as http:
        stored = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
    assert (stored[-1]["status"], stored[-1]["content"]) == ("error", "".join(deltas))


# -- broken and cancelled streams --------------------------------------------------------


def test_a_connection_dropped_mid_reply_fails_after_the_chunks(fake: FakeOpenAI, key: str) -> None:
    fake.drop(["one ", "two ", "three ", "four"], after=2)
    outcome = run(options(fake, max_retries=2))
    assert outcome.items == ["one ", "two "]
    error = outcome.backend_error()
    assert (error.kind, error.retryable) == ("backend_error", False)
    assert "lost" in error.message
    assert only_request(fake).wait_finished() == "dropped"
    assert len(fake.requests) == 1  # a reply that broke off is never retried


def test_a_connection_dropped_before_any_text_may_be_retried(fake: FakeOpenAI, key: str) -> None:
    fake.drop(["one"], after=0)
    outcome = run(options(fake))
    assert outcome.items == []
    error = outcome.backend_error()
    assert (error.kind, error.retryable) == ("backend_error", True)


async def wait_finished(fake: FakeOpenAI) -> RecordedRequest:
    """Wait, with the backend's client still open, until the fake's only response ended."""
    sent = only_request(fake)
    if not await asyncio.to_thread(sent.finished.wait, 5):
        raise AssertionError("the upstream request is still running")
    return sent


def test_closing_the_generator_aborts_the_upstream_request(fake: FakeOpenAI, key: str) -> None:
    fake.reply(["w0 ", "w1 "], delay=HELD)  # the second chunk is held until the client leaves
    received: list[str | Usage] = []

    async def main() -> RecordedRequest:
        backend = OpenAIBackend("gpt", options(fake))
        await backend.start()
        try:
            stream = backend.stream(HELLO)
            async for item in stream:
                received.append(item)
                break
            await stream.aclose()  # type: ignore[attr-defined]
            # Before the client closes: closing the generator alone must end the request.
            return await wait_finished(fake)
        finally:
            await backend.aclose()

    sent = asyncio.run(main())
    assert received == ["w0 "]
    # It ended while the fake still held the rest: the client went away.
    assert (sent.outcome, sent.chunks_sent) == ("aborted", 1)


def test_cancelling_the_task_aborts_the_upstream_request(fake: FakeOpenAI, key: str) -> None:
    fake.reply(["w0 ", "w1 "], delay=HELD)  # the second chunk is held until the client leaves
    received: list[str | Usage] = []

    async def main() -> RecordedRequest:
        backend = OpenAIBackend("gpt", options(fake))
        await backend.start()
        one = asyncio.Event()
        try:

            async def consume() -> None:
                async for item in backend.stream(HELLO):
                    received.append(item)
                    one.set()

            task = asyncio.create_task(consume())
            async with asyncio.timeout(10):
                await one.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await wait_finished(fake)
        finally:
            await backend.aclose()

    sent = asyncio.run(main())
    assert received == ["w0 "]
    # It ended while the fake still held the rest: the client went away.
    assert (sent.outcome, sent.chunks_sent) == ("aborted", 1)


# -- end to end --------------------------------------------------------------------------


def openai_server(
    start_server: ServerFactory,
    fake: FakeOpenAI,
    *,
    first_token_timeout: float = 60,
    total_timeout: float = 600,
    **extra: Any,
) -> LiveServer:
    """A chat server whose default backend ``gpt`` is the plugin, talking to ``fake``."""
    config = BackendConfig(
        "gpt",
        "openai",
        options(fake, **extra),
        first_token_timeout=first_token_timeout,
        total_timeout=total_timeout,
    )
    settings = start_server.settings(backends={"gpt": config}, default_backend="gpt")
    return start_server(settings)


@pytest.mark.e2e
def test_a_chat_reply_comes_from_the_fake(
    start_server: ServerFactory, fake: FakeOpenAI, key: str
) -> None:
    fake.reply(["The ", "answer ", "is ", "42."], usage=(9, 4))
    server = openai_server(start_server, fake)
    alice = make_token("alice")
    with server.ws(alice) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "What is the answer?", "session_id": session_id}))
        assert recv_json(ws) == {"message": "The answer is 42.", "session_id": session_id}
    sent = only_request(fake)
    assert sent.authorization == f"Bearer {KEY}"
    assert sent.body["messages"][-1] == {"role": "user", "content": "What is the answer?"}
    with server.http(alice) as http:
        messages = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "What is the answer?"),
        ("assistant", "The answer is 42."),
    ]
    assert messages[-1]["usage"] == {"input_tokens": 9, "output_tokens": 4}
    with server.http(alice) as http:
        backends = http.get("/api/backends").json()
    assert backends["backends"] == [
        {
            "name": "gpt",
            "type": "openai",
            "default": True,
            "default_model": "gpt-fake",
            "models": ["gpt-fake"],
        }
    ]


@pytest.mark.e2e
def test_a_cancel_on_the_socket_aborts_the_upstream_request(
    start_server: ServerFactory, fake: FakeOpenAI, key: str
) -> None:
    fake.reply(["w0 ", "w1 "], delay=HELD)  # the second chunk is held until the client leaves
    server = openai_server(start_server, fake)
    with server.ws(make_token("alice")) as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": "go", "stream": True, "id": "c1"}))
        assert recv_json(ws)["delta"] == "w0 "
        ws.send('{"type": "cancel"}')
        frame = recv_json(ws)
        assert (frame["type"], frame["status"], frame["reply_to"]) == ("message", "cancelled", "c1")
        sent = fake.wait_for_requests(1)[0]
        wait_for(sent.finished.is_set, "the upstream request to end")
    # It ended while the fake still held the rest: the cancel reached it.
    assert (sent.outcome, sent.chunks_sent) == ("aborted", 1)


def test_an_upstream_error_reaches_the_socket_without_the_key(
    start_server: ServerFactory, fake: FakeOpenAI, key: str
) -> None:
    fake.api_key = "sk-the-right-one"
    server = openai_server(start_server, fake)
    with server.ws(make_token("alice")) as ws:
        recv_json(ws)
        ws.send(json.dumps({"message": "hi"}))
        raw = ws.recv(timeout=10)
    assert isinstance(raw, str)
    assert KEY not in raw
    frame = json.loads(raw)
    assert frame["type"] == "error", frame
    assert (frame["error"]["code"], frame["error"]["retryable"]) == ("backend_error", False)
    assert KEY_ENV in frame["error"]["message"]
