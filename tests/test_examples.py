"""The example client works against a real server, as the README says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import LiveServer, make_token

CLIENT = Path(__file__).parent.parent / "examples" / "client.py"


def run_client(server: LiveServer, *args: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLIENT), "--url", server.ws_url, "--token", token, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_example_client_sends_a_message_and_prints_the_history(server: LiveServer) -> None:
    result = run_client(server, "--message", "Hello AI!", token=make_token("reader"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    session_id = lines[0].removeprefix("session: ")
    assert lines[1:] == [
        "assistant: Echo: Hello AI!",
        f"--- history of {session_id} (2 messages) ---",
        "user: Hello AI!",
        "assistant: Echo: Hello AI!",
    ]


def test_example_client_explains_a_refused_token(server: LiveServer) -> None:
    result = run_client(server, "--message", "hi", token=make_token("reader", ttl=-3600))
    assert result.returncode == 1
    assert "chatbot token --sub you" in result.stderr
