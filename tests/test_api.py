"""The HTTP API, end to end against a real server."""

from __future__ import annotations

import json

import pytest

from chatbot.settings import BackendConfig
from tests.backends import FlakyBackend
from tests.conftest import LiveServer, ServerFactory, make_token, recv_json

ALICE = make_token("alice")
BOB = make_token("bob")


def chat(server: LiveServer, token: str, *messages: str) -> str:
    """Open a new session over the socket, send the messages, return the session id."""
    with server.ws(token) as ws:
        session_id = recv_json(ws)["session_id"]
        for message in messages:
            ws.send(json.dumps({"message": message}))
            recv_json(ws)
    return session_id


def test_create_session_defaults(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        response = http.post("/api/sessions")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "session_id", "title", "backend", "model", "system_prompt",
        "created_at", "updated_at", "message_count", "leaf_id",
    }  # fmt: skip
    assert body["leaf_id"] is None
    assert body["backend"] == "echo"
    assert body["model"] == "echo"
    assert body["title"] is None
    assert body["message_count"] == 0
    assert body["created_at"] == body["updated_at"]
    assert body["created_at"].endswith("Z")


def test_create_session_with_fields_and_use_it_over_the_socket(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        created = http.post(
            "/api/sessions", json={"title": "Trip", "system_prompt": "Be brief."}
        ).json()
        assert created["title"] == "Trip"
        assert created["system_prompt"] == "Be brief."
        session_id = created["session_id"]
        with server.ws(ALICE, session_id=session_id) as ws:
            ws.send(json.dumps({"message": "hello"}))
            assert recv_json(ws) == {"message": "Echo: hello", "session_id": session_id}
        fetched = http.get(f"/api/sessions/{session_id}").json()
    assert fetched["message_count"] == 2
    assert fetched["updated_at"] > created["updated_at"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"backend": "nope"}, 422, "unknown_backend"),
        ({"model": "gpt-9"}, 422, "unknown_model"),
        ({"title": 5}, 422, "invalid_title"),
        ({"title": "x" * 201}, 422, "invalid_title"),
        ({"colour": "red"}, 422, "invalid_body"),
        ([1, 2], 400, "invalid_body"),
    ],
)
def test_create_session_rejects_bad_input(
    server: LiveServer, body: object, status: int, code: str
) -> None:
    with server.http(ALICE) as http:
        response = http.post("/api/sessions", json=body)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_unknown_backend_message_names_the_configured_ones(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        message = http.post("/api/sessions", json={"backend": "opneai"}).json()["error"]
    assert message["message"] == "no backend named 'opneai'; the configured backends are: echo"


def test_invalid_json_body_is_400(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        response = http.post(
            "/api/sessions", content=b"{not json", headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "invalid_json", "message": "the request body is not valid JSON"}
    }


def test_session_picks_a_backend_and_model(start_server: ServerFactory) -> None:
    settings = start_server.settings(
        backends={
            "echo": BackendConfig("echo", "echo"),
            "flaky": BackendConfig("flaky", "flaky"),
        },
        default_backend="echo",
    )
    server = start_server(settings, backend_types={"flaky": FlakyBackend})
    with server.http(ALICE) as http:
        backends = http.get("/api/backends").json()
        created = http.post("/api/sessions", json={"backend": "flaky", "model": "flaky-2"})
    assert backends == {
        "backends": [
            {"name": "echo", "type": "echo", "default": True,
             "default_model": "echo", "models": ["echo"]},
            {"name": "flaky", "type": "flaky", "default": False,
             "default_model": "flaky-1", "models": ["flaky-1", "flaky-2"]},
        ],
        "default": "echo",
    }  # fmt: skip
    assert created.status_code == 201
    session_id = created.json()["session_id"]
    with server.ws(ALICE, session_id=session_id) as ws:
        ws.send(json.dumps({"message": "q", "id": "1"}))
        reply = recv_json(ws)
    assert reply["message"] == "partial answer to q with flaky-2"
    assert (reply["backend"], reply["model"]) == ("flaky", "flaky-2")


def test_rename_and_delete(server: LiveServer) -> None:
    session_id = chat(server, ALICE, "hi")
    with server.http(ALICE) as http:
        renamed = http.patch(f"/api/sessions/{session_id}", json={"title": "Greetings"})
        assert renamed.status_code == 200
        assert renamed.json()["title"] == "Greetings"
        assert http.get(f"/api/sessions/{session_id}").json()["title"] == "Greetings"
        cleared = http.patch(f"/api/sessions/{session_id}", json={"title": None})
        assert cleared.json()["title"] is None
        assert http.patch(f"/api/sessions/{session_id}", json={}).status_code == 422
        assert http.patch(f"/api/sessions/{session_id}", content=b"[]").status_code == 400
        deleted = http.delete(f"/api/sessions/{session_id}")
        assert deleted.status_code == 204
        assert deleted.content == b""
        assert http.get(f"/api/sessions/{session_id}").status_code == 404
        assert http.get(f"/api/sessions/{session_id}/messages").status_code == 404
        assert http.delete(f"/api/sessions/{session_id}").status_code == 404


def test_a_patch_refused_changes_nothing(server: LiveServer) -> None:
    """A title and a leaf_id in one PATCH: when either is refused, neither is applied."""
    session_id = chat(server, ALICE, "first", "second")
    with server.http(ALICE) as http:
        first_reply = http.get(f"/api/sessions/{session_id}/messages").json()["messages"][1]
        with server.ws(ALICE, session_id=session_id) as ws:
            ws.send(json.dumps({"message": "second, edited", "parent_id": first_reply["id"]}))
            while recv_json(ws)["type"] != "message":
                pass
        assert http.patch(f"/api/sessions/{session_id}", json={"title": "Kept"}).is_success
        before = http.get(f"/api/sessions/{session_id}").json()
        old_branch_leaf = before["leaf_id"] - 2  # the reply to "second"
        for body, status, code in [
            ({"leaf_id": old_branch_leaf, "title": 5}, 422, "invalid_title"),
            ({"leaf_id": old_branch_leaf, "title": "x" * 201}, 422, "invalid_title"),
            ({"leaf_id": before["leaf_id"] + 100, "title": "Lost"}, 404, "not_found"),
        ]:
            refused = http.patch(f"/api/sessions/{session_id}", json=body)
            assert (refused.status_code, refused.json()["error"]["code"]) == (status, code)
            assert http.get(f"/api/sessions/{session_id}").json() == before
        switched = http.patch(f"/api/sessions/{session_id}", json={"leaf_id": old_branch_leaf})
    assert switched.json()["leaf_id"] == old_branch_leaf


def test_session_list_pages_by_last_activity(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        ids = [http.post("/api/sessions", json={"title": str(n)}).json()["session_id"]
               for n in range(7)]  # fmt: skip
    oldest = ids[0]
    chat_id = oldest
    with server.ws(ALICE, session_id=chat_id) as ws:
        ws.send(json.dumps({"message": "bump"}))
        recv_json(ws)
    expected = [oldest, *reversed(ids[1:])]
    with server.http(ALICE) as http:
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = http.get("/api/sessions", params=params).json()
            seen += [s["session_id"] for s in page["sessions"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == expected
        assert len(http.get("/api/sessions").json()["sessions"]) == 7


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "limit=-1", "cursor=zz"])
def test_session_list_bad_query_is_422(server: LiveServer, query: str) -> None:
    with server.http(ALICE) as http:
        response = http.get(f"/api/sessions?{query}")
    assert response.status_code == 422
    assert set(response.json()["error"]) == {"code", "message"}


def test_message_history_paging_visits_every_message_once(server: LiveServer) -> None:
    session_id = chat(server, ALICE, *[f"m{n}" for n in range(11)])
    url = f"/api/sessions/{session_id}/messages"
    with server.http(ALICE) as http:
        everything = http.get(url, params={"limit": 100}).json()
        assert everything["has_more"] is False
        all_ids = [m["id"] for m in everything["messages"]]
        assert len(all_ids) == 22
        assert all_ids == sorted(all_ids)

        newest = http.get(url, params={"limit": 5}).json()
        assert [m["id"] for m in newest["messages"]] == all_ids[-5:]
        assert newest["has_more"] is True

        backwards: list[int] = []
        page = newest
        while True:
            backwards = [m["id"] for m in page["messages"]] + backwards
            if not page["has_more"]:
                break
            page = http.get(url, params={"limit": 5, "before": page["messages"][0]["id"]}).json()
        assert backwards == all_ids

        forwards: list[int] = []
        after = 0
        while True:
            page = http.get(url, params={"limit": 4, "after": after}).json()
            forwards += [m["id"] for m in page["messages"]]
            if not page["has_more"]:
                break
            after = page["messages"][-1]["id"]
        assert forwards == all_ids


def test_message_shape(server: LiveServer) -> None:
    session_id = chat(server, ALICE, "shape")
    with server.http(ALICE) as http:
        user, assistant = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
    assert set(user) == {"id", "role", "content", "status", "created_at", "parent_id", "siblings"}
    assert (user["parent_id"], user["siblings"]) == (None, [user["id"]])
    assert (assistant["parent_id"], assistant["siblings"]) == (user["id"], [assistant["id"]])
    assert user["role"] == "user"
    assert user["status"] == "complete"
    assert assistant["role"] == "assistant"
    assert assistant["in_reply_to"] == user["id"]
    assert assistant["usage"] == {"input_tokens": 1, "output_tokens": 2}


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "before=x", "after=-3", "before=1&after=2"]
)
def test_message_history_bad_query_is_422(server: LiveServer, query: str) -> None:
    session_id = chat(server, ALICE)
    with server.http(ALICE) as http:
        response = http.get(f"/api/sessions/{session_id}/messages?{query}")
    assert response.status_code == 422


def test_two_users_cannot_see_each_other_on_any_route(server: LiveServer) -> None:
    alice_session = chat(server, ALICE, "secret plans")
    with server.http(BOB) as http:
        missing = http.get("/api/sessions/no-such-session-id")
        assert missing.status_code == 404
        for method, path, body in [
            ("GET", f"/api/sessions/{alice_session}", None),
            ("PATCH", f"/api/sessions/{alice_session}", {"title": "mine now"}),
            ("GET", f"/api/sessions/{alice_session}/messages", None),
            ("DELETE", f"/api/sessions/{alice_session}", None),
        ]:
            response = http.request(method, path, json=body)
            assert response.status_code == 404, (method, path)
            assert response.json() == missing.json()
        assert http.get("/api/sessions").json() == {"sessions": [], "next_cursor": None}
    with server.http(ALICE) as http:
        session = http.get(f"/api/sessions/{alice_session}").json()
        messages = http.get(f"/api/sessions/{alice_session}/messages").json()["messages"]
    # The title its first reply gave it, not B's.
    assert session["title"] == "secret plans"
    assert [m["content"] for m in messages] == ["secret plans", "Echo: secret plans"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/sessions"),
        ("POST", "/api/sessions"),
        ("GET", "/api/sessions/x"),
        ("PATCH", "/api/sessions/x"),
        ("DELETE", "/api/sessions/x"),
        ("GET", "/api/sessions/x/messages"),
        ("GET", "/api/backends"),
    ],
)
def test_every_api_route_needs_a_token(server: LiveServer, method: str, path: str) -> None:
    with server.http() as http:
        response = http.request(method, path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_health_and_readiness_need_no_token(server: LiveServer) -> None:
    with server.http() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json() == {"status": "ready"}


def test_unknown_route_and_wrong_method_are_json(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        missing = http.get("/api/nothing-here")
        wrong = http.put("/api/sessions")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/sessions", b'{"title": "\\ud800"}'),
        ("POST", "/api/sessions", b'{"system_prompt": "a\\udfffb"}'),
        ("GET", "/api/sessions?limit=" + "9" * 5000, None),
        ("GET", "/api/sessions?limit=%D9%A3", None),
    ],
)
def test_malformed_input_is_4xx_never_500(
    server: LiveServer, method: str, path: str, body: bytes | None
) -> None:
    with server.http(ALICE) as http:
        response = http.request(method, path, content=body)
    assert 400 <= response.status_code < 500
    assert set(response.json()["error"]) == {"code", "message"}


def test_a_cursor_holding_a_surrogate_is_422(server: LiveServer) -> None:
    import base64

    raw = json.dumps(["2026-01-01T00:00:00+00:00", "\ud800"]).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    with server.http(ALICE) as http:
        assert http.get("/api/sessions", params={"cursor": cursor}).status_code == 422
