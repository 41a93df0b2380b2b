"""A conformance kit for backends: the tests every backend should pass, for its own test suite.

This module is a test-time helper. It imports pytest, which chatbot itself does not depend
on (it comes with the ``test`` extra); import it from tests only, never from a backend.

Subclass :class:`BackendConformance` in a test file and give it a ``backend`` and a
``reports_usage`` fixture, and for each error kind either a backend that fails that way in
``failing_backends`` or the reason it never does in ``never_raises``; the other fixtures are
optional and add what only you can provide::

    import pytest

    from chatbot.backends import Backend
    from chatbot.testing import BackendConformance
    from mypackage import MyBackend


    class TestMyBackend(BackendConformance):
        never_raises = {"backend_timeout": "it runs in the process: nothing to wait for"}

        @pytest.fixture
        def backend(self) -> Backend:
            return MyBackend("mine", {})

        @pytest.fixture
        def reports_usage(self) -> bool:
            return True

        @pytest.fixture
        def failing_backends(self) -> dict[str, Backend]:
            return {
                "backend_error": MyBackend("mine", {"model": "no-such-model"}),
                "backend_unavailable": MyBackend("mine", {"url": "http://127.0.0.1:9"}),
            }

The kit starts and closes each backend itself (``start()`` and ``aclose()``), on one event
loop per test, so the tests are plain pytest functions and need no async plugin.

Fixtures, defined on the subclass (a default here hides one defined in a ``conftest.py``):

``backend`` (required)
    A constructed backend that answers normally.
``reports_usage`` (required)
    Whether the backend yields a :class:`~chatbot.backends.Usage` after its text. With True
    the kit checks the Usage; with False it checks that there is none. Without the fixture
    ``test_reports_usage`` fails: a forgotten declaration must not pass for "no usage".
``slow_backend`` (default: ``backend``)
    One whose reply takes at least 3 chunks with awaits between them, so that stopping it
    after the first chunk cancels it mid-stream.
``failing_backends`` (default: none)
    A mapping from a :class:`~chatbot.errors.BackendError` kind (``backend_error``,
    ``backend_timeout``, ``backend_unavailable``) to a backend configured to fail that way:
    a port that refuses connections, a fake vendor that answers 500, a stall with a tiny
    timeout. ``test_maps_errors`` fails for a kind that is neither here nor in
    ``never_raises``.
``cancel_was_observed`` (default: ``None``)
    For a network backend: a callable that returns True once the upstream has seen the
    request aborted. The kit polls it after stopping a reply.

And one class attribute:

``never_raises`` (default: empty)
    The error kinds the backend can never raise, each with the reason, for example
    ``{"backend_timeout": "it waits on nothing"}``. The kit has no ``test_maps_errors``
    for them: the run shows neither a failure nor a skip, and the reason stays in the
    test file for its readers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, ClassVar, TypeVar, get_args

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


def _never_raises_problem(never_raises: object) -> str | None:
    """What is wrong with a ``never_raises`` mapping, or None."""
    if not isinstance(never_raises, Mapping):
        return f"must be a mapping from an error kind to a reason, not {never_raises!r}"
    unknown = sorted(str(kind) for kind in set(never_raises) - set(KINDS))
    if unknown:
        return f"has unknown kinds {unknown}; use {list(KINDS)}"
    for kind, reason in never_raises.items():
        if not isinstance(reason, str) or not reason.strip():
            return f"gives {kind!r} no reason; say why the backend can never fail that way"
    return None


class BackendConformance:
    """The tests every backend should pass; subclass it and give it the fixtures it needs."""

    #: Seconds a whole reply (or a failure) may take.
    reply_timeout: float = 30.0
    #: Seconds a stopped reply may take to end, and the upstream to see it end.
    cancel_timeout: float = 5.0
    #: The error kinds the backend can never raise, each with the reason (module docstring).
    never_raises: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        problem = _never_raises_problem(cls.never_raises)
        if problem is not None:
            raise TypeError(f"{cls.__name__}.never_raises {problem}")
        if set(cls.never_raises) >= set(KINDS):
            # No kind left to test. pytest reports a test parametrized with no value as
            # skipped; the subclass has no such test instead.
            setattr(cls, "test_maps_errors", None)  # noqa: B010 - mypy refuses the plain form
        elif getattr(cls, "test_maps_errors", None) is None:
            cls.test_maps_errors = BackendConformance.test_maps_errors  # type: ignore[method-assign]

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Run ``test_maps_errors`` once for each kind that ``never_raises`` leaves."""
        if metafunc.definition.originalname == "test_maps_errors":
            metafunc.parametrize("kind", [k for k in KINDS if k not in self.never_raises])

    # -- fixtures ----------------------------------------------------------------------

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
        pytest.fail(
            f"{type(self).__name__} has no reports_usage fixture: define one on the class that "
            "returns True if the backend yields a Usage after its text, False if it never does",
            pytrace=False,
        )

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
        """With ``reports_usage``, the reply ends with a Usage of non-negative ints;
        without, the reply holds no Usage (one the kit was told of would go unchecked)."""

        async def body() -> list[str | Usage]:
            stream = backend.stream(_for(backend, HELLO))
            return await _within(self.reply_timeout, _collect(stream), "the reply")

        items = _run(backend, body)
        _check_reply(items)
        usage = items[-1]
        if not reports_usage:
            assert not isinstance(usage, Usage), (
                f"the reply ended with {usage!r}, but the reports_usage fixture is False: "
                "make it return True so that the kit checks the Usage"
            )
            return
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

    def test_maps_errors(self, kind: str, failing_backends: Mapping[str, Backend]) -> None:
        """Each failing backend raises a BackendError of its kind with a clean message."""
        unknown = sorted(set(failing_backends) - set(KINDS))
        assert not unknown, f"failing_backends has unknown kinds {unknown}; use {list(KINDS)}"
        both = sorted(set(failing_backends) & set(self.never_raises))
        assert not both, (
            f"{both} are in failing_backends and in never_raises: a kind is one or the other"
        )
        backend = failing_backends.get(kind)
        assert backend is not None, (
            f"the failing_backends fixture has no backend for {kind!r}: add one that fails "
            f"that way, or, if the backend never can, name {kind!r} in the class attribute "
            "never_raises with the reason"
        )

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
