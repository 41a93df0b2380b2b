"""The reverse backend passes chatbot's conformance kit, and does what its README says."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping

import pytest
from chatbot_reverse import ReverseBackend

from chatbot.backends import Backend, ChatMessage, ChatRequest, Usage, discover
from chatbot.errors import BackendError, ConfigError
from chatbot.testing import BackendConformance


class TestReverseConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> Backend:
        return ReverseBackend("rev", {})

    @pytest.fixture
    def slow_backend(self) -> Backend:
        # The kit's message has several words: several chunks, 50 ms apart.
        return ReverseBackend("rev", {"delay": 0.05})

    @pytest.fixture
    def failing_backends(self) -> Mapping[str, Backend]:
        kinds = ("backend_error", "backend_timeout", "backend_unavailable")
        return {kind: ReverseBackend("rev", {"fail_with": kind}) for kind in kinds}

    @pytest.fixture
    def cancel_was_observed(self) -> Callable[[], bool] | None:
        # No upstream to watch. A network backend tested against a fake vendor server
        # returns a check such as ``lambda: fake.saw_client_disconnect``.
        return None

    @pytest.fixture
    def reports_usage(self) -> bool:
        return True


def reply(backend: Backend, text: str) -> list[str | Usage]:
    async def collect() -> list[str | Usage]:
        return [item async for item in backend.stream(ChatRequest([ChatMessage("user", text)]))]

    return asyncio.run(collect())


def test_registered_as_the_reverse_entry_point() -> None:
    assert discover()["reverse"].load() is ReverseBackend


def test_answers_the_words_in_reverse_order() -> None:
    assert reply(ReverseBackend("rev", {}), "one two  three") == [
        "three ",
        "two ",
        "one",
        Usage(input_tokens=3, output_tokens=3),
    ]


def test_a_fail_message_is_a_backend_error() -> None:
    with pytest.raises(BackendError) as caught:
        reply(ReverseBackend("rev", {}), "!fail")
    assert (caught.value.kind, caught.value.retryable) == ("backend_error", False)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"speed": 1},
            "the reverse backend has no option 'speed'; it takes: delay, fail_with, model",
        ),
        ({"delay": -1}, "delay must be a number of seconds >= 0"),
        ({"delay": "1"}, "delay must be a number of seconds >= 0"),
        ({"fail_with": "oops"}, "fail_with must be one of: backend_error, backend_timeout"),
    ],
    ids=["unknown", "negative-delay", "string-delay", "unknown-kind"],
)
def test_bad_options_say_what_to_fix(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(f"[backends.rev]: {message}")):
        ReverseBackend("rev", options)
