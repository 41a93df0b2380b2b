"""The conformance kit passes the built-in echo backend, fails broken ones, and fails a
plugin's test class that leaves out what the kit must be told."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatbot.backends import Backend, ChatRequest, Usage
from chatbot.echo import EchoBackend
from chatbot.errors import BackendError
from chatbot.testing import BackendConformance

LEAKY_KEY = "sk-test-leaky-0123456789"


class TestEchoConformance(BackendConformance):
    never_raises = {
        "backend_error": "echo calls nothing that could fail",
        "backend_timeout": "echo waits on nothing",
        "backend_unavailable": "echo needs nothing to be reachable",
    }

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


class UsageAfterAll(Backend):
    """Yields a Usage after its text."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        yield "hello"
        yield Usage(input_tokens=1, output_tokens=1)


def test_the_kit_fails_a_usage_it_was_told_would_not_come() -> None:
    with pytest.raises(AssertionError, match="the reports_usage fixture is False: make it return"):
        kit.test_reports_usage(UsageAfterAll("usage", {}), False)


def test_the_kit_fails_a_kind_neither_tested_nor_ruled_out() -> None:
    with pytest.raises(AssertionError) as caught:
        kit.test_maps_errors("backend_timeout", {"backend_error": LeaksTheKey("bad", {})})
    assert str(caught.value).startswith(
        "the failing_backends fixture has no backend for 'backend_timeout': add one that fails "
        "that way, or, if the backend never can, name 'backend_timeout' in the class attribute "
        "never_raises with the reason"
    )


def test_the_kit_fails_a_kind_both_tested_and_ruled_out() -> None:
    class Contradicts(BackendConformance):
        never_raises = {"backend_timeout": "it waits on nothing"}

    with pytest.raises(AssertionError, match=r"\['backend_timeout'\] are in failing_backends and"):
        Contradicts().test_maps_errors(
            "backend_error",
            {"backend_error": LeaksTheKey("bad", {}), "backend_timeout": EchoBackend("e", {})},
        )


@pytest.mark.parametrize(
    ("never_raises", "message"),
    [
        ({"backend_late": "no"}, "never_raises has unknown kinds ['backend_late']; use"),
        ({"backend_error": " "}, "never_raises gives 'backend_error' no reason; say why"),
        (["backend_error"], "never_raises must be a mapping from an error kind to a reason"),
    ],
    ids=["unknown-kind", "blank-reason", "not-a-mapping"],
)
def test_a_bad_never_raises_fails_when_the_class_is_defined(
    never_raises: object, message: str
) -> None:
    with pytest.raises(TypeError) as caught:
        type("TestBad", (BackendConformance,), {"never_raises": never_raises})
    assert str(caught.value).startswith(f"TestBad.{message}")


PLUGIN_TESTS = """
import pytest
from chatbot.echo import EchoBackend
from chatbot.testing import BackendConformance


class TestForgetful(BackendConformance):
    @pytest.fixture
    def backend(self):
        return EchoBackend("echo", {})

    @pytest.fixture
    def slow_backend(self):
        return EchoBackend("echo", {"delay": 0.05})


class TestCannotFail(BackendConformance):
    never_raises = {
        "backend_error": "no upstream",
        "backend_timeout": "no upstream",
        "backend_unavailable": "no upstream",
    }

    @pytest.fixture
    def backend(self):
        return EchoBackend("echo", {})

    @pytest.fixture
    def slow_backend(self):
        return EchoBackend("echo", {"delay": 0.05})

    @pytest.fixture
    def reports_usage(self):
        return True
"""


def test_a_plugin_that_leaves_things_out_fails_and_an_opt_out_is_no_skip(tmp_path: Path) -> None:
    """A plugin's own pytest run: every forgotten declaration is a failure that says what to
    write, and the kinds a backend rules out are neither run nor reported as skipped."""
    (tmp_path / "test_plugin.py").write_text(PLUGIN_TESTS, encoding="utf-8")
    report = tmp_path / "report.xml"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "test_plugin.py", "-p", "no:cacheprovider",
         "-p", "no:schemathesis", f"--junitxml={report}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(report).iter("testcase"):  # noqa: S314 - the report of our own run
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}.{case.get('name')}"
        found = [(child.tag, child.get("message", "")) for child in case]
        outcomes[name] = found[0] if found else ("passed", "")
    kit_tests = ["test_streams_text", "test_answers_a_conversation_with_a_system_prompt",
                 "test_honours_cancellation", "test_honours_task_cancellation",
                 "test_lists_its_models", "test_closes_twice_safely"]  # fmt: skip
    kinds = ["backend_error", "backend_timeout", "backend_unavailable"]
    assert outcomes == {
        **{f"TestForgetful.{test}": ("passed", "") for test in kit_tests},
        "TestForgetful.test_reports_usage": (
            "error",
            'failed on setup with "Failed: TestForgetful has no reports_usage fixture: define '
            "one on the class that returns True if the backend yields a Usage after its text, "
            'False if it never does"',
        ),
        **{
            f"TestForgetful.test_maps_errors[{kind}]": (
                "failure",
                f"AssertionError: the failing_backends fixture has no backend for {kind!r}: add "
                f"one that fails that way, or, if the backend never can, name {kind!r} in the "
                "class attribute never_raises with the reason",
            )
            for kind in kinds
        },
        **{f"TestCannotFail.{test}": ("passed", "") for test in kit_tests},
        "TestCannotFail.test_reports_usage": ("passed", ""),
    }
