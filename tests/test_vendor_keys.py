"""Vendor keys, end to end: a real ``chatbot serve`` with the openai and anthropic plugins
talking to the fake vendors. Keys never reach a log line, a frame or an HTTP response, and
a missing key stops the server at start-up naming the variable to set."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import SECRET, LiveServer, bearer, make_token, recv_json
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI
from tests.processes import ServeProcess

OPENAI_KEY = "sk-proj-openai-key-must-never-leak-0123456789"
ANTHROPIC_KEY = "sk-ant-anthropic-key-must-never-leak-0123456789"
WRONG_KEY = "sk-proj-wrong-key-must-never-leak-9876543210"
ALICE = make_token("alice")


@pytest.fixture
def vendors() -> Iterator[tuple[FakeOpenAI, LiveServer, FakeAnthropic, LiveServer]]:
    openai_fake = FakeOpenAI(api_key=OPENAI_KEY)
    anthropic_fake = FakeAnthropic(api_key=ANTHROPIC_KEY)
    openai_server = LiveServer(openai_fake.app).start()
    anthropic_server = LiveServer(anthropic_fake.app()).start()
    try:
        yield openai_fake, openai_server, anthropic_fake, anthropic_server
    finally:
        openai_server.stop()
        anthropic_server.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHATBOT_", "OPENAI_", "ANTHROPIC_"))
    }
    env.update(
        CHATBOT_JWT_SECRET=SECRET,
        CHATBOT_DATABASE_URL=f"sqlite:///{tmp_path / 'chat.db'}",
        CHATBOT_CONFIG=str(tmp_path / "chatbot.toml"),
        **extra,
    )
    return env


def write_config(tmp_path: Path, openai_url: str, anthropic_url: str) -> None:
    (tmp_path / "chatbot.toml").write_text(
        f"""
default_backend = "gpt"

[backends.gpt]
type = "openai"
model = "gpt-fake"
base_url = "{openai_url}/v1"
api_key_env = "OPENAI_API_KEY"
max_retries = 0

[backends.claude]
type = "anthropic"
model = "claude-fake"
base_url = "{anthropic_url}"
max_retries = 0

[backends.wrong]
type = "openai"
model = "gpt-fake"
base_url = "{openai_url}/v1"
api_key_env = "WRONG_OPENAI_KEY"
max_retries = 0
"""
    )


def test_keys_never_reach_logs_frames_or_responses(
    vendors: tuple[FakeOpenAI, LiveServer, FakeAnthropic, LiveServer], tmp_path: Path
) -> None:
    openai_fake, openai_server, _, anthropic_server = vendors
    write_config(tmp_path, openai_server.url, anthropic_server.url)
    seen: list[str] = []
    with ServeProcess(
        tmp_path,
        OPENAI_API_KEY=OPENAI_KEY,
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        WRONG_OPENAI_KEY=WRONG_KEY,
        CHATBOT_CONFIG=str(tmp_path / "chatbot.toml"),
        CHATBOT_LOG_LEVEL="debug",
    ) as server:
        base = server.url
        with httpx.Client(base_url=base, headers=bearer(ALICE)) as http:
            for path in ("/api/backends", "/openapi.json", "/api/sessions"):
                seen.append(http.get(path).text)
            sessions = {
                name: http.post("/api/sessions", json={"backend": name}).json()["session_id"]
                for name in ("gpt", "claude", "wrong")
            }
            backends = json.loads(seen[0])["backends"]
            assert [b["name"] for b in backends] == ["gpt", "claude", "wrong"]
        frames = {}
        openai_fake.server_error(status=500)
        for name, session_id in sessions.items():
            with connect(
                f"{server.ws_url}?session_id={session_id}", additional_headers=bearer(ALICE)
            ) as ws:
                replies = []
                for text in ("hello", "again"):
                    ws.send(json.dumps({"message": text, "id": text}))
                    replies.append(recv_json(ws))
                frames[name] = replies
                seen.extend(json.dumps(r) for r in replies)
        with httpx.Client(base_url=base, headers=bearer(ALICE)) as http:
            for session_id in sessions.values():
                seen.append(http.get(f"/api/sessions/{session_id}/messages").text)
        output = server.stop()
    # What each backend answered: the 500 on gpt's first call, then the fakes' text; the
    # wrong key is refused by the fake OpenAI with a 401.
    assert frames["gpt"][0]["error"]["code"] == "backend_unavailable"
    assert frames["gpt"][1]["type"] == "message"
    assert frames["claude"][0]["type"] == frames["claude"][1]["type"] == "message"
    refused = frames["wrong"][0]["error"]
    assert refused["code"] == "backend_error"
    assert refused["retryable"] is False
    assert "WRONG_OPENAI_KEY" in refused["message"]
    # The keys reached the vendors...
    assert {r.authorization for r in openai_fake.requests} >= {
        f"Bearer {OPENAI_KEY}", f"Bearer {WRONG_KEY}",
    }  # fmt: skip
    # ...and nothing else.
    assert "Application startup complete" in output
    for key in (OPENAI_KEY, ANTHROPIC_KEY, WRONG_KEY):
        assert key not in output
        assert all(key not in text for text in seen)


@pytest.mark.parametrize(
    ("missing", "variable"), [("OPENAI_API_KEY", "OPENAI_API_KEY"),
                              ("ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY")]
)  # fmt: skip
def test_a_missing_key_stops_the_server_naming_the_variable(
    tmp_path: Path, missing: str, variable: str
) -> None:
    write_config(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9")
    keys = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "WRONG_OPENAI_KEY": WRONG_KEY,
    }
    del keys[missing]
    result = subprocess.run(
        [sys.executable, "-m", "chatbot", "serve", "--port", str(free_port())],
        cwd=tmp_path, env=environment(tmp_path, **keys), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"set the {variable} environment variable" in result.stderr
    assert ".env is not read for vendor keys, export it in the server's environment" in (
        result.stderr
    )
    for key in keys.values():
        assert key not in result.stderr + result.stdout
