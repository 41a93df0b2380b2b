"""Conversations made as clients make them, for the end-to-end tests of the HTTP API: over
the chat socket (edits and regenerations included), or through ``POST
/api/sessions/import`` where a test needs exact contents and timestamps."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import httpx

from chatbot.transfer import FORMAT
from tests.conftest import LiveServer, bearer, make_token, recv_json

ALICE = make_token("alice")


def api(server: LiveServer) -> httpx.Client:
    """The HTTP API as Alice."""
    return httpx.Client(base_url=server.url, headers=bearer(ALICE), timeout=10)


def seed(server: LiveServer, title: str | None, messages: Sequence[str] = ()) -> str:
    """A session of Alice's named ``title``, holding ``messages`` and their echoes."""
    with api(server) as http:
        response = http.post("/api/sessions", json={"title": title})
        assert response.status_code == 201, response.text
        session_id: str = response.json()["session_id"]
    if messages:
        with server.ws(ALICE, session_id=session_id) as ws:
            for text in messages:
                ws.send(json.dumps({"message": text}))
                assert recv_json(ws)["message"] == f"Echo: {text}"
    return session_id


class Conversation:
    """A socket on one session, with branch and title frames on; use it in a ``with``.
    Each call sends a frame and reads until its reply is stored (the ``message`` frame, or
    the ``error`` frame of a failed reply); every other frame is kept in ``events``."""

    def __init__(self, server: LiveServer, token: str, session_id: str | None = None) -> None:
        path = "/ws/chat/?conversation_events=1"
        if session_id is not None:
            path += f"&session_id={session_id}"
        self._connection = server.ws(token, path=path)
        self.session_id = session_id or ""
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    def __enter__(self) -> Conversation:
        self.ws = self._connection.__enter__()
        if not self.session_id:
            self.session_id = recv_json(self.ws)["session_id"]
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._connection.__exit__(kind, value, traceback)

    def send(self, text: str, **fields: Any) -> dict[str, Any]:
        """Send a message (``parent_id=`` for an edit); its reply's frame."""
        return self._ask({"message": text, **fields})

    def regenerate(self, message_id: int | None = None) -> dict[str, Any]:
        """Ask for a new reply (to the newest one of the branch, without ``message_id``)."""
        frame: dict[str, Any] = {"type": "regenerate"}
        if message_id is not None:
            frame["message_id"] = message_id
        return self._ask(frame)

    def _ask(self, frame: dict[str, Any]) -> dict[str, Any]:
        client_id = f"c{next(self._ids)}"
        self.ws.send(json.dumps({**frame, "id": client_id}))
        while True:
            received = recv_json(self.ws)
            if received.get("reply_to") == client_id and received.get("type") != "delta":
                return received
            self.events.append(received)


def linear_export(
    *contents: str,
    title: str | None = "Imported",
    start: str = "2025-03-01T10:00:",
) -> dict[str, Any]:
    """A ``chatbot.session.v1`` document of one branch: user and assistant in turn, one
    second apart from ``{start}00Z``."""
    messages = [
        {
            "id": index,
            "parent_id": index - 1 if index > 1 else None,
            "role": "user" if index % 2 else "assistant",
            "content": content,
            "status": "complete",
            "created_at": f"{start}{index:02d}Z",
        }
        for index, content in enumerate(contents, start=1)
    ]
    return {
        "format": FORMAT,
        "session": {"title": title, "created_at": f"{start}00Z"},
        "messages": messages,
    }


def import_session(http: httpx.Client, document: Any) -> dict[str, Any]:
    """Import one conversation through the API; its session's JSON."""
    response = http.post("/api/sessions/import", json=document)
    assert response.status_code == 201, response.text
    [session] = response.json()["sessions"]
    assert isinstance(session, dict)
    return session


def branch(http: httpx.Client, session_id: str, **params: Any) -> list[dict[str, Any]]:
    """The messages of the current branch (or of ``leaf_id=``), root first."""
    response = http.get(f"/api/sessions/{session_id}/messages", params={"limit": 100, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["has_more"] is False
    messages: list[dict[str, Any]] = body["messages"]
    return messages


#: The fields of a message that an import keeps as they were.
KEPT = ("role", "content", "status", "created_at", "usage", "backend", "model")


def assert_same_tree(original: dict[str, Any], copy: dict[str, Any]) -> dict[int, int]:
    """Check that ``copy``, the export of an imported ``original`` export, holds the same
    tree under new ids: each message as it was, under the same parent, answering the same
    question, and the same current branch. The new id of each old one."""
    old, new = original["messages"], copy["messages"]
    assert len(new) == len(old)
    new_ids = {before["id"]: after["id"] for before, after in zip(old, new, strict=True)}
    for before, after in zip(old, new, strict=True):
        assert {k: after.get(k) for k in KEPT} == {k: before.get(k) for k in KEPT}
        parent = before["parent_id"]
        assert after["parent_id"] == (None if parent is None else new_ids[parent])
        if before["role"] == "assistant":
            assert after["in_reply_to"] == new_ids[before["in_reply_to"]]
        # A client id belongs to the client that sent the message, not to the copy.
        assert "client_id" not in after
    leaf = original["session"]["leaf_id"]
    assert copy["session"]["leaf_id"] == (None if leaf is None else new_ids[leaf])
    for name in ("title", "system_prompt", "created_at"):
        assert copy["session"][name] == original["session"][name]
    return new_ids
