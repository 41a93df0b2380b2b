"""A first run that cannot go wrong, tested as an operator meets it: ``python -m chatbot``
as a real process. A start that cannot succeed ends within seconds with one line naming the
fix; a start that succeeds prints a link that signs the browser in, once the server
listens."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import SECRET, bearer, make_token, wait_for
from tests.processes import FOREIGN_PREFIXES, ServeProcess

#: How long a start that cannot succeed may take to say so and exit.
FAIL_WITHIN = 15.0
LINK_PREFIX = "Chat in your browser: "


def environment(tmp_path: Path, **values: str) -> dict[str, str]:
    """The test runner's environment without chatbot's or a vendor's variables, with a
    database in ``tmp_path``, and ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
    env.update(
        CHATBOT_JWT_SECRET=SECRET,
        CHATBOT_DATABASE_URL=f"sqlite:///{tmp_path / 'chat.db'}",
        CHATBOT_DATA_DIR=str(tmp_path / "data"),
    )
    env.update(values)
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chatbot", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def claims(token: str, secret: str = SECRET) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, secret, algorithms=["HS256"])
    return decoded


# -- a start that cannot succeed ---------------------------------------------------------


def failed_start(cwd: Path, *args: str, env: dict[str, str]) -> str:
    """Run ``python -m chatbot ARGS`` expecting it to fail; its one line on stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "chatbot", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=FAIL_WITHIN)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"still running after {FAIL_WITHIN} s:\n{stderr}") from None
    assert process.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("chatbot: error: ")
    # Nothing stays behind: the process has exited and been reaped.
    with pytest.raises(ProcessLookupError):
        os.kill(process.pid, 0)
    return lines[0].removeprefix("chatbot: error: ")


def corrupt_database(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "chat.db"
    # Random bytes, never SQLite's "SQLite format 3" header.
    path.write_bytes(b"not a database\n" + os.urandom(8192))
    return f"sqlite:///{path}", (
        f"cannot use the SQLite database {path}: file is not a database; point "
        "CHATBOT_DATABASE_URL at a database file chatbot can read and write (a new one is "
        "created where none exists), or move a damaged file away"
    )


def folder_as_database(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "chat.db"
    path.mkdir()
    return f"sqlite:///{path}", f"cannot use the SQLite database {path}: it is a folder;"


def file_in_the_way(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "state").write_text("a file, not a folder\n", encoding="utf-8")
    return f"sqlite:///{tmp_path / 'state' / 'chat.db'}", (
        f"cannot create the folder {tmp_path / 'state'} of the SQLite database: "
        f"{tmp_path / 'state'} is a file; point CHATBOT_DATABASE_URL at a file in a "
        "writable folder"
    )


def unknown_scheme(tmp_path: Path) -> tuple[str, str]:
    return "mysql://127.0.0.1/chat", (
        "CHATBOT_DATABASE_URL has the scheme 'mysql', which no store handles; "
        "supported: postgres://, postgresql://, sqlite://"
    )


DATABASE_FAILURES = [
    pytest.param(corrupt_database, id="corrupt-file"),
    pytest.param(folder_as_database, id="folder-in-place-of-the-file"),
    pytest.param(file_in_the_way, id="file-in-place-of-its-folder"),
    pytest.param(unknown_scheme, id="unknown-scheme"),
]


@pytest.mark.parametrize("make", DATABASE_FAILURES)
@pytest.mark.parametrize("command", ["serve", "migrate"])
def test_a_database_that_cannot_be_used(tmp_path: Path, make: Any, command: str) -> None:
    url, expected = make(tmp_path)
    args = ["serve", "--port", "0"] if command == "serve" else ["migrate"]
    line = failed_start(tmp_path, *args, env=environment(tmp_path, CHATBOT_DATABASE_URL=url))
    assert line.startswith(expected)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000 all the same")
def test_an_unreadable_database_file(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    path.write_bytes(b"")
    path.chmod(0)
    env = environment(tmp_path, CHATBOT_DATABASE_URL=f"sqlite:///{path}")
    line = failed_start(tmp_path, "serve", "--port", "0", env=env)
    assert line.startswith(f"cannot use the SQLite database {path}: unable to open database file")


def test_a_data_directory_where_the_secret_cannot_be_written(tmp_path: Path) -> None:
    # Tests run as root, who may write in any directory whatever its mode: a file where a
    # folder of the path should be stops root too.
    (tmp_path / "state").write_text("a file, not a folder\n", encoding="utf-8")
    env = environment(
        tmp_path,
        # Empty counts as unset: the secret is to be generated in the data directory.
        CHATBOT_JWT_SECRET="",
        CHATBOT_DATA_DIR=str(tmp_path / "state" / "data"),
    )
    line = failed_start(tmp_path, "serve", "--port", "0", env=env)
    assert line == (
        f"cannot write a JWT secret to {tmp_path / 'state' / 'data' / 'jwt-secret'}: "
        f"{tmp_path / 'state'} is a file; make CHATBOT_DATA_DIR a writable directory, or set "
        "CHATBOT_JWT_SECRET"
    )


def _read_only_mounts() -> bool:
    """Whether this machine lets an unprivileged user namespace bind-mount read-only."""
    if shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        mount = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder}"
        probe = subprocess.run(["unshare", "-rm", "sh", "-c", mount], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _read_only_mounts(), reason="needs unshare and user namespaces")
def test_a_read_only_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = environment(tmp_path, CHATBOT_JWT_SECRET="", CHATBOT_DATA_DIR=str(data))
    # A read-only bind mount of the data directory, which even root cannot write to.
    mount = f'mount --bind {data} {data} && mount -o remount,bind,ro {data} && exec "$@"'
    process = subprocess.run(
        ["unshare", "-rm", "sh", "-c", mount, "sh", sys.executable, "-m", "chatbot", "serve",
         "--port", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=FAIL_WITHIN, check=False,
    )  # fmt: skip
    assert process.returncode == 2
    assert process.stdout == ""
    assert process.stderr == (
        f"chatbot: error: cannot write a JWT secret to {data / 'jwt-secret'}: Read-only file "
        "system; make CHATBOT_DATA_DIR a writable directory, or set CHATBOT_JWT_SECRET\n"
    )


def test_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        line = failed_start(tmp_path, "serve", "--port", str(port), env=environment(tmp_path))
    assert line == (
        f"port {port} on 127.0.0.1 is already in use by another program; stop it, or choose "
        "another port with --port or CHATBOT_PORT"
    )


def test_an_unknown_log_level(tmp_path: Path) -> None:
    env = environment(tmp_path, CHATBOT_LOG_LEVEL="verbose")
    line = failed_start(tmp_path, "serve", "--port", "0", env=env)
    assert line == (
        "CHATBOT_LOG_LEVEL 'verbose' is not a log level; choose one of critical, error, "
        "warning, info, debug, trace"
    )


def test_a_backend_that_fails_to_start_inside_uvicorn(tmp_path: Path) -> None:
    """A failure in the lifespan itself, after the checks made before uvicorn: uvicorn has
    said a few lines by then, but the last is the one naming the fix, with no traceback."""
    site = tmp_path / "site"
    (site / "unreachable_backend-1.0.dist-info").mkdir(parents=True)
    (site / "unreachable_backend.py").write_text(
        "from chatbot.backends import Backend\n"
        "from chatbot.errors import ConfigError\n\n\n"
        "class Unreachable(Backend):\n"
        "    async def start(self):\n"
        "        raise ConfigError('the model server at http://127.0.0.1:9 does not answer; "
        "start it first')\n",
        encoding="utf-8",
    )
    (site / "unreachable_backend-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: unreachable-backend\nVersion: 1.0\n", encoding="utf-8"
    )
    (site / "unreachable_backend-1.0.dist-info" / "entry_points.txt").write_text(
        "[chatbot.backends]\nunreachable = unreachable_backend:Unreachable\n", encoding="utf-8"
    )
    (tmp_path / "chatbot.toml").write_text('[backends.u]\ntype = "unreachable"\n')
    env = environment(tmp_path, PYTHONPATH=str(site))
    process = subprocess.run(
        [sys.executable, "-m", "chatbot", "serve", "--port", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=FAIL_WITHIN, check=False,
    )  # fmt: skip
    assert process.returncode == 2
    assert "Traceback" not in process.stderr
    assert "Application startup failed" in process.stderr
    assert process.stderr.splitlines()[-1] == (
        "chatbot: error: the model server at http://127.0.0.1:9 does not answer; start it first"
    )


# -- the sign-in link --------------------------------------------------------------------


class Serving:
    """``python -m chatbot serve ARGS`` with its stdout read line by line as it comes."""

    def __init__(self, tmp_path: Path, *args: str, env: dict[str, str]) -> None:
        self.log = tmp_path / "stderr.log"
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "chatbot", "serve", *args],
                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stdout: list[str] = []
        assert self.process.stdout is not None
        self.reader = threading.Thread(target=self._read, args=(self.process.stdout,))
        self.reader.start()

    def _read(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, timeout: float = 20) -> str:
        """The next line the server prints on stdout."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nothing printed:\n{self.stderr()}") from None
        assert line is not None, f"the server exited:\n{self.stderr()}"
        self.stdout.append(line)
        return line

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> list[str]:
        """SIGTERM, as an init system would; what it printed on stdout, less uvicorn's
        access log, which goes there too."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        self.reader.join(timeout=10)
        while (line := self.lines.get(timeout=10)) is not None:
            self.stdout.append(line)
        return [line for line in self.stdout if not line.startswith("INFO:")]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self.reader.join(timeout=10)


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[list[Serving]]:
    """Servers a test starts; each is stopped at the end."""
    started: list[Serving] = []
    yield started
    for server in started:
        server.kill()


def start(serving: list[Serving], tmp_path: Path, *args: str, env: dict[str, str]) -> Serving:
    server = Serving(tmp_path, *args, env=env)
    serving.append(server)
    return server


def wait_until_up(port: int, server: Serving) -> None:
    def up() -> bool:
        assert server.process.poll() is None, "the server exited"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, f"the server to answer on port {port}", 20)
    except AssertionError as failure:
        raise AssertionError(f"{failure}:\n{server.stderr()}") from None


def token_of(link: str) -> str:
    fragment = urlsplit(link).fragment
    assert fragment.startswith("token="), link
    return fragment.removeprefix("token=")


@pytest.mark.e2e
def test_the_first_start_prints_a_link_that_signs_in(
    tmp_path: Path, serving: list[Serving]
) -> None:
    # No secret configured: the first start generates one, and the link is signed with it.
    env = environment(
        tmp_path, CHATBOT_JWT_SECRET="", CHATBOT_LINK_TTL="600", LOGNAME="carol", USER="carol"
    )
    server = start(serving, tmp_path, "--port", "0", env=env)
    line = server.next_line()
    assert line.startswith(LINK_PREFIX)
    link = line.removeprefix(LINK_PREFIX)
    parts = urlsplit(link)
    assert (parts.scheme, parts.hostname, parts.path) == ("http", "127.0.0.1", "/")
    base = f"http://127.0.0.1:{parts.port}"
    # Printed once the server listens: the very first request is answered.
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200

    token = token_of(link)
    secret = (tmp_path / "data" / "jwt-secret").read_text(encoding="utf-8").strip()
    signed = claims(token, secret)
    # The login name, as getpass finds it.
    assert signed["sub"] == "carol"
    assert signed["exp"] - signed["iat"] == 600
    with httpx.Client(base_url=base, timeout=10) as http:
        sessions = http.get("/api/sessions", headers=bearer(token))
        assert sessions.status_code == 200
        assert sessions.json() == {"sessions": [], "next_cursor": None}
        # What a browser following the link requests: the fragment stays behind.
        http.get(link)
    assert server.stop() == [line]
    # Neither the token nor the secret reach a log, the access log on stdout included.
    access_log = "\n".join(server.stdout[1:])
    assert '"GET / HTTP/1.1"' in access_log
    for log in (access_log, server.stderr()):
        assert token not in log
        assert secret not in log


@pytest.mark.e2e
def test_the_link_is_for_the_user_and_lifetime_asked_for(
    tmp_path: Path, serving: list[Serving]
) -> None:
    server = start(
        serving, tmp_path, "--port", "0", "--user", "alice", "--link-ttl", "15m",
        env=environment(tmp_path),
    )  # fmt: skip
    link = server.next_line().removeprefix(LINK_PREFIX)
    signed = claims(token_of(link))
    assert signed["sub"] == "alice"
    assert signed["exp"] - signed["iat"] == 900


@pytest.mark.e2e
def test_a_server_on_every_address_links_through_loopback(
    tmp_path: Path, serving: list[Serving]
) -> None:
    server = start(serving, tmp_path, "--host", "0.0.0.0", "--port", "0", env=environment(tmp_path))  # noqa: S104
    assert server.next_line() == (
        "The server listens on every address (0.0.0.0); the link below works from this machine."
    )
    link = server.next_line().removeprefix(LINK_PREFIX)
    parts = urlsplit(link)
    assert parts.hostname == "127.0.0.1"
    with httpx.Client(base_url=f"http://127.0.0.1:{parts.port}", timeout=10) as http:
        assert http.get("/api/sessions", headers=bearer(token_of(link))).status_code == 200


def _public_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "values", "expected"),
    [
        pytest.param([], {"CHATBOT_WEB_UI": "false"}, "", id="no-chat-page"),
        pytest.param(["--no-link"], {}, "", id="no-link"),
        pytest.param(
            [],
            {"CHATBOT_JWT_SECRET": "", "CHATBOT_JWT_ALGORITHMS": "ES256"},
            "Chat in your browser: http://127.0.0.1:{port}/",
            id="public-key-tokens",
        ),
    ],
)
def test_when_no_token_is_printed(
    tmp_path: Path,
    serving: list[Serving],
    args: list[str],
    values: dict[str, str],
    expected: str,
) -> None:
    if "CHATBOT_JWT_ALGORITHMS" in values:
        values = {**values, "CHATBOT_JWT_PUBLIC_KEY": _public_key_pem()}
    port = free_port()
    server = start(
        serving, tmp_path, "--port", str(port), *args, env=environment(tmp_path, **values)
    )
    wait_until_up(port, server)
    assert server.stop() == ([expected.format(port=port)] if expected else [])
    assert not (tmp_path / "data" / "jwt-secret").exists()


@pytest.mark.e2e
def test_open_prints_a_fresh_link_the_running_server_accepts(
    tmp_path: Path, serving: list[Serving]
) -> None:
    # The secret is the one the server generated in its data directory.
    env = environment(tmp_path, CHATBOT_JWT_SECRET="")
    port = free_port()
    server = start(serving, tmp_path, "--port", str(port), env=env)
    first = server.next_line().removeprefix(LINK_PREFIX)
    # A browser stand-in that webbrowser runs through $BROWSER: it notes what it was given.
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {opened}\n', encoding="utf-8")
    browser.chmod(0o755)

    result = run(
        tmp_path, "open", "--port", str(port), "--user", "dave", "--ttl", "2h", "--browser",
        env={**env, "BROWSER": str(browser)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{LINK_PREFIX}http://127.0.0.1:{port}/#token=")
    link = lines[0].removeprefix(LINK_PREFIX)
    assert link != first
    assert opened.read_text(encoding="utf-8") == link
    token = token_of(link)
    secret = (tmp_path / "data" / "jwt-secret").read_text(encoding="utf-8").strip()
    signed = claims(token, secret)
    assert signed["sub"] == "dave"
    assert signed["exp"] - signed["iat"] == 7200
    response = httpx.get(f"http://127.0.0.1:{port}/api/sessions", headers=bearer(token))
    assert response.status_code == 200
    assert token not in server.stderr()


def test_open_without_a_secret_says_where_one_is_expected(tmp_path: Path) -> None:
    result = run(tmp_path, "open", env=environment(tmp_path, CHATBOT_JWT_SECRET=""))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"chatbot: error: no JWT secret: CHATBOT_JWT_SECRET is unset and "
        f"{tmp_path / 'data' / 'jwt-secret'} does not exist."
    )
    assert not (tmp_path / "data").exists()


def test_open_without_the_chat_page(tmp_path: Path) -> None:
    result = run(tmp_path, "open", env=environment(tmp_path, CHATBOT_WEB_UI="false"))
    assert result.returncode == 2
    assert result.stderr == (
        "chatbot: error: CHATBOT_WEB_UI is false, so the server shows no chat page; unset it "
        "to use one\n"
    )


# -- commands that do not need the backends ----------------------------------------------


@pytest.mark.parametrize(
    ("toml", "broken"),
    [
        pytest.param("[backends.gpt\n", "cannot read", id="not-toml"),
        pytest.param(
            '[backends.gpt]\ntype = "openai"\nmodel = "gpt-4o-mini"\n',
            "set the OPENAI_API_KEY environment variable",
            id="missing-vendor-key",
        ),
    ],
)
def test_token_and_open_do_not_depend_on_the_backends(
    tmp_path: Path, toml: str, broken: str
) -> None:
    (tmp_path / "chatbot.toml").write_text(toml, encoding="utf-8")
    env = environment(tmp_path)
    assert broken in run(tmp_path, "backends", env=env).stderr
    token = run(tmp_path, "token", "--sub", "erin", env=env)
    assert token.returncode == 0, token.stderr
    assert claims(token.stdout.strip())["sub"] == "erin"
    link = run(tmp_path, "open", "--user", "erin", env=env)
    assert link.returncode == 0, link.stderr
    assert claims(token_of(link.stdout.strip()))["sub"] == "erin"
    migrated = run(tmp_path, "migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr


def test_token_reads_an_exported_secret_from_dotenv(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"export CHATBOT_JWT_SECRET={SECRET}\n", encoding="utf-8")
    # Empty in the environment: unset, so the .env value counts.
    result = run(
        tmp_path, "token", "--sub", "frank", env=environment(tmp_path, CHATBOT_JWT_SECRET="")
    )
    assert result.returncode == 0, result.stderr
    assert claims(result.stdout.strip())["sub"] == "frank"


# -- what the documentation shows --------------------------------------------------------


@pytest.mark.e2e
def test_chatbot_serve_sends_what_docs_protocol_shows(tmp_path: Path) -> None:
    """docs/protocol.md: the 1009 reason under ``chatbot serve`` (uvicorn's), compact JSON
    over HTTP and spaced frames on the socket."""
    token = make_token("alice")
    with ServeProcess(tmp_path, CHATBOT_MAX_FRAME_BYTES="1000") as server:
        refused = httpx.get(f"{server.url}/api/sessions?limit=0", headers=bearer(token))
        assert refused.text == (
            '{"error":{"code":"invalid_limit","message":"limit must be an integer from 1 to 100"}}'
        )
        with connect(server.ws_url, additional_headers=bearer(token)) as ws:
            first = ws.recv(timeout=10)
            assert isinstance(first, str)
            assert first.startswith('{"session_id": "')
            ws.send('{"message": "' + "x" * 1001 + '"}')
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    assert closed.value.rcvd.reason == "frame with 1016 bytes exceeds limit of 1000 bytes"
