"""Export and import through the HTTP API, end to end against a real server: a conversation
with branches made over the socket goes out as JSON and comes back as the same tree."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatbot.backend_config import BackendConfig
from chatbot.transfer import FORMAT
from tests.backends import FlakyBackend
from tests.conftest import LiveServer, ServerFactory, make_token
from tests.conversations import (
    Conversation,
    assert_same_tree,
    branch,
    import_session,
    linear_export,
)

pytestmark = pytest.mark.e2e

ALICE = make_token("alice")
BOB = make_token("bob")
FIXTURE = Path(__file__).parent / "fixtures" / "chatgpt" / "conversations.json"


def flaky_server(start_server: ServerFactory, **overrides: Any) -> LiveServer:
    """A server whose replies carry usage and a model, and fail on ``fail-late`` after
    some text (stored as a reply with status ``error``)."""
    settings = start_server.settings(
        backends={"flaky": BackendConfig("flaky", "flaky")}, default_backend="flaky", **overrides
    )
    return start_server(settings, backend_types={"flaky": FlakyBackend})


def branching_session(server: LiveServer, token: str) -> tuple[str, dict[str, int]]:
    """A session whose tree is::

        Lyon -> reply -> Paris -> reply
                      -> Marseille -> reply
                                   -> regenerated reply -> fail-late -> failed reply

    made over the socket, with the current branch switched to the Paris reply. Its id, and
    the ids of its messages by name."""
    with Conversation(server, token) as chat:
        lyon = chat.send("Where is Lyon?")
        paris = chat.send("And Paris?")
        marseille = chat.send("And Marseille?", parent_id=lyon["message_id"])
        regenerated = chat.regenerate()
        failed = chat.send("fail-late")
        session_id = chat.session_id
    assert failed["type"] == "error"
    with server.http(token) as http:
        leaf = branch(http, session_id)
        assert [m["content"] for m in leaf] == [
            "Where is Lyon?",
            "partial answer to Where is Lyon? with flaky-1",
            "And Marseille?",
            "partial answer to And Marseille? with flaky-1",
            "fail-late",
            "partial ",
        ]
        switched = http.patch(f"/api/sessions/{session_id}", json={"leaf_id": paris["message_id"]})
        assert switched.status_code == 200
    ids = {
        "lyon_reply": lyon["message_id"],
        "paris_reply": paris["message_id"],
        "marseille_reply": marseille["message_id"],
        "regenerated": regenerated["message_id"],
        "failed": leaf[-1]["id"],
    }
    return session_id, ids


def export(http: httpx.Client, session_id: str) -> dict[str, Any]:
    response = http.get(f"/api/sessions/{session_id}/export", params={"format": "json"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def session_count(http: httpx.Client) -> int:
    return len(http.get("/api/sessions", params={"limit": 100}).json()["sessions"])


# -- export and import back ------------------------------------------------------------------


def test_an_export_with_branches_imports_back_as_the_same_tree(
    start_server: ServerFactory,
) -> None:
    server = flaky_server(start_server)
    session_id, ids = branching_session(server, ALICE)
    with server.http(ALICE) as http:
        response = http.get(f"/api/sessions/{session_id}/export")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["content-disposition"] == (
            f'attachment; filename="chatbot-{session_id}.json"'
        )
        original = response.json()
        session = http.get(f"/api/sessions/{session_id}").json()

        imported = import_session(http, original)
        copy = export(http, imported["session_id"])

    # The whole tree went out, every branch, parents first, with what each message holds.
    assert original["format"] == FORMAT
    messages = original["messages"]
    assert len(messages) == 9 == session["message_count"]
    assert [m["id"] for m in messages] == sorted(m["id"] for m in messages)
    by_id = {m["id"]: m for m in messages}
    assert by_id[ids["regenerated"]]["parent_id"] == by_id[ids["marseille_reply"]]["parent_id"]
    assert by_id[ids["failed"]]["status"] == "error"
    assert by_id[ids["paris_reply"]]["usage"] == {"input_tokens": 3, "output_tokens": 4}
    assert original["session"] == {
        "title": "Where is Lyon?",
        "backend": "flaky",
        "model": "flaky-1",
        "system_prompt": None,
        "created_at": session["created_at"],
        "updated_at": session["updated_at"],
        "leaf_id": ids["paris_reply"],
    }

    # Back in: a new session, new ids, the same tree.
    assert imported["session_id"] != session_id
    assert imported["title"] == "Where is Lyon?"
    assert imported["message_count"] == 9
    assert imported["created_at"] == session["created_at"]
    assert imported["updated_at"] == messages[-1]["created_at"]
    assert any("client_id" in m for m in messages)
    old_to_new = assert_same_tree(original, copy)
    assert not set(old_to_new) & set(old_to_new.values())
    assert copy["session"]["leaf_id"] == old_to_new[ids["paris_reply"]]

    # The same branch is current, and every branch reads back the same.
    with server.http(ALICE) as http:
        for leaf in (ids["paris_reply"], ids["failed"], ids["marseille_reply"]):
            before = branch(http, session_id, leaf_id=leaf)
            after = branch(http, imported["session_id"], leaf_id=old_to_new[leaf])
            assert [(m["role"], m["content"], len(m["siblings"])) for m in after] == [
                (m["role"], m["content"], len(m["siblings"])) for m in before
            ]
        assert branch(http, imported["session_id"])[-1]["id"] == old_to_new[ids["paris_reply"]]


def test_markdown_export_is_the_current_branch(start_server: ServerFactory) -> None:
    server = flaky_server(start_server)
    session_id, ids = branching_session(server, ALICE)
    with server.http(ALICE) as http:
        http.patch(f"/api/sessions/{session_id}", json={"leaf_id": ids["failed"]})
        response = http.get(f"/api/sessions/{session_id}/export", params={"format": "markdown"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/markdown; charset=utf-8"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="chatbot-{session_id}.md"'
    )
    title, exported, rest = response.text.split("\n\n", 2)
    assert title == "# Where is Lyon?"
    assert re.fullmatch(r"Exported on \d{4}-\d\d-\d\d \d\d:\d\d UTC\.", exported)
    assert rest == (
        "## User\n\nWhere is Lyon?\n\n"
        "## Assistant\n\npartial answer to Where is Lyon? with flaky-1\n\n"
        "## User\n\nAnd Marseille?\n\n"
        "## Assistant\n\npartial answer to And Marseille? with flaky-1\n\n"
        "## User\n\nfail-late\n\n"
        "## Assistant (error)\n\npartial \n"
    )


def test_export_of_an_empty_session_and_an_unknown_format(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        session_id = http.post("/api/sessions", json={"title": "Empty"}).json()["session_id"]
        body = export(http, session_id)
        markdown = http.get(f"/api/sessions/{session_id}/export?format=markdown").text
        wrong = http.get(f"/api/sessions/{session_id}/export?format=pdf")
        imported = import_session(http, body)
    assert body["messages"] == []
    assert body["session"]["leaf_id"] is None
    assert markdown.startswith("# Empty\n\nExported on ")
    assert markdown.count("\n\n") == 1
    assert wrong.status_code == 422
    assert wrong.json() == {
        "error": {"code": "invalid_format", "message": "format must be json or markdown"}
    }
    assert imported["message_count"] == 0
    assert imported["leaf_id"] is None


def test_another_user_cannot_export_a_session(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        session_id = import_session(http, linear_export("mine", "yes"))["session_id"]
    with server.http(BOB) as http:
        for kind in ("json", "markdown"):
            theirs = http.get(f"/api/sessions/{session_id}/export?format={kind}")
            missing = http.get(f"/api/sessions/no-such-session/export?format={kind}")
            assert theirs.status_code == missing.status_code == 404
            assert (
                theirs.json()
                == missing.json()
                == {"error": {"code": "not_found", "message": "session not found"}}
            )
            assert "mine" not in theirs.text
    with server.http() as anonymous:
        assert anonymous.get(f"/api/sessions/{session_id}/export").status_code == 401


# -- ChatGPT ---------------------------------------------------------------------------------


def test_a_chatgpt_export_imports_as_two_sessions_with_their_branches(
    server: LiveServer,
) -> None:
    with server.http(ALICE) as http:
        response = http.post("/api/sessions/import", content=FIXTURE.read_bytes())
        assert response.status_code == 201
        haiku, reverse = response.json()["sessions"]
        current = branch(http, reverse["session_id"])
        listed = {s["session_id"] for s in http.get("/api/sessions").json()["sessions"]}
        # The first question's branch: its own reply.
        switched = http.patch(
            f"/api/sessions/{reverse['session_id']}", json={"leaf_id": current[0]["siblings"][0]}
        )
        assert switched.status_code == 200
        first_branch = branch(http, reverse["session_id"])
        haiku_branch = branch(http, haiku["session_id"])

    assert listed == {haiku["session_id"], reverse["session_id"]}
    assert haiku["title"] == "Autumn rain haiku"
    assert haiku["message_count"] == 4
    assert haiku["backend"] == "echo"
    assert [m["content"] for m in haiku_branch][-1] == (
        "First snow, no footprints\nthe whole street holds its breath white\nuntil the dog wakes"
    )
    assert reverse == {
        "session_id": reverse["session_id"],
        "title": "Reverse list in Python",
        "backend": "echo",
        "model": None,
        "system_prompt": None,
        "created_at": "2024-06-10T16:00:00.512345Z",
        "updated_at": "2024-06-10T16:02:41.800751Z",
        "message_count": 7,
        "leaf_id": current[-1]["id"],
    }
    # The branch of current_node: the edited question, the regenerated reply, and on.
    assert [(m["role"], m["content"][:40], m["created_at"]) for m in current] == [
        ("user", "How do I reverse a list in Python withou", "2024-06-10T16:01:01.516896Z"),
        ("assistant", "Use the list's own method:\n\n```python\nit", "2024-06-10T16:01:35.632349Z"),
        ("user", "I tried it on my data and got this error", "2024-06-10T16:02:33.262345Z"),
        ("assistant", "Your screenshot shows `items` is a tuple", "2024-06-10T16:02:41.800751Z"),
    ]
    assert [m["model"] for m in current if m["role"] == "assistant"] == ["gpt-4o", "gpt-4o"]
    assert [m["backend"] for m in current if m["role"] == "assistant"] == [None, None]
    # Siblings kept: the first question beside its edit, the first reply beside the
    # regenerated one.
    assert len(current[0]["siblings"]) == 2
    assert current[0]["siblings"][1] == current[0]["id"]
    assert len(current[1]["siblings"]) == 2
    assert current[1]["siblings"][1] == current[1]["id"]
    assert [(m["content"][:34], m["siblings"]) for m in first_branch] == [
        ("How do I reverse a list in Python?", current[0]["siblings"]),
        ("Use slicing: `items[::-1]` returns", [first_branch[1]["id"]]),
    ]


# -- bad imports -----------------------------------------------------------------------------


def _ours(**changes: Any) -> dict[str, Any]:
    document = linear_export("question", "answer", "follow-up")
    document.update(changes)
    return document


def _bad_parent() -> dict[str, Any]:
    document = _ours()
    document["messages"][1]["parent_id"] = 99
    return document


def _chatgpt_with_a_bad_parent() -> list[Any]:
    conversations = json.loads(FIXTURE.read_text(encoding="utf-8"))
    conversations[1]["mapping"]["aaa2f6b1-0c3e-4d5e-9b1a-7c8d9e0f1a2b"]["parent"] = "no-such-node"
    return list(conversations)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        pytest.param(
            _ours(format="chatbot.session.v9"),
            'format "chatbot.session.v9" is not one this server reads: export as '
            "chatbot.session.v1, or import a ChatGPT export",
            id="format",
        ),
        pytest.param(
            _bad_parent(),
            "messages[1].parent_id 99 is not the id of an earlier message: list every "
            "message after the one it follows",
            id="parent",
        ),
        pytest.param(
            _chatgpt_with_a_bad_parent(),
            # The first conversation is valid: nothing of it is imported either.
            'conversations[1].mapping["aaa2f6b1-0c3e-4d5e-9b1a-7c8d9e0f1a2b"].parent '
            '"no-such-node" is not a node of conversations[1].mapping',
            id="chatgpt-parent",
        ),
        pytest.param(
            {"messages": []},
            'the import is neither a chatbot.session.v1 export (an object with "format") '
            'nor a ChatGPT conversation (an object with "mapping") nor an array of ChatGPT '
            "conversations",
            id="neither",
        ),
    ],
)
def test_a_bad_import_names_the_problem_and_imports_nothing(
    server: LiveServer, document: Any, message: str
) -> None:
    with server.http(ALICE) as http:
        import_session(http, linear_export("already here"))
        response = http.post("/api/sessions/import", json=document)
        assert response.status_code == 422
        assert response.json() == {"error": {"code": "invalid_import", "message": message}}
        assert session_count(http) == 1


def test_invalid_json_is_400(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        response = http.post("/api/sessions/import", content=b'{"format": "chatbot.sess')
        assert response.status_code == 400
        assert response.json() == {
            "error": {"code": "invalid_json", "message": "the request body is not valid JSON"}
        }
        assert session_count(http) == 0


def test_an_import_past_the_session_limit_imports_nothing(start_server: ServerFactory) -> None:
    server = start_server(max_sessions_per_user=2)
    with server.http(ALICE) as http:
        import_session(http, linear_export("already here"))
        response = http.post("/api/sessions/import", content=FIXTURE.read_bytes())
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "too_many_sessions"
        # Both conversations or neither: the first one was rolled back with the second.
        assert session_count(http) == 1


# -- body limits -----------------------------------------------------------------------------


def test_a_body_over_the_import_limit_is_413(start_server: ServerFactory) -> None:
    body = FIXTURE.read_bytes()
    server = start_server(max_import_bytes=len(body) - 1, max_body_bytes=100)
    too_large = {
        "error": {
            "code": "body_too_large",
            "message": f"the request body is larger than {len(body) - 1} bytes",
        }
    }
    with server.http(ALICE) as http:
        response = http.post("/api/sessions/import", content=body)
        assert response.status_code == 413
        assert response.json() == too_large
    # Without a Content-Length, refused as it is read.
    with server.http(ALICE) as http:
        response = http.post("/api/sessions/import", content=iter([body[:1000], body[1000:]]))
        assert response.status_code == 413
        assert response.json() == too_large
    with server.http(ALICE) as http:
        assert session_count(http) == 0


def test_the_import_limit_is_for_imports_only(start_server: ServerFactory) -> None:
    body = FIXTURE.read_bytes()
    server = start_server(max_import_bytes=len(body), max_body_bytes=200)
    with server.http(ALICE) as http:
        # Past the API's body limit, within the import's: imported.
        assert http.post("/api/sessions/import", content=body).status_code == 201
        session_id = http.get("/api/sessions").json()["sessions"][0]["session_id"]
        # Every other route keeps the API's limit.
        for method, path, payload in [
            ("POST", "/api/sessions", {"title": "x" * 150, "system_prompt": "y" * 150}),
            ("PATCH", f"/api/sessions/{session_id}", {"title": "x" * 300}),
            ("POST", f"/api/sessions/{session_id}/shares", {"padding": "x" * 300}),
        ]:
            response = http.request(method, path, json=payload)
            assert response.status_code == 413, (method, path)
            assert response.json() == {
                "error": {
                    "code": "body_too_large",
                    "message": "the request body is larger than 200 bytes",
                }
            }
        assert session_count(http) == 2
