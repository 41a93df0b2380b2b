"""The conformance kit passes the built-in echo backend and fails broken ones."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import pytest

from chatbot.backends import Backend, ChatRequest, Usage
from chatbot.echo import EchoBackend
from chatbot.errors import BackendError
from chatbot.testing import BackendConformance

LEAKY_KEY = "sk-test-leaky-0123456789"


class TestEchoConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> Backend:
        return EchoBackend("echo", {})

    @pytest.fixture
    def slow_backend(self) -> Backend:
        return EchoBackend("echo", {"delay": 0.05})

    @pytest.fixture
    def reports_usage(self) -> bool:
        return True


# -- broken backends the kit must fail ---------------------------------------------------


class UsageFirst(Backend):
    """Yields its Usage before the text."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        yield Usage(input_tokens=1, output_tokens=1)
        yield "hello"


class SwallowsCancellation(Backend):
    """Catches CancelledError and carries on with the reply."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        for word in ("one ", "two ", "three"):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)
            yield word


class FailsToClose(Backend):
    """Raises when the server closes the stream."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        for word in ("one ", "two ", "three"):
            try:
                yield word
            except GeneratorExit:
                raise RuntimeError("the upstream request could not be released") from None
            await asyncio.sleep(0.05)


class LeaksTheKey(Backend):
    """Puts an API key from the environment in its error message."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        key = os.environ["CHATBOT_TEST_API_KEY"]
        if key:
            raise BackendError(f"unauthorized key {key}")
        yield "no key"


kit = BackendConformance()


def test_the_kit_fails_a_usage_before_the_text() -> None:
    with pytest.raises(AssertionError, match="Usage before the text"):
        kit.test_streams_text(UsageFirst("bad", {}))


def test_the_kit_fails_a_backend_that_swallows_cancellation() -> None:
    with pytest.raises(AssertionError, match="must let CancelledError propagate"):
        kit.test_honours_task_cancellation(SwallowsCancellation("bad", {}), None)


def test_the_kit_fails_a_backend_that_raises_when_closed() -> None:
    with pytest.raises(AssertionError, match="closing the stream raised"):
        kit.test_honours_cancellation(FailsToClose("bad", {}), None)


def test_the_kit_fails_an_unseen_upstream_abort() -> None:
    impatient = BackendConformance()
    impatient.cancel_timeout = 0.5
    with pytest.raises(AssertionError, match="upstream did not see"):
        impatient.test_honours_cancellation(EchoBackend("echo", {"delay": 0.05}), lambda: False)


def test_the_kit_fails_a_key_in_an_error_message_without_showing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATBOT_TEST_API_KEY", LEAKY_KEY)
    with pytest.raises(AssertionError, match="CHATBOT_TEST_API_KEY") as caught:
        kit.test_maps_errors("backend_error", {"backend_error": LeaksTheKey("bad", {})})
    assert LEAKY_KEY not in str(caught.value)


def test_the_kit_fails_the_wrong_error_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBOT_TEST_API_KEY", LEAKY_KEY)
    with pytest.raises(AssertionError, match="of kind 'backend_timeout', got 'backend_error'"):
        kit.test_maps_errors("backend_timeout", {"backend_timeout": LeaksTheKey("bad", {})})


def test_the_kit_fails_a_failing_backend_that_answers() -> None:
    with pytest.raises(AssertionError, match="answered instead of failing"):
        kit.test_maps_errors("backend_error", {"backend_error": EchoBackend("echo", {})})
