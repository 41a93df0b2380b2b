"""Session titles, end to end: made after the first reply (by the title backend, else from
the first words), sent to the sockets that take conversation events, never put over a
title the user set, and made again on request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from chatbot.backends import Backend, ChatRequest, Usage
from chatbot.chat.titles import INSTRUCTION
from chatbot.errors import BackendError
from chatbot.settings import BackendConfig
from tests.conftest import LiveServer, ServerFactory, make_token, recv_json, wait_for

ALICE = make_token("alice")
FIRST = "Plan a week in Lisbon for two with a day trip to Sintra and an evening of fado"
#: The first words of FIRST: at most 60 characters, cut at a word.
FIRST_WORDS = "Plan a week in Lisbon for two with a day trip to Sintra and"
#: What the title backend answers, as a model might: marks, quotes, a second line.
ANSWER = '**"Lisbon for two: trams, Sintra, fado nights and pastel de nata tastings"**\nMore'
#: That answer as a title: its first line, without the marks, at most 60 characters.
ANSWER_TITLE = "Lisbon for two: trams, Sintra, fado nights and pastel de"


class Titler(Backend):
    """Answers the option ``answer``. Writes each request's messages to the file ``log`` as
    a JSON line when it is asked, and the line ``answered`` once its answer was taken.
    With the option ``gate``, answers only once that file exists."""

    def _write(self, line: str) -> None:
        with open(str(self.options["log"]), "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        self._write(json.dumps([[m.role, m.content] for m in request.messages]))
        gate = self.options.get("gate")
        if gate is not None:
            await asyncio.to_thread(wait_for, Path(gate).exists, "the gate to open")
        yield str(self.options["answer"])
        self._write("answered")


class DownTitler(Backend):
    """Fails every request, as an unreachable vendor does."""

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Usage]:
        raise BackendError("the titler is down", kind="backend_unavailable", retryable=True)
        yield ""  # an async generator, like every backend


def titled_server(
    start_server: ServerFactory, backend_type: type[Backend], **options: Any
) -> LiveServer:
    """A server whose sessions use the echo backend and are titled by ``backend_type``."""
    settings = start_server.settings(
        backends={
            "echo": BackendConfig("echo", "echo"),
            "titler": BackendConfig("titler", "titler", options),
        },
        default_backend="echo",
        title_backend="titler",
    )
    return start_server(settings, backend_types={"titler": backend_type})


def log_lines(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


@contextlib.contextmanager
def events_socket(server: LiveServer) -> Iterator[tuple[ClientConnection, str]]:
    """A socket on a new session that takes conversation events, and the session's id."""
    with server.ws(ALICE, path="/ws/chat/?conversation_events=1") as ws:
        yield ws, recv_json(ws)["session_id"]


def send(ws: ClientConnection, **frame: Any) -> None:
    ws.send(json.dumps(frame))


def quiet(ws: ClientConnection) -> None:
    """Nothing more was sent to this socket: the pong is the next frame."""
    send(ws, type="ping")
    assert recv_json(ws) == {"type": "pong"}


def title_frame(title: str, session_id: str) -> dict[str, Any]:
    return {"type": "title", "title": title, "session_id": session_id}


def session_of(server: LiveServer, session_id: str) -> dict[str, Any]:
    with server.http(ALICE) as http:
        response = http.get(f"/api/sessions/{session_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_the_first_reply_titles_the_session_with_its_first_words(server: LiveServer) -> None:
    with events_socket(server) as (ws, session_id):
        send(ws, message=FIRST)
        reply = recv_json(ws)
        assert (reply["type"], reply["message"]) == ("message", f"Echo: {FIRST}")
        assert recv_json(ws) == title_frame(FIRST_WORDS, session_id)
        # Only the first reply makes a title.
        send(ws, message="And in winter?")
        assert recv_json(ws)["message"] == "Echo: And in winter?"
        quiet(ws)
    assert session_of(server, session_id)["title"] == FIRST_WORDS


def test_a_client_of_the_original_document_gets_a_title_too_but_no_title_frame(
    server: LiveServer,
) -> None:
    with server.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        send(ws, message="short question")
        assert recv_json(ws) == {"message": "Echo: short question", "session_id": session_id}
        wait_for(lambda: session_of(server, session_id)["title"], "the session's title")
        quiet(ws)
    assert session_of(server, session_id)["title"] == "short question"


def test_the_title_backend_names_the_session_in_one_short_line(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    log = tmp_path / "titler.log"
    server = titled_server(start_server, Titler, answer=ANSWER, log=str(log))
    with events_socket(server) as (ws, session_id):
        send(ws, message=FIRST)
        assert recv_json(ws)["message"] == f"Echo: {FIRST}"
        assert recv_json(ws) == title_frame(ANSWER_TITLE, session_id)
        send(ws, message="And in winter?")
        recv_json(ws)
        quiet(ws)
    assert session_of(server, session_id)["title"] == ANSWER_TITLE
    # Asked once, with a short instruction and the start of the conversation.
    asked = f"{INSTRUCTION}User: {FIRST}\n\nAssistant: Echo: {FIRST}"
    assert log_lines(log) == [json.dumps([["user", asked]]), "answered"]


def test_a_failing_title_backend_leaves_the_first_words_and_no_error_frame(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = titled_server(start_server, DownTitler)
    with events_socket(server) as (ws, session_id):
        send(ws, message=FIRST, id="m1")
        reply = recv_json(ws)
        assert (reply["type"], reply["reply_to"], reply["status"]) == ("message", "m1", "complete")
        assert recv_json(ws) == title_frame(FIRST_WORDS, session_id)
        quiet(ws)
    assert session_of(server, session_id)["title"] == FIRST_WORDS
    [record] = [r for r in caplog.records if r.name == "chatbot.chat"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "title backend 'titler' failed (backend_unavailable): the titler is down; "
        "the session keeps its first words"
    )


def test_a_title_the_user_set_meanwhile_is_not_overwritten(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    log, gate = tmp_path / "titler.log", tmp_path / "gate"
    server = titled_server(start_server, Titler, answer=ANSWER, log=str(log), gate=str(gate))
    with events_socket(server) as (ws, session_id), server.http(ALICE) as http:
        send(ws, message=FIRST)
        assert recv_json(ws)["message"] == f"Echo: {FIRST}"
        # The title backend is asked; the user renames the session before it answers.
        wait_for(lambda: log_lines(log), "the title backend to be asked")
        renamed = http.patch(f"/api/sessions/{session_id}", json={"title": "Our trip"})
        assert (renamed.status_code, renamed.json()["title"]) == (200, "Our trip")
        assert recv_json(ws) == title_frame("Our trip", session_id)
        gate.touch()
        wait_for(lambda: log_lines(log)[1:] == ["answered"], "the title backend's answer")
        # The server stores the title it made right after the backend's last line (nothing
        # runs in between), and writes are committed in order: a PATCH now is committed
        # after it, and answers with the session as it then stands.
        leaf_id = session_of(server, session_id)["leaf_id"]
        switched = http.patch(f"/api/sessions/{session_id}", json={"leaf_id": leaf_id})
        assert (switched.status_code, switched.json()["title"]) == (200, "Our trip")
        quiet(ws)
    assert session_of(server, session_id)["title"] == "Our trip"


def test_a_session_created_with_a_title_keeps_it(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    log = tmp_path / "titler.log"
    server = titled_server(start_server, Titler, answer=ANSWER, log=str(log))
    with server.http(ALICE) as http:
        session_id = http.post("/api/sessions", json={"title": "Mine"}).json()["session_id"]
    path = f"/ws/chat/?session_id={session_id}&conversation_events=1"
    with server.ws(ALICE, path=path) as ws:
        send(ws, message=FIRST)
        assert recv_json(ws)["message"] == f"Echo: {FIRST}"
        quiet(ws)
    assert log_lines(log) == []  # the title backend is not even asked
    assert session_of(server, session_id)["title"] == "Mine"


@pytest.mark.parametrize("with_backend", [True, False], ids=["title backend", "first words"])
def test_post_title_makes_a_new_one(
    start_server: ServerFactory, tmp_path: Path, with_backend: bool
) -> None:
    if with_backend:
        log = tmp_path / "titler.log"
        server = titled_server(start_server, Titler, answer=ANSWER, log=str(log))
        expected = ANSWER_TITLE
    else:
        server = start_server()
        expected = FIRST_WORDS
    with server.http(ALICE) as http:
        session_id = http.post("/api/sessions", json={"title": "Mine"}).json()["session_id"]
    path = f"/ws/chat/?session_id={session_id}&conversation_events=1"
    with server.ws(ALICE, path=path) as ws, server.http(ALICE) as http:
        send(ws, message=FIRST)
        assert recv_json(ws)["message"] == f"Echo: {FIRST}"
        response = http.post(f"/api/sessions/{session_id}/title")
        assert response.status_code == 200
        body = response.json()
        assert recv_json(ws) == title_frame(expected, session_id)
        quiet(ws)
    assert body == {**session_of(server, session_id), "title": expected}
    assert body["title"] == expected


def test_post_title_on_a_session_of_another_user_is_404_like_a_missing_one(
    server: LiveServer,
) -> None:
    with server.http(ALICE) as http:
        session_id = http.post("/api/sessions").json()["session_id"]
    with server.http(make_token("bob")) as http:
        foreign = http.post(f"/api/sessions/{session_id}/title")
        missing = http.post("/api/sessions/no-such-session/title")
    assert foreign.status_code == missing.status_code == 404
    assert (
        foreign.json()
        == missing.json()
        == {"error": {"code": "not_found", "message": "session not found"}}
    )
    assert session_of(server, session_id)["title"] is None
