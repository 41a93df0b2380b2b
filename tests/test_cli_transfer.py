"""``chatbot export`` and ``chatbot import`` run as an operator runs them: real processes on
real SQLite files, with a real server on each side of a move."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from chatbot.backend_config import BackendConfig
from tests.conftest import ServerFactory, make_token, wait_for
from tests.conversations import Conversation, assert_same_tree, branch, linear_export
from tests.test_cli import cli_env

pytestmark = pytest.mark.e2e

ALICE = make_token("alice")
FIXTURE = Path(__file__).parent / "fixtures" / "chatgpt" / "conversations.json"
#: Text that JSON keeps inside one line but ``str.splitlines`` would cut: a line of JSON
#: Lines ends at "\n" only.
AWKWARD = 'Line one\nline two\r\nU+2028:\u2028U+2029:\u2029 NEL:\x85 café 🍎 "quoted" \\'


def run(
    cwd: Path, *args: str, database: Path, stdin: bytes | None = None, **env: str
) -> subprocess.CompletedProcess[bytes]:
    """``python -m chatbot ARGS`` on the SQLite file ``database``; output as bytes."""
    return subprocess.run(
        [sys.executable, "-m", "chatbot", *args],
        cwd=cwd,
        env=cli_env(CHATBOT_DATABASE_URL=f"sqlite:///{database}", **env),
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def lines(output: bytes) -> list[dict[str, Any]]:
    """The objects of JSON Lines output: one a line, every line ended by "\\n"."""
    assert output.endswith(b"\n")
    parsed = [json.loads(line) for line in output.decode("utf-8").split("\n")[:-1]]
    assert all(isinstance(item, dict) for item in parsed)
    return parsed


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    """The one line a failed command prints, after checking that it failed as one should."""
    assert result.returncode == 2, result
    assert result.stdout == b""
    text = result.stderr.decode("utf-8")
    [line] = text.splitlines()
    assert line.startswith("chatbot: error: "), text
    return line.removeprefix("chatbot: error: ")


def count_sessions(database: Path, owner: str) -> int:
    with contextlib.closing(sqlite3.connect(database)) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM sessions WHERE owner = ?", (owner,)).fetchone()
        return int(count)


def titled(http: httpx.Client, session_id: str) -> bool:
    return http.get(f"/api/sessions/{session_id}").json()["title"] is not None


def test_a_users_sessions_move_to_another_server(
    tmp_path: Path, start_server: ServerFactory
) -> None:
    old_db, new_db = tmp_path / "old.db", tmp_path / "new.db"
    old = start_server(database_url=f"sqlite:///{old_db}")
    with Conversation(old, ALICE) as chat:
        first = chat.send("Where is Lyon?")
        chat.send("And Paris?")
        chat.send("And Marseille?", parent_id=first["message_id"])
        chat.regenerate()
        trip = chat.session_id
    with Conversation(old, ALICE) as chat:
        chat.send(AWKWARD)
        awkward = chat.session_id
    with Conversation(old, make_token("bob")) as chat:
        chat.send("Bob's own")
    with old.http(ALICE) as http:
        # Titled after the first reply: exported by both sides with its title.
        wait_for(lambda: all(titled(http, s) for s in (trip, awkward)), "the titles")
        exported = [
            http.get(f"/api/sessions/{session_id}/export").json() for session_id in (trip, awkward)
        ]

    # Out of the old server's database while it runs: one line a session, oldest first,
    # each the API's export of that session.
    out = run(tmp_path, "export", "--user", "alice", database=old_db)
    assert out.returncode == 0, out.stderr
    assert out.stderr == b""
    assert lines(out.stdout) == exported
    assert AWKWARD.encode("utf-8") not in out.stdout  # its line breaks are escaped
    assert "café 🍎".encode() in out.stdout  # UTF-8, not \u escapes
    (tmp_path / "alice.jsonl").write_bytes(out.stdout)

    # Into the new server's database, which does not exist yet, with its own backend.
    (tmp_path / "chatbot.toml").write_text('[backends.other]\ntype = "echo"\n', encoding="utf-8")
    into = run(tmp_path, "import", "--user", "alice", "alice.jsonl", database=new_db)
    assert into.returncode == 0, into.stderr
    assert into.stderr == b""
    assert into.stdout == b"Imported 2 sessions for alice\n"

    new = start_server(
        database_url=f"sqlite:///{new_db}",
        backends={"other": BackendConfig("other", "echo")},
        default_backend="other",
    )
    with new.http(ALICE) as http:
        sessions = http.get("/api/sessions").json()["sessions"]
        assert len(sessions) == 2
        assert {s["backend"] for s in sessions} == {"other"}
        by_title = {s["title"]: s["session_id"] for s in sessions}
        copies = [
            http.get(f"/api/sessions/{by_title[original['session']['title']]}/export").json()
            for original in exported
        ]
        found = http.get("/api/search", params={"q": "Marseille"}).json()["results"]
        moved = by_title["Where is Lyon?"]
        leaf_before = branch(http, moved)[-1]
    for original, copy in zip(exported, copies, strict=True):
        assert_same_tree(original, copy)
    # Indexed as they were imported: the question, its reply and the regenerated one.
    assert [r["snippet"] for r in found] == ["And Marseille?"] + ["Echo: And Marseille?"] * 2
    # The conversation goes on where it was, with the new server's backend.
    with Conversation(new, ALICE, moved) as chat:
        reply = chat.send("Still there?")
    assert reply["message"] == "Echo: Still there?"
    assert reply["backend"] == "other"
    with new.http(ALICE) as http:
        question, answer = branch(http, moved)[-2:]
    assert question["parent_id"] == leaf_before["id"]
    assert answer["id"] == reply["message_id"]
    with new.http(make_token("bob")) as http:
        assert http.get("/api/sessions").json()["sessions"] == []


def test_import_from_stdin_of_chatgpt_exports_and_json_lines(tmp_path: Path) -> None:
    database = tmp_path / "chat.db"
    chatgpt = run(
        tmp_path, "import", "--user", "carol", "-", database=database, stdin=FIXTURE.read_bytes()
    )
    assert chatgpt.returncode == 0, chatgpt.stderr
    assert chatgpt.stdout == b"Imported 2 sessions for carol\n"

    out = run(tmp_path, "export", "--user", "carol", database=database)
    assert out.returncode == 0, out.stderr
    carols = lines(out.stdout)
    # Oldest first: the conversation started on 10 June, then the one of 12 July.
    assert [s["session"]["title"] for s in carols] == [
        "Reverse list in Python",
        "Autumn rain haiku",
    ]
    assert [len(s["messages"]) for s in carols] == [7, 4]

    # An export piped into an import.
    piped = run(tmp_path, "import", "--user", "dave", "-", database=database, stdin=out.stdout)
    assert piped.stdout == b"Imported 2 sessions for dave\n"
    daves = lines(run(tmp_path, "export", "--user", "dave", database=database).stdout)
    for original, copy in zip(carols, daves, strict=True):
        assert_same_tree(original, copy)

    # One line, with blank lines around it.
    single = b"\n" + out.stdout.split(b"\n")[1] + b"\n\n"
    one = run(tmp_path, "import", "--user", "erin", "-", database=database, stdin=single)
    assert one.stdout == b"Imported 1 session for erin\n"
    [erins] = lines(run(tmp_path, "export", "--user", "erin", database=database).stdout)
    assert erins["session"]["title"] == "Autumn rain haiku"


def test_export_of_one_session(tmp_path: Path) -> None:
    database = tmp_path / "chat.db"
    document = json.dumps(linear_export("Just this one", "Yes"))
    for user in ("alice", "alice", "bob"):
        run(tmp_path, "import", "--user", user, "-", database=database, stdin=document.encode())
    with contextlib.closing(sqlite3.connect(database)) as db:
        rows = db.execute("SELECT id, owner FROM sessions ORDER BY owner, created_at").fetchall()
    [(alices, _), _, (bobs, _)] = rows

    out = run(tmp_path, "export", "--user", "alice", "--session", alices, database=database)
    assert out.returncode == 0, out.stderr
    [exported] = lines(out.stdout)
    assert [m["content"] for m in exported["messages"]] == ["Just this one", "Yes"]

    for session_id in (bobs, "no-such-session"):
        result = run(
            tmp_path, "export", "--user", "alice", f"--session={session_id}", database=database
        )
        assert one_line_error(result) == (
            f"'alice' has no session '{session_id}'; check the id (a `session_id` of GET "
            "/api/sessions with their token) and --user"
        )


def test_export_of_a_user_without_sessions(tmp_path: Path) -> None:
    database = tmp_path / "chat.db"
    document = json.dumps(linear_export("hello"))
    run(tmp_path, "import", "--user", "alice", "-", database=database, stdin=document.encode())
    result = run(tmp_path, "export", "--user", "alcie", database=database)
    assert one_line_error(result) == (
        "'alcie' has no sessions in the database of CHATBOT_DATABASE_URL; --user takes the "
        "user id the server's tokens name (their `sub`)"
    )


VALID = json.dumps(linear_export("first", "answer"))


#: A ChatGPT export cut short, as a download that stopped: not JSON, nor JSON Lines.
CUT_SHORT = FIXTURE.read_bytes()[:-100]
LATIN_1 = VALID.encode().replace(b"first", b"f\xe9rst")


def _json_error(data: bytes) -> str:
    """Where Python's JSON decoder says ``data`` stops being JSON."""
    try:
        json.loads(data)
    except json.JSONDecodeError as exc:
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    raise AssertionError("valid JSON")


def _line_with_bad_parent() -> str:
    document = linear_export("question", "answer")
    document["messages"][1]["parent_id"] = 7
    return json.dumps(document)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            f"{VALID}\n{{not json\n".encode(),
            "in.jsonl line 2 is not JSON: Expecting property name enclosed in double quotes "
            "at column 2; each line must hold one chatbot.session.v1 export, as `chatbot "
            "export` writes them",
            id="json-line",
        ),
        pytest.param(
            f"{VALID}\n{_line_with_bad_parent()}\n".encode(),
            "in.jsonl line 2: messages[1].parent_id 7 is not the id of an earlier message: "
            "list every message after the one it follows",
            id="parent",
        ),
        pytest.param(
            json.dumps(linear_export("x") | {"format": "chatbot.session.v0"}).encode(),
            'in.jsonl: format "chatbot.session.v0" is not one this server reads: export as '
            "chatbot.session.v1, or import a ChatGPT export",
            id="format",
        ),
        pytest.param(
            CUT_SHORT,
            f"in.jsonl is not JSON: {_json_error(CUT_SHORT)}; give a file written by "
            "`chatbot export` (one chatbot.session.v1 export a line) or a ChatGPT "
            "conversations.json",
            id="cut-short",
        ),
        pytest.param(b"\n \n", "in.jsonl is empty: there is nothing to import", id="empty"),
        pytest.param(
            LATIN_1,
            f"in.jsonl is not UTF-8 text (byte {LATIN_1.index(0xE9)} is not UTF-8)",
            id="latin-1",
        ),
    ],
)
def test_a_bad_file_imports_nothing(tmp_path: Path, content: bytes, message: str) -> None:
    database = tmp_path / "chat.db"
    (tmp_path / "in.jsonl").write_bytes(content)
    result = run(tmp_path, "import", "--user", "alice", "in.jsonl", database=database)
    assert one_line_error(result) == message
    # Read before the database is opened: not even created.
    assert not database.exists()


def test_an_import_past_the_session_limit_imports_nothing(tmp_path: Path) -> None:
    database = tmp_path / "chat.db"
    run(tmp_path, "import", "--user", "alice", "-", database=database, stdin=VALID.encode())
    result = run(
        tmp_path,
        "import",
        "--user",
        "alice",
        str(FIXTURE),
        database=database,
        CHATBOT_MAX_SESSIONS_PER_USER="2",
    )
    assert one_line_error(result) == (
        "2 more sessions would give 'alice' more than 2, the most "
        "CHATBOT_MAX_SESSIONS_PER_USER allows; nothing was imported: raise it, or import fewer"
    )
    # All in one transaction: not the first conversation of the two either.
    assert count_sessions(database, "alice") == 1


def test_a_missing_file_and_an_empty_user(tmp_path: Path) -> None:
    database = tmp_path / "chat.db"
    missing = run(tmp_path, "import", "--user", "alice", "nope.json", database=database)
    assert one_line_error(missing) == "cannot read nope.json: No such file or directory"
    for command in (["import", "--user", "", str(FIXTURE)], ["export", "--user", ""]):
        result = run(tmp_path, *command, database=database)
        assert one_line_error(result) == (
            "--user must be a user id of 1 to 255 characters: the `sub` of the user's tokens"
        )
    assert not database.exists()
