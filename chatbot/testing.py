"""A conformance kit for backends: the tests every backend should pass, for its own test suite.

This module is a test-time helper. It imports pytest, which chatbot itself does not depend
on (it comes with the ``test`` extra); import it from tests only, never from a backend.

Subclass :class:`BackendConformance` in a test file and give it a ``backend`` fixture; the
other fixtures are optional and add what only you can provide::

    import pytest

    from chatbot.backends import Backend
    from chatbot.testing import BackendConformance
    from mypackage import MyBackend


    class TestMyBackend(BackendConformance):
        @pytest.fixture
        def backend(self) -> Backend:
            return MyBackend("mine", {})

        @pytest.fixture
        def reports_usage(self) -> bool:
            return True

The kit starts and closes each backend itself (``start()`` and ``aclose()``), on one event
loop per test, so the tests are plain pytest functions and need no async plugin.

Fixtures, defined on the subclass (a default here hides one defined in a ``conftest.py``):

``backend`` (required)
    A constructed backend that answers normally.
``slow_backend`` (default: ``backend``)
    One whose reply takes at least 3 chunks with awaits between them, so that stopping it
    after the first chunk cancels it mid-stream.
``failing_backends`` (default: none)
    A mapping from a :class:`~chatbot.errors.BackendError` kind (``backend_error``,
    ``backend_timeout``, ``backend_unavailable``) to a backend configured to fail that way:
    a port that refuses connections, a fake vendor that answers 500, a stall with a tiny
    timeout.
``cancel_was_observed`` (default: ``None``)
    For a network backend: a callable that returns True once the upstream has seen the
    request aborted. The kit polls it after stopping a reply.
``reports_usage`` (default: False)
    Whether the backend yields a :class:`~chatbot.backends.Usage` after its text.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TypeVar, get_args

import pytest

from chatbot.backends import Backend, ChatMessage, ChatRequest, Usage
from chatbot.errors import BackendError, BackendErrorKind

__all__ = ["BackendConformance"]

T = TypeVar("T")

KINDS: tuple[BackendErrorKind, ...] = get_args(BackendErrorKind)
SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET")  # _API_KEY ends in _KEY

HELLO = ChatRequest(messages=[ChatMessage("user", "Hello there, how are you today?")])
CONVERSATION = ChatRequest(
    messages=[
        ChatMessage("user", "My name is Ada."),
        ChatMessage("assistant", "Nice to meet you, Ada."),
        ChatMessage("user", "What is my name?"),
    ],
    system_prompt="Answer in one short sentence.",
)


def _for(backend: Backend, request: ChatRequest) -> ChatRequest:
    """The request as the server sends it: with the backend's default model."""
    return replace(request, model=backend.default_model)


async def _within(seconds: float, awaitable: Awaitable[T], what: str) -> T:
    """Await ``awaitable``; an AssertionError naming ``what`` if it takes longer."""
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await awaitable
    except TimeoutError:
        if scope.expired():
            raise AssertionError(f"{what} did not finish within {seconds:g} s") from None
        raise


async def _close(stream: AsyncIterator[str | Usage]) -> None:
    """Close the stream as the server does when it stops a reply."""
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def _collect(stream: AsyncIterator[str | Usage]) -> list[str | Usage]:
    try:
        return [item async for item in stream]
    finally:
        await _close(stream)


async def _wait_until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``predicate`` (it may watch another thread) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what} within {seconds:g} s")
        await asyncio.sleep(0.02)


def _check_reply(items: list[str | Usage]) -> str:
    """Check the shape of a whole reply and return its text."""
    for item in items:
        assert isinstance(item, str | Usage), (
            f"stream() yielded {item!r}: only str chunks and one Usage are allowed"
        )
    usages = [index for index, item in enumerate(items) if isinstance(item, Usage)]
    assert len(usages) <= 1, f"stream() yielded {len(usages)} Usage items; at most one is allowed"
    assert usages in ([], [len(items) - 1]), "stream() yielded its Usage before the text"
    text = "".join(item for item in items if isinstance(item, str))
    assert text, f"stream() yielded no text: {items!r}"
    return text


def _secrets() -> list[str]:
    """Names of the environment variables that look like secrets, long enough to matter."""
    return [
        name
        for name, value in os.environ.items()
        if name.upper().endswith(SECRET_SUFFIXES) and len(value) >= 8
    ]


def _run(backend: Backend, body: Callable[[], Awaitable[T]]) -> T:
    """Start the backend, run ``body`` and close the backend, on a fresh event loop."""

    async def main() -> T:
        await backend.start()
        try:
            return await body()
        finally:
            await backend.aclose()

    with asyncio.Runner() as runner:
        return runner.run(main())


class BackendConformance:
    """The tests every backend should pass; subclass it and give it a ``backend`` fixture."""

    #: Seconds a whole reply (or a failure) may take.
    reply_timeout: float = 30.0
    #: Seconds a stopped reply may take to end, and the upstream to see it end.
    cancel_timeout: float = 5.0

    # -- fixtures with defaults --------------------------------------------------------

    @pytest.fixture
    def slow_backend(self, backend: Backend) -> Backend:
        return backend

    @pytest.fixture
    def failing_backends(self) -> Mapping[str, Backend]:
        return {}

    @pytest.fixture
    def cancel_was_observed(self) -> Callable[[], bool] | None:
        return None

    @pytest.fixture
    def reports_usage(self) -> bool:
        return False

    # -- a normal reply ----------------------------------------------------------------

    def test_streams_text(self, backend: Backend) -> None:
        """A one-message request is answered with text chunks and at most one Usage, last."""

        async def body() -> list[str | Usage]:
            stream = backend.stream(_for(backend, HELLO))
            return await _within(self.reply_timeout, _collect(stream), "the reply")

        _check_reply(_run(backend, body))

    def test_answers_a_conversation_with_a_system_prompt(self, backend: Backend) -> None:
        """Several turns, both roles and a system prompt are answered without error."""

        async def body() -> list[str | Usage]:
            stream = backend.stream(_for(backend, CONVERSATION))
            return await _within(self.reply_timeout, _collect(stream), "the reply")

        _check_reply(_run(backend, body))

    def test_reports_usage(self, backend: Backend, reports_usage: bool) -> None:
        """With ``reports_usage``, the reply ends with a Usage of non-negative ints."""
        if not reports_usage:
            pytest.skip("the reports_usage fixture is False")

        async def body() -> list[str | Usage]:
            stream = backend.stream(_for(backend, HELLO))
            return await _within(self.reply_timeout, _collect(stream), "the reply")

        items = _run(backend, body)
        _check_reply(items)
        usage = items[-1]
        assert isinstance(usage, Usage), f"the reply did not end with a Usage: {items!r}"
        for field in ("input_tokens", "output_tokens"):
            value = getattr(usage, field)
            assert isinstance(value, int) and not isinstance(value, bool) and value >= 0, (
                f"Usage.{field} is {value!r}, not an int >= 0"
            )

    # -- stopping a reply --------------------------------------------------------------

    def test_honours_cancellation(
        self, slow_backend: Backend, cancel_was_observed: Callable[[], bool] | None
    ) -> None:
        """Closing the stream after the first chunk ends it promptly and quietly."""

        async def body() -> None:
            stream = slow_backend.stream(_for(slow_backend, HELLO))
            aclose = getattr(stream, "aclose", None)
            assert callable(aclose), (
                "stream() must return an async generator: the server stops a reply with aclose()"
            )
            try:
                first = await _within(self.reply_timeout, anext(stream), "the first chunk")
            except StopAsyncIteration:
                raise AssertionError("the slow_backend's reply was empty") from None
            except BaseException:
                await aclose()
                raise
            if not (isinstance(first, str) and first):
                await aclose()
                raise AssertionError(f"the first item was {first!r}, not text")
            try:
                await _within(self.cancel_timeout, aclose(), "closing the stream")
            except AssertionError:
                raise
            except Exception as exc:
                raise AssertionError(f"closing the stream raised {exc!r}") from exc
            if cancel_was_observed is not None:
                await _wait_until(
                    cancel_was_observed,
                    self.cancel_timeout,
                    "the upstream did not see the closed stream's request aborted",
                )

        _run(slow_backend, body)

    def test_honours_task_cancellation(
        self, slow_backend: Backend, cancel_was_observed: Callable[[], bool] | None
    ) -> None:
        """Cancelling the task that reads the stream, after the first chunk, cancels it."""

        async def body() -> None:
            first = asyncio.Event()

            async def consume() -> None:
                stream = slow_backend.stream(_for(slow_backend, HELLO))
                try:
                    async for _ in stream:
                        first.set()
                finally:
                    await _close(stream)

            task = asyncio.create_task(consume())
            waiter = asyncio.create_task(first.wait())
            await asyncio.wait(
                {task, waiter}, timeout=self.reply_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            waiter.cancel()
            if task.done():
                task.result()  # the backend's own error, if it raised one
                raise AssertionError(
                    "the reply ended before the kit could cancel it: give the kit a "
                    "slow_backend fixture whose reply awaits between at least 3 chunks"
                )
            if not first.is_set():
                task.cancel()
                raise AssertionError(f"no first chunk within {self.reply_timeout:g} s")
            task.cancel()
            await asyncio.wait({task}, timeout=self.cancel_timeout)
            assert task.done(), f"the cancelled task did not end within {self.cancel_timeout:g} s"
            if not task.cancelled():
                error = task.exception()
                ended = f"with {error!r}" if error is not None else "normally"
                raise AssertionError(
                    f"the cancelled task ended {ended}: the stream must let CancelledError "
                    "propagate"
                )
            if cancel_was_observed is not None:
                await _wait_until(
                    cancel_was_observed,
                    self.cancel_timeout,
                    "the upstream did not see the cancelled task's request aborted",
                )

        _run(slow_backend, body)

    # -- failures ----------------------------------------------------------------------

    @pytest.mark.parametrize("kind", KINDS)
    def test_maps_errors(self, kind: str, failing_backends: Mapping[str, Backend]) -> None:
        """Each failing backend raises a BackendError of its kind with a clean message."""
        unknown = sorted(set(failing_backends) - set(KINDS))
        assert not unknown, f"failing_backends has unknown kinds {unknown}; use {list(KINDS)}"
        backend = failing_backends.get(kind)
        if backend is None:
            pytest.skip(f"the failing_backends fixture has no backend for {kind!r}")

        async def body() -> BackendError:
            stream = backend.stream(_for(backend, HELLO))
            try:
                await _within(self.reply_timeout, _collect(stream), f"the {kind} failure")
            except BackendError as exc:
                return exc
            except AssertionError:
                raise
            except Exception as exc:
                raise AssertionError(
                    f"failing_backends[{kind!r}] raised {exc!r}, not a BackendError"
                ) from exc
            raise AssertionError(f"failing_backends[{kind!r}] answered instead of failing")

        error = _run(backend, body)
        assert error.kind == kind, f"expected a BackendError of kind {kind!r}, got {error.kind!r}"
        assert isinstance(error.retryable, bool), f"retryable is {error.retryable!r}, not a bool"
        for message in (str(error), error.message):
            assert isinstance(message, str) and message.strip(), "the error message is empty"
            assert "Traceback" not in message, f"the error message holds a traceback: {message}"
            for name in _secrets():
                # Name the variable, never show its value.
                if os.environ[name] in message:
                    raise AssertionError(
                        f"the error message contains the value of the environment variable {name}"
                    )

    # -- models and lifecycle ----------------------------------------------------------

    def test_lists_its_models(self, backend: Backend) -> None:
        """``available_models()`` is a list of str that holds the default model."""
        models = backend.available_models()
        assert isinstance(models, list), f"available_models() returned {models!r}, not a list"
        assert all(isinstance(model, str) for model in models), (
            f"available_models() holds a non-str: {models!r}"
        )
        default = backend.default_model
        assert default is None or isinstance(default, str), f"default_model is {default!r}"
        if models:
            assert default is None or default in models, (
                f"default_model {default!r} is not among available_models() {models!r}"
            )

    def test_closes_twice_safely(self, backend: Backend) -> None:
        """``aclose()`` after ``start()`` may be called again without error."""

        async def main() -> None:
            await backend.start()
            await backend.aclose()
            await backend.aclose()

        with asyncio.Runner() as runner:
            runner.run(main())
