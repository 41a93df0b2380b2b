"""``chatbot quota`` run as an operator runs it: a real process on a SQLite file, with no
server. (With a server running on the file: tests/test_quota_chat.py.)"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from tests.test_cli import cli_env, run_cli

pytestmark = pytest.mark.e2e


def quota(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    database = f"sqlite:///{tmp_path / 'chat.db'}"
    result = run_cli(tmp_path, "quota", *args, env=cli_env(CHATBOT_DATABASE_URL=database, **env))
    return result.returncode, result.stdout, result.stderr


def test_set_show_and_clear_a_users_quota(tmp_path: Path) -> None:
    server = {"CHATBOT_QUOTA_TOKENS_PER_DAY": "5000", "CHATBOT_QUOTA_CLAIM": "plan"}
    assert quota(tmp_path, "show", "--user", "alice", **server) == (
        0,
        "alice has no override; the plan in their token's 'plan' claim applies if it carries "
        "one, else the server's quota applies: 5000 tokens a day, no limit a month\n"
        "used: 0 tokens today, 0 this month (UTC)\n",
        "",
    )
    assert quota(tmp_path, "set", "--user", "alice", "--per-month", "0")[:2] == (
        0,
        "quota of alice: no limit a day, 0 tokens a month; it comes before any plan in their "
        "token and before the server's quota\n",
    )
    assert quota(tmp_path, "set", "--user", "bob", "--unlimited")[:2] == (
        0,
        "quota of bob: no limit a day, no limit a month; it comes before any plan in their "
        "token and before the server's quota\n",
    )
    with contextlib.closing(sqlite3.connect(tmp_path / "chat.db")) as db:
        rows = db.execute(
            "SELECT user_id, tokens_per_day, tokens_per_month FROM quota_overrides ORDER BY user_id"
        ).fetchall()
    assert rows == [("alice", None, 0), ("bob", None, None)]

    assert quota(tmp_path, "show", "--user", "alice")[1].startswith(
        "quota of alice: no limit a day, 0 tokens a month (an override of `chatbot quota set`)\n"
    )
    assert quota(tmp_path, "clear", "--user", "alice")[:2] == (
        0,
        "removed the override of alice; the server sets no quota\n",
    )
    assert quota(tmp_path, "clear", "--user", "alice")[:2] == (
        0,
        "alice has no override; nothing changed\n",
    )
    assert quota(tmp_path, "show", "--user", "bob")[1].startswith("quota of bob: no limit a day")


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ("set", "--user", "alice"),
            "chatbot: error: give --per-day N, --per-month N or both (a period left out has "
            "no limit), or --unlimited to exempt the user from every quota\n",
        ),
        (
            ("set", "--user", "alice", "--unlimited", "--per-day", "3"),
            "chatbot: error: give --unlimited, or --per-day and --per-month, not both\n",
        ),
        (
            ("show", "--user", ""),
            "chatbot: error: --user must be a user id of 1 to 255 characters: the `sub` of "
            "the user's tokens\n",
        ),
    ],
)
def test_a_command_that_cannot_be_carried_out_is_one_line(
    tmp_path: Path, args: tuple[str, ...], error: str
) -> None:
    assert quota(tmp_path, *args) == (2, "", error)
    # Nothing was written: not even the database was created.
    assert not (tmp_path / "chat.db").exists()


@pytest.mark.parametrize("value", ["-1", "1.5", "lots", "1e3"])
def test_a_quota_is_a_whole_number_of_tokens(tmp_path: Path, value: str) -> None:
    status, out, err = quota(tmp_path, "set", "--user", "alice", "--per-day", value)
    assert (status, out) == (2, "")
    assert err.endswith(
        f"chatbot quota set: error: argument --per-day: {value!r} is not a number of tokens; "
        "write a whole number, 0 or more\n"
    )
