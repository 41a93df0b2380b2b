"""The HTTP API against its own OpenAPI document, with generated requests.

Schemathesis reads ``/openapi.json`` from a live server and generates requests for every
operation, both requests the document allows and requests it forbids. Every response must
not be a 5xx and must match the document: a documented status code, the documented content
type and headers, and a body that validates against the documented schema; a request the
document forbids must be refused with a 4xx. The examples are bounded and derandomized, so
a run is quick and a failure comes back the same on the next run.
"""

from __future__ import annotations

import dataclasses
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
from websockets.sync.client import ClientConnection

from chatbot.api_data import IMPORT_PATH
from chatbot.openapi import PATHS
from tests.conftest import (
    GENEROUS_LIMITS,
    OTHER_SECRET,
    LiveServer,
    ServerFactory,
    bearer,
    make_token,
    recv_json,
)

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
#: The operations on one session, and those whose path names a message or a share.
SESSION_OPERATIONS = [(m, p) for m, p in OPERATIONS if "{session_id}" in p]
ID_OPERATIONS = [(m, p) for m, p in OPERATIONS if "{session_id}" in p or "{share_id}" in p]


def _can_be_invalid(schema: dict[str, Any]) -> bool:
    """Whether some value breaks ``schema``: any string, or any JSON, cannot."""
    return schema not in ({}, {"type": "string"})


def _has_constrained_input(method: str, path: str) -> bool:
    """Whether an operation takes input that can be invalid: a parameter with a schema
    narrower than any string (a message id, a limit...) or a body narrower than any JSON.
    (Session and share ids are any strings; the import takes any JSON and checks it
    itself: the tests of raw bodies below send it what no schema describes.)"""
    item = PATHS[path]
    definition = item[method.lower()]
    parameters = [*item.get("parameters", []), *definition.get("parameters", [])]
    bodies = definition.get("requestBody", {}).get("content", {}).values()
    return any(_can_be_invalid(p["schema"]) for p in parameters) or any(
        _can_be_invalid(media["schema"]) for media in bodies
    )


#: Every operation with valid input; those whose input can be invalid, with invalid input.
FUZZ_CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or _has_constrained_input(method, path)
]


@pytest.fixture
def server(start_server: ServerFactory) -> LiveServer:
    # Generous limits: some tests open hundreds of sessions and send a message per example.
    return start_server(start_server.settings(max_message_chars=200, **GENEROUS_LIMITS))


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


@dataclasses.dataclass
class Conversation:
    """A session with two branches and a shared link, as the API shows them."""

    session_id: str
    #: Every message of the tree, both branches, in id order.
    message_ids: list[int]
    share_ids: list[str]


def _reply(ws: ClientConnection) -> dict[str, Any]:
    """The next reply frame, past the branch and title frames an edit brings."""
    while (frame := recv_json(ws)).get("type") in ("branch", "title"):
        pass
    return frame


def conversation(server: LiveServer, token: str = ALICE) -> Conversation:
    """A new session: a question and its answer, then a second question asked twice (an
    edit, so the tree has two branches), and a share of the current branch."""
    session_id = chat(server, token, "hello", "second message")
    with server.http(token) as http:
        first_reply = http.get(f"/api/sessions/{session_id}/messages").json()["messages"][1]
        with server.ws(token, session_id=session_id) as ws:
            ws.send(
                json.dumps({"message": "second message, edited", "parent_id": first_reply["id"]})
            )
            assert _reply(ws)["message"] == "Echo: second message, edited"
        share = http.post(f"/api/sessions/{session_id}/shares")
        assert share.status_code == 201, share.text
        export = http.get(f"/api/sessions/{session_id}/export").json()
    ids = [m["id"] for m in export["messages"]]
    assert len(ids) == 6
    return Conversation(session_id, ids, [share.json()["share_id"]])


def test_every_operation_of_the_document_is_fuzzed() -> None:
    assert len(OPERATIONS) == 21
    assert len(SESSION_OPERATIONS) == 10
    assert len(ID_OPERATIONS) == 11
    assert len(FUZZ_CASES) == 30


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


def _allowed(case: Any) -> bool:
    """Whether a request the document allows is one the server takes: "before" and "after"
    together are refused (422), which a schema of separate query parameters cannot say, and
    so is an id written with a fraction (``5.0``), which JSON Schema counts as an integer."""
    body = case.body if isinstance(case.body, dict) else {}
    return not {"before", "after"} <= set(case.query or {}) and not isinstance(
        body.get("leaf_id"), float
    )


def _real(data: st.DataObject, label: str) -> bool:
    """Whether to use a real id rather than the generated one: mostly (Hypothesis draws the
    first choice more often, and shrinks to it)."""
    return data.draw(st.sampled_from([True, False]), label=f"real {label}")


def _with_real_ids(data: st.DataObject, case: Any, ids: list[int]) -> None:
    """Point some of the message ids ``case`` carries in its query or body at messages of
    the session: a generated id almost never names one."""
    real = st.sampled_from(ids)
    for name in ("before", "after", "leaf_id"):
        if name in (case.query or {}) and _real(data, name):
            case.query[name] = data.draw(real, label=name)
    body = case.body if isinstance(case.body, dict) else {}
    if "leaf_id" in body and _real(data, "leaf_id in the body"):
        case.body["leaf_id"] = data.draw(real, label="leaf_id in the body")


@pytest.mark.parametrize(
    ("method", "path"), ID_OPERATIONS, ids=[f"{m} {p}" for m, p in ID_OPERATIONS]
)
def test_operations_on_existing_ids_accept_what_the_document_allows(
    server: LiveServer, method: str, path: str
) -> None:
    """Generated ids almost never name a session, a message or a share: here the session
    always exists, with messages on two branches and a share, and the message and share ids
    often name its own, so the 2xx answers (a session on another branch, a page of
    messages, an export, a share...) are checked against the document, and every request
    the document allows must succeed."""
    operation = load(server)[path][method]
    conversations: st.SearchStrategy[Conversation]
    if method == "DELETE":
        conversations = st.builds(lambda: conversation(server))
    else:
        conversations = st.just(conversation(server))

    with requests.Session() as http:

        @FUZZ
        @given(data=st.data())
        def run(data: st.DataObject) -> None:
            talk = data.draw(conversations)
            fixed: dict[str, Any] = {}
            if "{session_id}" in path:
                fixed["session_id"] = talk.session_id
            if "{message_id}" in path and _real(data, "message_id"):
                fixed["message_id"] = data.draw(st.sampled_from(talk.message_ids))
            if "{share_id}" in path and _real(data, "share_id"):
                fixed["share_id"] = data.draw(st.sampled_from(talk.share_ids))
            case = data.draw(operation.as_strategy(path_parameters=fixed).filter(_allowed))
            _with_real_ids(data, case, talk.message_ids)
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


#: Words of the messages of :func:`conversation`, as a user might type them.
SEARCH_WORDS = ["hello", "HELLO", "hel", "second", "message", "edited", "echo", "ecHo"]


def test_searching_for_stored_words_answers_as_documented(server: LiveServer) -> None:
    """Generated queries almost never match a stored word: here they are made of the words
    of the caller's messages, with generated text around them, so results, snippets, match
    offsets and cursors are checked against the document, page after page."""
    operation = load(server)["/api/search"]["GET"]
    conversation(server)
    queries = st.lists(
        st.sampled_from(SEARCH_WORDS)
        | st.sampled_from(['"second message"', '"hello'])
        | st.text(max_size=8),
        min_size=1,
        max_size=4,
    ).map(" ".join)
    found: list[int] = []

    with requests.Session() as http:

        @FUZZ
        @given(q=queries, limit=st.none() | st.integers(min_value=1, max_value=100))
        def run(q: str, limit: int | None) -> None:
            query: dict[str, Any] = {"q": q} if limit is None else {"q": q, "limit": limit}
            while True:
                case = operation.Case(query=query, headers=bearer(ALICE))
                response = case.call_and_validate(session=http, checks=CHECKS)
                assert response.status_code == 200, (query, response.text)
                page = response.json()
                found.append(len(page["results"]))
                if page["next_cursor"] is None:
                    return
                query = {**query, "cursor": page["next_cursor"]}

        run()
    # The generated queries did find messages (a schema of empty lists checks little).
    assert max(found) > 0


def test_an_export_imports_back_as_documented(server: LiveServer) -> None:
    schema = load(server)
    talk = conversation(server)
    with requests.Session() as http:
        for kind, media_type in [("json", "application/json"), ("markdown", "text/markdown")]:
            case = schema["/api/sessions/{session_id}/export"]["GET"].Case(
                path_parameters={"session_id": talk.session_id},
                query={"format": kind},
                headers=bearer(ALICE),
            )
            exported = case.call_and_validate(session=http, checks=CHECKS)
            assert exported.status_code == 200
            assert exported.headers["content-type"][0].split(";")[0] == media_type
        case = schema[IMPORT_PATH]["POST"].Case(
            body=exported_json(server, talk.session_id),
            media_type="application/json",
            headers=bearer(ALICE),
        )
        imported = case.call_and_validate(session=http, checks=CHECKS)
    assert imported.status_code == 201
    [session] = imported.json()["sessions"]
    assert session["message_count"] == len(talk.message_ids)


def exported_json(server: LiveServer, session_id: str) -> Any:
    with server.http(ALICE) as http:
        response = http.get(f"/api/sessions/{session_id}/export")
    assert response.status_code == 200
    return response.json()


def _places(value: Any, where: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Where every value inside ``value`` sits: the keys and indexes that lead to it."""
    places = [where]
    if isinstance(value, dict):
        for key, item in value.items():
            places += _places(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            places += _places(item, (*where, index))
    return places


#: Values an import must refuse or take, never fail on: times out of range once in UTC,
#: days that do not exist, ids at and past SQLite's integers, text that is not UTF-8.
ODD_VALUES = st.sampled_from(
    [
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "2026-02-30T10:00:00Z",
        "2026-11-24T10:00:00.1234567891234Z",
        "2026-11-24t10:00:00z",
        2**63 - 1,
        2**63,
        -1,
        0,
        1.0,
        1e308,
        "\ud800",
        "",
        [],
        {},
    ]
)
_REMOVED = object()


def _mutations(document: Any) -> st.SearchStrategy[Any]:
    """``document`` with one value anywhere in it replaced by another, or removed."""
    places = [place for place in _places(document) if place]

    @st.composite
    def mutate(draw: st.DrawFn) -> Any:
        copy = json.loads(json.dumps(document))
        *parents, last = draw(st.sampled_from(places))
        container = copy
        for key in parents:
            container = container[key]
        value = draw(st.just(_REMOVED) | ODD_VALUES | _json_values())
        if value is _REMOVED:
            del container[last]
        else:
            container[last] = value
        return copy

    return mutate()


#: A ChatGPT conversation: a question, its answer, and the question edited.
CHATGPT = {
    "title": "Plans",
    "create_time": 1_764_000_000.5,
    "current_node": "edit",
    "mapping": {
        "root": {"id": "root", "parent": None, "children": ["q", "edit"], "message": None},
        "q": {
            "id": "q",
            "parent": "root",
            "children": ["a"],
            "message": {
                "author": {"role": "user"},
                "create_time": 1_764_000_001.0,
                "content": {"content_type": "text", "parts": ["hello"]},
            },
        },
        "a": {
            "id": "a",
            "parent": "q",
            "children": [],
            "message": {
                "author": {"role": "assistant"},
                "create_time": 1_764_000_002.0,
                "content": {"content_type": "text", "parts": ["Hi!"]},
                "metadata": {"model_slug": "gpt-4o"},
            },
        },
        "edit": {
            "id": "edit",
            "parent": "root",
            "children": [],
            "message": {
                "author": {"role": "user"},
                "create_time": 1_764_000_003.0,
                "content": {"content_type": "text", "parts": ["hello again"]},
            },
        },
    },
}


@pytest.mark.parametrize("kind", ["chatbot.session.v1", "chatgpt", "conversations.json"])
def test_imports_of_altered_exports_answer_as_documented(server: LiveServer, kind: str) -> None:
    """What the import's schema (any JSON) cannot say: an export with one value anywhere
    in it replaced, by any JSON or by a value at an edge, or removed, is imported (201) or
    refused (422), as documented, and never half imported."""
    operation = load(server)[IMPORT_PATH]["POST"]
    document: Any
    if kind == "chatbot.session.v1":
        document = exported_json(server, conversation(server).session_id)
    elif kind == "chatgpt":
        document = CHATGPT
    else:
        document = [CHATGPT, CHATGPT]

    def sessions() -> list[str]:
        with server.http(ALICE) as http:
            return [s["session_id"] for s in http.get("/api/sessions?limit=100").json()["sessions"]]

    with requests.Session() as http:

        @FUZZ
        @given(body=_mutations(document))
        def run(body: Any) -> None:
            before = sessions()
            case = operation.Case(body=body, media_type="application/json", headers=bearer(ALICE))
            response = case.call_and_validate(session=http, checks=CHECKS)
            assert response.status_code in (201, 422), response.text
            after = sessions()
            if response.status_code == 422:
                assert after == before
            else:
                created = [s["session_id"] for s in response.json()["sessions"]]
                assert sorted(after) == sorted(before + created)
                for session_id in created:
                    assert (
                        http.delete(
                            f"{server.url}/api/sessions/{session_id}", headers=bearer(ALICE)
                        ).status_code
                        == 204
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
    (_json_values() | st.integers()).map(lambda v: json.dumps({"leaf_id": v}).encode()),
    st.sampled_from(
        [
            b"NaN",
            b'{"title": 1e999}',
            b'{"title": "\\ud800"}',
            b'{"title": "\xc0\x80"}',
            b"\xef\xbb\xbf{}",
            b'{"title": "a"} trailing',
            b'{"leaf_id": 1e999}',
            b'{"leaf_id": -0}',
            b'{"leaf_id": 4611686018427387904}',
        ]
    ),
    st.integers(min_value=1, max_value=200_000).map(_nested),
    st.integers(min_value=1, max_value=200_000).map(lambda n: b"[" * n),
)


#: Every operation that reads a request body.
BODY_OPERATIONS = [
    ("POST", "/api/sessions"),
    ("PATCH", "/api/sessions/{session_id}"),
    ("POST", "/api/sessions/{session_id}/shares"),
    ("POST", IMPORT_PATH),
]


def test_every_operation_with_a_body_is_sent_raw_bodies() -> None:
    assert sorted(BODY_OPERATIONS) == sorted(
        (m, p) for m, p in OPERATIONS if "requestBody" in PATHS[p][m.lower()]
    )


@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
def test_request_bodies_no_schema_describes_answer_as_documented(
    server: LiveServer, method: str, path: str
) -> None:
    operation = load(server)[path][method]
    existing = conversation(server).session_id

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
            case = operation.Case(path_parameters=_path_parameters(path, session_id))
            case.validate_response(response, checks=CHECKS)
            assert response.status_code < 500

        run()


def _path_parameters(path: str, session_id: str) -> dict[str, str]:
    return {"session_id": session_id} if "{session_id}" in path else {}


@pytest.mark.parametrize("size", [300_000, 3_000_000])
@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
def test_a_body_larger_than_the_server_takes_answers_as_documented(
    server: LiveServer, method: str, path: str, size: int
) -> None:
    operation = load(server)[path][method]
    session_id = conversation(server).session_id
    body = b'{"title": "' + b"x" * size + b'"}'
    url = server.url + path.replace("{session_id}", session_id)
    response = requests.request(method, url, data=body, headers=bearer(ALICE), timeout=30)
    case = operation.Case(path_parameters=_path_parameters(path, session_id))
    case.validate_response(response, checks=CHECKS)
    assert 400 <= response.status_code < 500


def test_an_import_has_a_body_limit_of_its_own(start_server: ServerFactory) -> None:
    """CHATBOT_MAX_IMPORT_BYTES, not CHATBOT_MAX_BODY_BYTES, bounds an import: an export
    larger than the second is imported, one larger than the first is 413."""
    server = start_server(max_body_bytes=10_000, max_import_bytes=100_000)
    operation = load(server)[IMPORT_PATH]["POST"]
    document = exported_json(server, chat(server, ALICE, "x" * 50))
    document["messages"][0]["content"] = "y" * 20_000
    with requests.Session() as http:
        answers = []
        for padding in (0, 100_000):
            document["session"]["system_prompt"] = "z" * padding
            case = operation.Case(
                body=document, media_type="application/json", headers=bearer(ALICE)
            )
            answers.append(case.call_and_validate(session=http, checks=CHECKS))
    assert [a.status_code for a in answers] == [201, 413]
    assert answers[1].json()["error"]["code"] == "body_too_large"


def test_creating_a_session_beyond_the_user_s_quota_answers_as_documented(
    start_server: ServerFactory,
) -> None:
    server = start_server(max_sessions_per_user=1)
    operation = load(server)["/api/sessions"]["POST"]
    chat_id = chat(server, ALICE, "hello")

    with requests.Session() as http:

        @settings(FUZZ, max_examples=5)
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            response = case.call_and_validate(session=http, checks=CHECKS)
            assert 400 <= response.status_code < 500

        run()
        # An import would take the user past the quota too: all of it is refused.
        document = exported_json(server, chat_id)
        case = load(server)[IMPORT_PATH]["POST"].Case(
            body=document, media_type="application/json", headers=bearer(ALICE)
        )
        response = case.call_and_validate(session=http, checks=CHECKS)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "too_many_sessions"


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
