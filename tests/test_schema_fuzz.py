"""The HTTP API against its own OpenAPI document, with generated requests.

Schemathesis reads ``/openapi.json`` from a live server and generates requests for every
operation, both requests the document allows and requests it forbids. Every response must
not be a 5xx and must match the document: a documented status code, the documented content
type and headers, and a body that validates against the documented schema; a request the
document forbids must be refused with a 4xx. The examples are bounded and derandomized, so
a run is quick and a failure comes back the same on the next run.
"""

from __future__ import annotations

import json
from typing import Any

import hypothesis.core
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.vendor import pretty
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chatbot.openapi import PATHS
from tests.conftest import OTHER_SECRET, LiveServer, ServerFactory, bearer, make_token, recv_json

# Importing schemathesis (its pytest plugin does it at start-up) replaces Hypothesis'
# printer of failing examples with one that prints nothing, for the whole test run; put
# the original back so that a failure here says which input failed.
hypothesis.core.RepresentationPrinter = pretty.RepresentationPrinter  # type: ignore[attr-defined]

ALICE = make_token("alice")

#: Every response, whatever the request.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: A request the document forbids must be refused with a 4xx.
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]
#: A request the document allows, on a session that exists, must succeed.
POSITIVE_CHECKS = [*CHECKS, positive_data_acceptance]

FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

OPERATIONS = [
    (method.upper(), path)
    for path, item in PATHS.items()
    for method in item
    if method in {"get", "post", "patch", "delete"}
]
SESSION_OPERATIONS = [(m, p) for m, p in OPERATIONS if "{session_id}" in p]


def _has_constrained_input(method: str, path: str) -> bool:
    """Whether an operation takes input that can be invalid: a query parameter or a body.
    (The only path parameter, a session id, is any string.)"""
    definition = PATHS[path][method.lower()]
    return bool(definition.get("parameters") or "requestBody" in definition)


#: Every operation with valid input; those whose input can be invalid, with invalid input.
FUZZ_CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _has_constrained_input(method, path)
]


@pytest.fixture
def server(start_server: ServerFactory) -> LiveServer:
    return start_server(max_message_chars=200)


def load(server: LiveServer, token: str | None = ALICE) -> Any:
    """The served document, with every generated request sent as ``token``'s user.

    Credentials are not generated (the token is fixed; requests without a valid one are
    tested on their own below), nor are query parameters the document does not name:
    ignoring an unknown query parameter is not an error of this API.
    """
    config = schemathesis.Config.from_dict(
        {
            "headers": bearer(token) if token else {},
            "generation": {"allow-extra-parameters": False, "with-security-parameters": False},
        }
    )
    return schemathesis.openapi.from_url(server.url + "/openapi.json", config=config, timeout=10)


def chat(server: LiveServer, token: str, *messages: str) -> str:
    """A new session of ``token``'s user, with ``messages`` answered in it; its id."""
    with server.ws(token) as ws:
        session_id = str(recv_json(ws)["session_id"])
        for message in messages:
            ws.send(json.dumps({"message": message}))
            recv_json(ws)
    return session_id


def test_every_operation_of_the_document_is_fuzzed() -> None:
    assert len(OPERATIONS) == 10
    assert len(SESSION_OPERATIONS) == 4
    assert len(FUZZ_CASES) == 14


@pytest.mark.parametrize(("method", "path", "mode"), FUZZ_CASES)
def test_every_operation_answers_as_documented(
    server: LiveServer, method: str, path: str, mode: GenerationMode
) -> None:
    operation = load(server)[path][method]
    checks = CHECKS if mode is GenerationMode.POSITIVE else NEGATIVE_CHECKS

    with requests.Session() as http:

        @FUZZ
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            case.call_and_validate(session=http, checks=checks)

        run()


@pytest.mark.parametrize(
    ("method", "path"), SESSION_OPERATIONS, ids=[f"{m} {p}" for m, p in SESSION_OPERATIONS]
)
def test_operations_on_an_existing_session_accept_what_the_document_allows(
    server: LiveServer, method: str, path: str
) -> None:
    """Generated ids almost never name a session: here they always do, and it has messages,
    so the 2xx answers (a session, a page of messages) are checked against the document, and
    every request the document allows must succeed."""
    operation = load(server)[path][method]
    sessions: st.SearchStrategy[str]
    if method == "DELETE":
        sessions = st.builds(lambda: chat(server, ALICE, "hello", "second message"))
    else:
        sessions = st.just(chat(server, ALICE, "hello", "second message"))

    with requests.Session() as http:

        @FUZZ
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            session_id = data.draw(sessions)
            case = data.draw(
                operation.as_strategy(path_parameters={"session_id": session_id}).filter(
                    # "before" and "after" together are refused (422), which a schema of
                    # separate query parameters cannot say.
                    lambda c: not {"before", "after"} <= set(c.query or {})
                )
            )
            case.call_and_validate(session=http, checks=POSITIVE_CHECKS)

        run()


@pytest.mark.parametrize("name", ["before", "after"])
def test_every_message_cursor_the_document_allows_is_accepted(
    server: LiveServer, name: str
) -> None:
    """The range of ``before``/``after`` that the served document promises, fuzzed on its
    own (the generic fuzzing above seldom reaches the largest values)."""
    schema = load(server)
    operation = schema["/api/sessions/{session_id}/messages"]["GET"]
    document = requests.get(server.url + "/openapi.json", timeout=10).json()
    (parameter,) = [
        p
        for p in document["paths"]["/api/sessions/{session_id}/messages"]["get"]["parameters"]
        if p["name"] == name
    ]
    bounds = parameter["schema"]
    session_id = chat(server, ALICE, "hello")

    with requests.Session() as http:

        @FUZZ
        @given(
            value=st.integers(
                min_value=bounds.get("minimum"), max_value=bounds.get("maximum", 2**80)
            )
        )
        def run(value: int) -> None:
            case = operation.Case(
                path_parameters={"session_id": session_id},
                query={name: value},
                headers=bearer(ALICE),
            )
            response = case.call_and_validate(session=http, checks=CHECKS)
            assert response.status_code == 200, (
                f"{name}={value} is allowed by the document, but the server answered "
                f"{response.status_code}: {response.text}"
            )

        run()


def test_boundary_values_answer_as_documented(server: LiveServer) -> None:
    """Schemathesis' coverage cases: each parameter at and just beyond its limits, missing
    required input, wrong types, methods the document does not list."""
    schema = load(server)
    with requests.Session() as http:
        for method, path in OPERATIONS:
            operation = schema[path][method]
            config = schema.config.generation_for(operation=operation)
            for mode, checks in [
                (GenerationMode.POSITIVE, CHECKS),
                (GenerationMode.NEGATIVE, NEGATIVE_CHECKS),
            ]:
                for case in schema.iter_coverage_cases(
                    operation, generation_modes=[mode], generation_config=config
                ):
                    case.call_and_validate(session=http, checks=checks)


def _json_values() -> st.SearchStrategy[Any]:
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300)
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(["title", "backend", "model", "system_prompt"])
                | st.text(max_size=8),
                children,
                max_size=4,
            )
        ),
        max_leaves=12,
    )


def _nested(depth: int) -> bytes:
    return b'{"title": ' + b"[" * depth + b"]" * depth + b"}"


#: Request bodies no schema describes: bytes that are not UTF-8 or not JSON, JSON of any
#: shape (NaN, huge numbers, lone surrogates), nesting deeper than the parser's recursion.
RAW_BODIES = st.one_of(
    st.binary(max_size=200),
    _json_values().map(lambda v: json.dumps(v).encode()),
    _json_values().map(lambda v: json.dumps({"title": v}).encode()),
    st.sampled_from(
        [
            b"NaN",
            b'{"title": 1e999}',
            b'{"title": "\\ud800"}',
            b'{"title": "\xc0\x80"}',
            b"\xef\xbb\xbf{}",
            b'{"title": "a"} trailing',
        ]
    ),
    st.integers(min_value=1, max_value=200_000).map(_nested),
    st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n),
)


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/sessions"), ("PATCH", "/api/sessions/{session_id}")],
)
def test_request_bodies_no_schema_describes_answer_as_documented(
    server: LiveServer, method: str, path: str
) -> None:
    operation = load(server)[path][method]
    existing = chat(server, ALICE)

    with requests.Session() as http:

        @FUZZ
        @given(
            body=RAW_BODIES,
            session_id=st.sampled_from([existing, "no-such-session"]),
            content_type=st.sampled_from(["application/json", "text/plain", None]),
        )
        def run(body: bytes, session_id: str, content_type: str | None) -> None:
            headers = bearer(ALICE)
            if content_type is not None:
                headers["Content-Type"] = content_type
            url = server.url + path.replace("{session_id}", session_id)
            response = http.request(method, url, data=body, headers=headers, timeout=10)
            case = operation.Case(path_parameters={"session_id": session_id})
            case.validate_response(response, checks=CHECKS)
            assert response.status_code < 500

        run()


@pytest.mark.parametrize("size", [300_000, 3_000_000])
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/sessions"), ("PATCH", "/api/sessions/{session_id}")],
)
def test_a_body_larger_than_the_server_takes_answers_as_documented(
    server: LiveServer, method: str, path: str, size: int
) -> None:
    operation = load(server)[path][method]
    session_id = chat(server, ALICE)
    body = b'{"title": "' + b"x" * size + b'"}'
    url = server.url + path.replace("{session_id}", session_id)
    response = requests.request(method, url, data=body, headers=bearer(ALICE), timeout=30)
    case = operation.Case(path_parameters={"session_id": session_id})
    case.validate_response(response, checks=CHECKS)
    assert 400 <= response.status_code < 500


def test_creating_a_session_beyond_the_user_s_quota_answers_as_documented(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_sessions_per_user=1)
    operation = load(server)["/api/sessions"]["POST"]
    chat(server, ALICE)

    with requests.Session() as http:

        @settings(FUZZ, max_examples=5)
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            response = case.call_and_validate(session=http, checks=CHECKS)
            assert 400 <= response.status_code < 500

        run()


def _fuzz_without_a_valid_token(
    http: requests.Session, operation: Any, authorization: str | None
) -> None:
    secured = operation.definition.raw.get("security") != []
    headers = {} if authorization is None else {"Authorization": authorization}

    @settings(FUZZ, max_examples=4)
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call(session=http, headers=headers)
        case.validate_response(response, checks=CHECKS)
        if secured:
            assert response.status_code == 401, (case.method, case.formatted_path)
            challenge = "Bearer" if authorization is None else 'Bearer error="invalid_token"'
            assert response.headers["www-authenticate"] == [challenge]

    run()


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer " + make_token("alice", secret=OTHER_SECRET),
        "Bearer " + make_token("alice", ttl=-3600),
        "Bearer not-a-jwt",
    ],
    ids=["none", "wrong-key", "expired", "garbage"],
)
def test_every_operation_without_a_valid_token_answers_as_documented(
    server: LiveServer, authorization: str | None
) -> None:
    schema = load(server, token=None)
    with requests.Session() as http:
        for method, path in OPERATIONS:
            _fuzz_without_a_valid_token(http, schema[path][method], authorization)
