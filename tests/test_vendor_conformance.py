"""The conformance kit, run against the openai and anthropic backends and their fakes.

Each failure kind gets its own fake (or a port that refuses connections), so that a
scripted failure can never answer another test's request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest
from chatbot_anthropic import AnthropicBackend
from chatbot_openai import OpenAIBackend

from chatbot.backends import Backend
from chatbot.testing import BackendConformance
from tests.conftest import LiveServer
from tests.fakes import anthropic_server, openai_server

KEY = "sk-conformance-key-0123456789"
SLOW = tuple(f"w{n} " for n in range(40))
REFUSED = "http://127.0.0.1:9"  # the discard port: nothing listens there


def impatient(backend: Backend) -> Backend:
    """``backend`` with a 0.3 s ``total_timeout``, set on the instance as the server does
    from the table; a vendor plugin gives it to its SDK client as the request's timeout."""
    backend.total_timeout = 0.3
    return backend


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)


@pytest.fixture
def started() -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def start(app: object) -> LiveServer:
        server = LiveServer(app).start()  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class TestOpenAIConformance(BackendConformance):
    @pytest.fixture
    def fake(self, started: Callable[..., LiveServer]) -> openai_server.FakeOpenAI:
        fake = openai_server.FakeOpenAI(api_key=KEY)
        fake.base_url = started(fake.app).url + "/v1"
        return fake

    @staticmethod
    def make(base_url: str, **options: object) -> OpenAIBackend:
        return OpenAIBackend(
            "gpt", {"model": "gpt-fake", "base_url": base_url, "api_key_env": "OPENAI_API_KEY",
                    "max_retries": 0, **options}
        )  # fmt: skip

    @pytest.fixture
    def backend(self, fake: openai_server.FakeOpenAI) -> Backend:
        assert fake.base_url is not None
        return self.make(fake.base_url)

    @pytest.fixture
    def slow_backend(self, fake: openai_server.FakeOpenAI) -> Backend:
        assert fake.base_url is not None
        fake.push(openai_server.Reply(SLOW, delay=0.05), times=3)
        return self.make(fake.base_url)

    @pytest.fixture
    def cancel_was_observed(self, fake: openai_server.FakeOpenAI) -> Callable[[], bool]:
        return lambda: any(r.aborted for r in fake.requests)

    @pytest.fixture
    def reports_usage(self) -> bool:
        return True

    @pytest.fixture
    def failing_backends(self, started: Callable[..., LiveServer]) -> Mapping[str, Backend]:
        stalled = openai_server.FakeOpenAI(api_key=KEY)
        stalled.push(openai_server.Reply(("late",), stall=5))
        wrong_key = openai_server.FakeOpenAI(api_key="sk-another-key-entirely")
        return {
            "backend_unavailable": self.make(REFUSED + "/v1"),
            "backend_timeout": impatient(self.make(started(stalled.app).url + "/v1")),
            "backend_error": self.make(started(wrong_key.app).url + "/v1"),
        }


class TestAnthropicConformance(BackendConformance):
    @pytest.fixture
    def fake(self) -> anthropic_server.FakeAnthropic:
        return anthropic_server.FakeAnthropic(api_key=KEY)

    @staticmethod
    def make(base_url: str, **options: object) -> AnthropicBackend:
        return AnthropicBackend(
            "claude", {"model": "claude-fake", "base_url": base_url, "max_retries": 0, **options}
        )

    @pytest.fixture
    def backend(
        self, fake: anthropic_server.FakeAnthropic, started: Callable[..., LiveServer]
    ) -> Backend:
        return self.make(started(fake.app()).url)

    @pytest.fixture
    def slow_backend(
        self, fake: anthropic_server.FakeAnthropic, started: Callable[..., LiveServer]
    ) -> Backend:
        fake.default = anthropic_server.Reply(chunks=SLOW, delay=0.05)
        return self.make(started(fake.app()).url)

    @pytest.fixture
    def cancel_was_observed(self, fake: anthropic_server.FakeAnthropic) -> Callable[[], bool]:
        return lambda: any(r.aborted for r in fake.requests)

    @pytest.fixture
    def reports_usage(self) -> bool:
        return True

    @pytest.fixture
    def failing_backends(self, started: Callable[..., LiveServer]) -> Mapping[str, Backend]:
        stalled = anthropic_server.FakeAnthropic(
            api_key=KEY, default=anthropic_server.Stall(seconds=5)
        )
        wrong_key = anthropic_server.FakeAnthropic(api_key="sk-another-key-entirely")
        return {
            "backend_unavailable": self.make(REFUSED),
            "backend_timeout": impatient(self.make(started(stalled.app()).url)),
            "backend_error": self.make(started(wrong_key.app()).url),
        }
