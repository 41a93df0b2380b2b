"""The ``chatbot`` command, run as a user runs it: a real process in a scratch directory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

import chatbot
from tests.conftest import OTHER_SECRET, SECRET, bearer, make_token, wait_for

SHORT_SECRET = "too-short-secret-0123456789"  # 27 bytes


def cli_env(**values: str) -> dict[str, str]:
    """The test process's environment without any CHATBOT_* variable, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env.update(values)
    return env


def run_cli(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatbot", *args],
        cwd=cwd,
        env=cli_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def decode(token: str, secret: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, secret, algorithms=["HS256"])
    return claims


# -- token -------------------------------------------------------------------------------


def test_token_signed_with_the_configured_secret(tmp_path: Path) -> None:
    before = int(time.time())  # `iat` is whole seconds, rounded down
    result = run_cli(
        tmp_path, "token", "--sub", "alice", "--ttl", "2h", env=cli_env(CHATBOT_JWT_SECRET=SECRET)
    )
    after = time.time()
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    token = lines[0]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = decode(token, SECRET)
    assert claims["sub"] == "alice"
    assert isinstance(claims["iat"], int)
    assert isinstance(claims["exp"], int)
    assert claims["exp"] - claims["iat"] == 7200
    assert before <= claims["iat"] <= after  # issued by this very command
    with pytest.raises(jwt.InvalidSignatureError):
        decode(token, OTHER_SECRET)
    # A configured secret is never written to disk.
    assert not (tmp_path / ".chatbot").exists()


def test_token_without_a_secret_creates_none_and_says_where_one_is_expected(
    tmp_path: Path,
) -> None:
    result = run_cli(tmp_path, "token", "--sub", "alice")
    assert result.returncode == 2
    assert result.stdout == ""
    expected = tmp_path / ".chatbot" / "jwt-secret"
    assert result.stderr == (
        f"chatbot: error: no JWT secret: CHATBOT_JWT_SECRET is unset and {expected} does not "
        "exist. Run this command in the directory where `chatbot serve` runs (it creates that "
        "file on its first start), or set CHATBOT_DATA_DIR or CHATBOT_JWT_SECRET as the "
        "server has them\n"
    )
    # A secret made here would sign tokens that a server using another one refuses.
    assert not (tmp_path / ".chatbot").exists()


def test_token_reads_the_secret_file_the_server_made(tmp_path: Path) -> None:
    secret_file = tmp_path / "data" / "jwt-secret"
    secret_file.parent.mkdir()
    secret_file.write_text(SECRET + "\n", encoding="utf-8")
    result = run_cli(
        tmp_path, "token", "--sub", "bob", env=cli_env(CHATBOT_DATA_DIR=str(tmp_path / "data"))
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    claims = decode(result.stdout.strip(), SECRET)
    assert claims["sub"] == "bob"
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize("ttl", ["soon", "0", "0h", "-5m", "1w", "1.5h", ""])
def test_token_with_a_bad_ttl(tmp_path: Path, ttl: str) -> None:
    result = run_cli(
        tmp_path, "token", "--sub", "alice", f"--ttl={ttl}", env=cli_env(CHATBOT_JWT_SECRET=SECRET)
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("chatbot: error: --ttl")
    assert repr(ttl) in lines[0]


# -- a short secret ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(["token", "--sub", "alice"], id="token"),
        pytest.param(["backends"], id="backends"),
        pytest.param(["migrate"], id="migrate"),
        pytest.param(["serve", "--port", "{port}"], id="serve"),
    ],
)
def test_a_short_secret_is_refused_by_every_command(tmp_path: Path, command: list[str]) -> None:
    args = [arg.format(port=free_port()) for arg in command]
    result = run_cli(tmp_path, *args, env=cli_env(CHATBOT_JWT_SECRET=SHORT_SECRET), timeout=20)
    assert result.returncode == 2
    assert "CHATBOT_JWT_SECRET is shorter than 32 bytes" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert SHORT_SECRET not in result.stdout + result.stderr
    assert not (tmp_path / "chatbot.db").exists()


# -- backends ----------------------------------------------------------------------------


def _sections(output: str) -> tuple[list[str], list[str]]:
    """The installed and the configured lines of ``chatbot backends``, stripped."""
    lines = output.splitlines()
    assert lines[0].startswith("Installed backend types")
    split = lines.index("Configured backends:")
    installed = [" ".join(line.split()) for line in lines[1:split]]
    configured = [" ".join(line.split()) for line in lines[split + 1 :]]
    return installed, configured


def test_backends_lists_the_entry_points_and_the_default(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "backends")
    assert result.returncode == 0, result.stderr
    installed, configured = _sections(result.stdout)
    assert "echo chatbot.echo:EchoBackend" in installed
    assert configured == ["echo type=echo (default)", "Every configured backend loads."]


def test_backends_from_chatbot_toml(tmp_path: Path) -> None:
    (tmp_path / "chatbot.toml").write_text(
        'default_backend = "slow"\n'
        "[backends.echo]\n"
        'type = "echo"\n'
        "[backends.slow]\n"
        'type = "echo"\n'
        "delay = 0.5\n"
        "[backends.ghost]\n"
        'type = "nope"\n',
        encoding="utf-8",
    )
    result = run_cli(tmp_path, "backends")
    # The listing shows what is wrong, then the command fails as `chatbot serve` would.
    assert result.returncode == 2
    assert "no backend type named 'nope'" in result.stderr
    installed, configured = _sections(result.stdout)
    assert "echo chatbot.echo:EchoBackend" in installed
    assert configured == [
        "echo type=echo",
        "slow type=echo (default)",
        "ghost type=nope (type not installed)",
    ]


@pytest.mark.parametrize(
    ("toml", "env", "configured"),
    [
        pytest.param(
            'default_backend = "nope"\n[backends.slow]\ntype = "echo"\n'
            '[backends.echo]\ntype = "echo"\n',
            {},
            "echo, slow",
            id="default_backend",
        ),
        pytest.param(None, {"CHATBOT_BACKEND": "nope"}, "echo", id="CHATBOT_BACKEND"),
    ],
)
def test_an_unknown_default_backend(
    tmp_path: Path, toml: str | None, env: dict[str, str], configured: str
) -> None:
    if toml is not None:
        (tmp_path / "chatbot.toml").write_text(toml, encoding="utf-8")
    result = run_cli(tmp_path, "backends", env=cli_env(**env))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"chatbot: error: no backend named 'nope'; the configured backends are: {configured}\n"
    )


def test_serve_refuses_an_unknown_backend_type(tmp_path: Path) -> None:
    (tmp_path / "chatbot.toml").write_text('[backends.x]\ntype = "nope"\n', encoding="utf-8")
    # run_cli's timeout fails the test if the command does not end on its own.
    result = run_cli(
        tmp_path,
        "serve",
        "--port",
        str(free_port()),
        env=cli_env(CHATBOT_JWT_SECRET=SECRET),
        timeout=20,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    # Refused before uvicorn started: one line naming the fix, none of uvicorn's.
    [line] = result.stderr.splitlines()
    assert line.startswith(
        "chatbot: error: no backend type named 'nope'; the installed backend types are: "
    )
    installed = line.split("the installed backend types are: ")[1].split()
    assert "echo" in [name.rstrip(",") for name in installed]


# -- migrate -----------------------------------------------------------------------------


def test_migrate_creates_the_database_then_is_up_to_date(tmp_path: Path) -> None:
    env = cli_env(CHATBOT_DATABASE_URL="sqlite:///./db/x.db")
    first = run_cli(tmp_path, "migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == (
        "applied 0001_initial\napplied 0002_message_count\napplied 0003_branches\n"
        "applied 0004_search\napplied 0005_shares\napplied 0006_search_prefixes\n"
        "applied 0007_usage\n"
    )
    database = tmp_path / "db" / "x.db"
    assert database.is_file()
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("SELECT name FROM chatbot_migrations").fetchall() == [
            ("0001_initial",),
            ("0002_message_count",),
            ("0003_branches",),
            ("0004_search",),
            ("0005_shares",),
            ("0006_search_prefixes",),
            ("0007_usage",),
        ]

    second = run_cli(tmp_path, "migrate", env=env)
    assert second.returncode == 0, second.stderr
    assert second.stdout == "the database is up to date\n"


# -- serve -------------------------------------------------------------------------------


def _wait_until_healthy(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    def healthy() -> bool:
        assert server.poll() is None, "the server exited"
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, f"the server to answer {url}/healthz", 20)
    except AssertionError as failure:
        raise AssertionError(f"{failure}:\n{log.read_text(encoding='utf-8')}") from None


@pytest.mark.e2e
def test_serve_first_run_generates_a_secret_and_accepts_its_tokens(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "chatbot", "serve", "--port", str(port)],
            cwd=tmp_path,
            env=cli_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_healthy(url, server, log)

        secret_file = tmp_path / ".chatbot" / "jwt-secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        secret = secret_file.read_text(encoding="utf-8").strip()
        hints = [
            line
            for line in log.read_text(encoding="utf-8").splitlines()
            if "chatbot token --sub you" in line
        ]
        assert len(hints) == 1, log.read_text(encoding="utf-8")

        minted = run_cli(tmp_path, "token", "--sub", "bob")
        assert minted.returncode == 0, minted.stderr
        with httpx.Client(base_url=url, timeout=10) as client:
            accepted = client.get("/api/sessions", headers=bearer(minted.stdout.strip()))
            assert accepted.status_code == 200
            assert accepted.json() == {"sessions": [], "next_cursor": None}
            foreign = client.get("/api/sessions", headers=bearer(make_token("bob")))
            assert foreign.status_code == 401
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    # uvicorn shuts down cleanly, then re-raises the signal it caught.
    assert server.returncode in (0, -signal.SIGTERM)
    output = log.read_text(encoding="utf-8")
    assert "Application shutdown complete." in output
    assert secret not in output


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("trusted", "logged"),
    [(None, "127.0.0.1:"), ("127.0.0.1", "203.0.113.7:0"), ("10.0.0.0/8", "127.0.0.1:")],
)
def test_serve_believes_forwarded_headers_only_from_the_proxies_named(
    tmp_path: Path, trusted: str | None, logged: str
) -> None:
    from tests.processes import ServeProcess

    env = {} if trusted is None else {"CHATBOT_FORWARDED_ALLOW_IPS": trusted}
    with ServeProcess(tmp_path, **env) as serve:
        forwarded = {"X-Forwarded-For": "203.0.113.7"}
        assert httpx.get(f"{serve.url}/healthz?probe", headers=forwarded).status_code == 200
        line = '"GET /healthz?probe HTTP/1.1" 200'
        wait_for(lambda: line in serve.log.read_text(), "the request's access log line")
        output = serve.stop()
    # uvicorn's access log names the client: the proxy's client only when it is believed.
    [request] = [text for text in output.splitlines() if line in text]
    assert f" {logged}" in request, request


# -- the command itself ------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout == f"chatbot {chatbot.__version__}\n"


def test_no_command_prints_usage(tmp_path: Path) -> None:
    result = run_cli(tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("usage: chatbot")
    assert "the following arguments are required: COMMAND" in result.stderr


def test_backends_loads_the_configured_backends(tmp_path: Path) -> None:
    (tmp_path / "chatbot.toml").write_text('[backends.e]\ntype = "echo"\ncolour = "red"\n')
    result = run_cli(tmp_path, "backends")
    assert result.returncode == 2
    assert "the echo backend has no option 'colour'" in result.stderr
    (tmp_path / "chatbot.toml").write_text('[backends.e]\ntype = "echo"\ndelay = 0.1\n')
    result = run_cli(tmp_path, "backends")
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1] == "Every configured backend loads."
