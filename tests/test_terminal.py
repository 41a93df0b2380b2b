"""``chatbot chat`` end to end: a real ``chatbot serve`` process, and the client as a real
process in a pseudo-terminal, driven by keystrokes (Ctrl-C included) and read with deadlines."""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import io
import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from chatbot.terminal.endpoint import base_url
from chatbot.terminal.export import export_format
from chatbot.terminal.results import emphasised
from chatbot.terminal.screen import inline, printable, wants_colour
from tests.conftest import OTHER_SECRET, bearer, make_token, recv_json, wait_for
from tests.processes import FOREIGN_PREFIXES, ServeProcess, free_port

pytestmark = pytest.mark.e2e

#: Slow enough that a reply is still being written when the test presses Ctrl-C.
SLOW_ECHO = 'default_backend = "slow"\n\n[backends.slow]\ntype = "echo"\ndelay = 0.2\n'
LONG = " ".join(f"w{n}" for n in range(1, 41))
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[=>]")


def client_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without its chatbot settings, as a terminal has it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_PREFIXES)}
    env.pop("CHATBOT_TOKEN", None)
    env.pop("NO_COLOR", None)
    env.update(TERM="xterm-256color", **extra)
    return env


def _take_terminal() -> None:
    # Runs in the child after setsid(): the pty becomes its controlling terminal, so that
    # Ctrl-C typed into it raises SIGINT in the client, as in a real terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """``python -m chatbot chat`` in a pseudo-terminal; ``expect`` waits for what it shows."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str]) -> None:
        master, slave = os.openpty()
        # Wide enough that readline never wraps or scrolls a line the tests type.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 400, 0, 0))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "chatbot", "chat", *args],
            stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
            start_new_session=True, preexec_fn=_take_terminal,
        )  # fmt: skip
        os.close(slave)
        self.fd = master
        self.raw = b""
        self.seen = 0
        self.eof = False

    @property
    def text(self) -> str:
        """Everything shown so far, without the terminal's control sequences."""
        text = _ESCAPES.sub("", self.raw.decode("utf-8", errors="replace"))
        return text.replace("\r\n", "\n").replace("\r", "")

    def rest(self) -> str:
        """What was shown after the last ``expect`` match."""
        return self.text[self.seen :]

    def _read(self, timeout: float) -> None:
        if self.eof:
            return
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if ready:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # EIO: the client closed the terminal
                chunk = b""
            self.raw += chunk
            self.eof = not chunk

    def expect(self, text: str, timeout: float = 20) -> None:
        """Wait until ``text`` is shown (after the previous match)."""
        self.expect_re(re.escape(text), timeout)

    def expect_re(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """Wait until ``pattern`` matches what is shown after the previous match."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = compiled.search(self.text, self.seen)
            if match is not None:
                self.seen = match.end()
                return match
            if self.eof or time.monotonic() > deadline:
                raise AssertionError(
                    f"the terminal never showed {pattern!r}; it shows:\n{self.text}"
                )
            self._read(deadline - time.monotonic())

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def line(self, text: str) -> None:
        """Type a line and press Enter."""
        self.send(text + "\r")

    def wait(self, timeout: float = 20) -> int:
        """Wait for the client to exit, reading what it shows; its exit status."""
        deadline = time.monotonic() + timeout
        while not self.eof and time.monotonic() < deadline:
            self._read(deadline - time.monotonic())
        return self.process.wait(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.fd)


@contextlib.contextmanager
def terminal(*args: str, cwd: Path, **env: str) -> Iterator[Terminal]:
    term = Terminal(*args, cwd=cwd, env=client_env(**env))
    try:
        yield term
    finally:
        term.close()


def run_client(
    *args: str, cwd: Path, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """The client without a terminal, reading the lines of ``stdin`` (none by default)."""
    return subprocess.run(
        [sys.executable, "-m", "chatbot", "chat", *args],
        cwd=cwd, env=client_env(**env), input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def slow_server(path: Path, **env: str) -> ServeProcess:
    path.mkdir(parents=True, exist_ok=True)
    (path / "chatbot.toml").write_text(SLOW_ECHO)
    process = ServeProcess(path)
    process.env.update(env)  # may also unset (with "") what ServeProcess sets
    return process


def messages(
    server: ServeProcess, token: str, session_id: str, **params: Any
) -> list[dict[str, Any]]:
    """The current branch (or the one ending at ``leaf_id=``), root first."""
    response = httpx.get(
        f"{server.url}/api/sessions/{session_id}/messages", params=params, headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["messages"]
    return result


def session(server: ServeProcess, token: str, session_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/api/sessions/{session_id}", headers=bearer(token))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with slow_server(tmp_path_factory.mktemp("serve")) as process:
        yield process


def test_a_reply_streams_as_it_is_generated(server: ServeProcess, tmp_path: Path) -> None:
    token = make_token("streamer")
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
        session_id = term.expect_re(r"session: (\S+) \(new\).*\nyou> ").group(1)
        term.line("one two three four five six")
        term.expect("assistant> Echo: one ")
        assert "six" not in term.rest(), "the whole reply came at once, not as it streamed"
        term.expect("two three four five six\nyou> ")
        term.line("/quit")
        assert term.wait() == 0
    assert [(m["role"], m["content"]) for m in messages(server, token, session_id)] == [
        ("user", "one two three four five six"),
        ("assistant", "Echo: one two three four five six"),
    ]


def test_ctrl_c_cancels_the_reply_and_the_chat_goes_on(
    server: ServeProcess, tmp_path: Path
) -> None:
    token = make_token("canceller")
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
        session_id = term.expect_re(r"session: (\S+) \(new\).*\nyou> ").group(1)
        term.line(LONG)
        term.expect("assistant> Echo: w1 ")
        term.send("\x03")
        shown = "Echo: w1 " + term.expect_re(r"([^\n]*)\[cancelled\]\n").group(1)
        term.expect("you> ")
        assert term.process.poll() is None
        term.line("still here")
        term.expect("assistant> Echo: still here\nyou> ")
        # Ctrl-C while nothing is being written clears the line; twice in a row leaves.
        term.send("half typed")
        term.expect("half typed")
        term.send("\x03")
        term.expect("(Ctrl-C again, Ctrl-D or /quit to leave)\nyou> ")
        term.line("hello")
        term.expect("assistant> Echo: hello\nyou> ")
        term.send("\x03")
        # The prompt, not just the notice: a Ctrl-C while the notice is still being printed
        # interrupts the printing, and may end the chat with 130 instead of 0.
        term.expect("(Ctrl-C again, Ctrl-D or /quit to leave)\nyou> ")
        term.send("\x03")
        assert term.wait() == 0
    stored = messages(server, token, session_id)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "cancelled"),
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert stored[1]["content"] == shown
    assert shown != f"Echo: {LONG}"
    assert "Traceback" not in term.text


def test_ctrl_c_at_a_prompt_being_drawn_is_not_lost(tmp_path: Path) -> None:
    # A Ctrl-C pressed the moment the prompt shows can come before readline waits for a key:
    # it must clear the line at once, not when the next key is pressed. Between the two,
    # readline takes Python's lock (the GIL) for its hooks; a thread of the client that keeps
    # Python busy, as on a loaded machine, stretches that instant to milliseconds.
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "sitecustomize.py").write_text(
        "import threading\n\n\n"
        "def busy():\n"
        "    while True:\n"
        "        pass\n\n\n"
        "threading.Thread(target=busy, daemon=True).start()\n"
    )
    path = os.pathsep.join(filter(None, [str(busy), os.environ.get("PYTHONPATH")]))
    with ServeProcess(tmp_path, CHATBOT_RATE_LIMIT_PER_MINUTE="1000") as server:
        env = {"CHATBOT_TOKEN": make_token("eager"), "PYTHONPATH": path}
        with terminal("--url", server.url, cwd=tmp_path, **env) as term:
            term.expect("you> ")
            for n in range(30):
                term.line(f"m{n}")  # a line makes the next Ctrl-C a first one again
                term.expect(f"assistant> Echo: m{n}\nyou> ")
                term.send("\x03")
                term.expect("(Ctrl-C again, Ctrl-D or /quit to leave)\nyou> ")
            term.send("\x04")
            assert term.wait() == 0
        assert "Traceback" not in term.text


def test_commands_new_sessions_switch_title_quit(server: ServeProcess, tmp_path: Path) -> None:
    token = make_token("commander")
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
        opening = term.expect_re(r"session: (\S+) \(new\); /help lists the commands\nyou> ")
        first = opening.group(1)
        term.line("first message")
        term.expect("assistant> Echo: first message\nyou> ")
        term.line("/title Trip planning")
        term.expect("title: Trip planning\nyou> ")
        assert session(server, token, first)["title"] == "Trip planning"

        term.line("/new")
        second = term.expect_re(r"session: (\S+) \(new\)\nyou> ").group(1)
        assert second != first

        term.line("/sessions")
        listing = term.expect_re(r"(\*  1 .*)\n(   2 .*)\nyou> ")
        when = r"\d{4}-\d\d-\d\d \d\d:\d\d"
        assert re.fullmatch(
            rf"\*  1  {re.escape(second)}  {when}     0 messages  \(untitled\)", listing.group(1)
        )
        assert re.fullmatch(
            rf"   2  {re.escape(first)}  {when}     2 messages  Trip planning", listing.group(2)
        )

        term.line("/switch 2")
        term.expect(
            f"session: {first} (Trip planning); /help lists the commands\n"
            "you> first message\nassistant> Echo: first message\nyou> "
        )
        term.line("second message")
        term.expect("assistant> Echo: second message\nyou> ")
        assert session(server, token, first)["message_count"] == 4
        assert session(server, token, second)["message_count"] == 0

        term.line(f"/switch {second}")
        term.expect(f"session: {second} (untitled); /help lists the commands\nyou> ")
        term.line("/switch nope")
        term.expect("no session nope; /sessions lists yours\nyou> ")
        term.line("/nope")
        term.expect("unknown command /nope; /help lists the commands")
        term.line("//slash")
        term.expect("assistant> Echo: /slash\nyou> ")
        term.line("/help")
        term.expect("/switch ID|N")
        term.line("/quit")
        assert term.wait() == 0
    assert session(server, token, second)["message_count"] == 2


def test_ctrl_d_leaves(server: ServeProcess, tmp_path: Path) -> None:
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=make_token("eof")) as term:
        term.expect("you> ")
        term.send("\x04")
        assert term.wait() == 0


def test_session_continues_and_shows_its_newest_messages_as_text(
    server: ServeProcess, tmp_path: Path
) -> None:
    token = make_token("continuer")
    with connect(server.ws_url, additional_headers=bearer(token)) as ws:
        session_id = recv_json(ws)["session_id"]
        for n in range(1, 5):
            ws.send(f'{{"message": "m{n}"}}')
            recv_json(ws)
        # Escape sequences in a reply would recolour, retitle or write the clipboard of
        # the user's terminal: they are shown as text.
        ws.send('{"message": "\\u001b[31mred\\u001b]0;owned\\u0007"}')
        recv_json(ws)
        ws.send('{"message": "stop me now"}')
        ws.send('{"type": "cancel"}')
        assert recv_json(ws)["status"] == "cancelled"
    # Titled after its first reply, from its first words.
    wait_for(lambda: session(server, token, session_id)["title"] == "m1", "the title")
    args = ("--url", server.url, "--session", session_id)
    with terminal(*args, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
        term.expect(
            f"session: {session_id} (m1); /help lists the commands\n"
            "[earlier messages not shown]\n"
            "you> m4\nassistant> Echo: m4\n"
            "you> ^[[31mred^[]0;owned^G\nassistant> Echo: ^[[31mred^[]0;owned^G\n"
            "you> stop me now\n"
        )
        # Stopped before or just after its first word, which ends with a space.
        term.expect_re(r"assistant> (Echo: )?\[cancelled\]\nyou> ")
        assert b"\x1b[31m" not in term.raw
        assert b"\x1b]0;" not in term.raw
        term.line("/quit")
        assert term.wait() == 0


def test_escape_sequences_in_a_streamed_reply_are_shown_as_text(
    server: ServeProcess, tmp_path: Path
) -> None:
    token = make_token("escaper")
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
        term.expect("you> ")
        # Ctrl-V makes readline insert the next key, Esc, as it is: the echo backend then
        # streams the escape sequence back.
        term.line("\x16\x1b[32mgreen")
        term.expect("assistant> Echo: ^[[32mgreen\nyou> ")
        assert b"\x1b[32m" not in term.raw
        term.line("/quit")
        assert term.wait() == 0


def test_token_minted_from_the_server_secret_beside_it(tmp_path: Path) -> None:
    # The server keeps its generated secret in ./.chatbot; the client, run in the same
    # directory without CHATBOT_TOKEN, signs its tokens with it, for the login name.
    with slow_server(tmp_path, CHATBOT_JWT_SECRET="", CHATBOT_DATA_DIR="") as server:
        secret = (tmp_path / ".chatbot" / "jwt-secret").read_text().strip()
        with terminal(cwd=tmp_path, CHATBOT_PORT=str(server.port)) as term:
            session_id = term.expect_re(r"session: (\S+) \(new\).*\nyou> ").group(1)
            term.line("hi")
            term.expect("assistant> Echo: hi\nyou> ")
            term.line("/quit")
            assert term.wait() == 0
        token = make_token(getpass.getuser(), secret=secret)
        assert session(server, token, session_id)["message_count"] == 2


def test_without_a_token_or_a_secret_it_says_what_to_do(tmp_path: Path) -> None:
    result = run_client("--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    secret = (tmp_path / ".chatbot" / "jwt-secret").resolve()
    assert result.stderr == (
        "chatbot: error: no token: set CHATBOT_TOKEN (`chatbot token --sub you` prints one), "
        "or run `chatbot chat` in the directory where `chatbot serve` runs, to sign one with "
        f"its secret ({secret} does not exist)\n"
    )


def test_a_server_that_is_not_running_is_named(tmp_path: Path) -> None:
    port = free_port()
    result = run_client(CHATBOT_PORT=str(port), CHATBOT_TOKEN=make_token("x"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        f"chatbot: error: cannot reach the chatbot server at http://127.0.0.1:{port} "
        "(connection refused); start it with `chatbot serve`, or pass its address with --url\n"
    )


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (make_token("x", secret=OTHER_SECRET), "invalid token"),
        (make_token("x", ttl=-3600), "token expired"),
    ],
)
@pytest.mark.parametrize("session", [(), ("--session", "any")], ids=["socket 4401", "HTTP 401"])
def test_a_refused_token_is_one_line(
    server: ServeProcess, tmp_path: Path, token: str, reason: str, session: tuple[str, ...]
) -> None:
    # A new session is refused on the socket; --session is looked up over HTTP first.
    result = run_client("--url", server.url, *session, cwd=tmp_path, CHATBOT_TOKEN=token)
    assert result.returncode == 1
    assert result.stderr == (
        f"chatbot: error: the server refused the token in CHATBOT_TOKEN ({reason}); "
        "get a fresh one with `chatbot token --sub you`\n"
    )


def test_a_session_that_is_not_yours_is_not_found(server: ServeProcess, tmp_path: Path) -> None:
    with connect(server.ws_url, additional_headers=bearer(make_token("owner"))) as ws:
        theirs = recv_json(ws)["session_id"]
    for session_id in (theirs, "nope"):
        result = run_client(
            "--url", server.url, "--session", session_id,
            cwd=tmp_path, CHATBOT_TOKEN=make_token("intruder"),
        )  # fmt: skip
        assert result.returncode == 1
        assert result.stderr == (
            f"chatbot: error: session {session_id!r} not found: it was deleted or belongs to "
            "another user; run without --session to start a new one\n"
        )


@pytest.mark.parametrize("session_id", ["../sessions", "..", "."])
def test_a_session_id_is_never_read_as_a_path(
    server: ServeProcess, tmp_path: Path, session_id: str
) -> None:
    # Unescaped, "../sessions" would be GET /api/sessions: the list, taken for a session.
    result = run_client(
        "--url", server.url, "--session", session_id,
        cwd=tmp_path, CHATBOT_TOKEN=make_token("pathfinder"),
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr == (
        f"chatbot: error: session {session_id!r} not found: it was deleted or belongs to "
        "another user; run without --session to start a new one\n"
    )


def test_a_token_that_expires_during_the_chat_ends_it_in_one_line(tmp_path: Path) -> None:
    # Without leeway the server closes the socket (4401) the second the token expires.
    with slow_server(tmp_path, CHATBOT_JWT_LEEWAY="0") as server:
        token = make_token("brief", ttl=5)
        with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
            term.expect("you> ")
            term.send("typed, not sent")
            term.expect(
                "chatbot: error: the server refused the token in CHATBOT_TOKEN (token expired); "
                "get a fresh one with `chatbot token --sub you`\n",
                timeout=30,
            )
            assert term.wait() == 1
            assert term.rest() == ""


def test_an_error_frame_is_shown_with_its_wait(tmp_path: Path) -> None:
    with slow_server(tmp_path, CHATBOT_RATE_LIMIT_PER_MINUTE="1") as server:
        args = ("--url", server.url)
        with terminal(*args, cwd=tmp_path, CHATBOT_TOKEN=make_token("hasty")) as term:
            term.expect("you> ")
            term.line("one")
            term.expect("assistant> Echo: one\nyou> ")
            term.line("two")
            wait = term.expect_re(
                r"error: more than 1 messages a minute; the message was not stored, send it "
                r"again in (\d+) s\nyou> "
            ).group(1)
            assert 1 <= int(wait) <= 60
            term.line("/quit")
            assert term.wait() == 0


def test_a_restart_mid_reply_reconnects_and_the_reply_is_finished(tmp_path: Path) -> None:
    token = make_token("restarted")
    first = slow_server(tmp_path)
    with first, terminal("--url", first.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
        session_id = term.expect_re(r"session: (\S+) \(new\).*\nyou> ").group(1)
        term.line(LONG)
        term.expect("assistant> Echo: w1 w2 ")
        first.signal(signal.SIGKILL)
        first.wait()
        term.expect(f"[connection lost (no close frame); reconnecting to {first.url}]\n")
        with ServeProcess(tmp_path, port=first.port) as second:
            term.expect("[reconnected]\n")
            # The message is sent again with its id: answered once, shown in full.
            term.expect(f"assistant> Echo: {LONG}\nyou> ")
            stored = messages(second, token, session_id)
            assert [(m["role"], m["content"], m["status"]) for m in stored] == [
                ("user", LONG, "complete"),
                ("assistant", f"Echo: {LONG}", "complete"),
            ]
            term.line("/quit")
            assert term.wait() == 0


def test_a_deleted_session_gives_way_to_a_new_one(server: ServeProcess, tmp_path: Path) -> None:
    token = make_token("deleter")
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
        session_id = term.expect_re(r"session: (\S+) \(new\).*\nyou> ").group(1)
        response = httpx.delete(f"{server.url}/api/sessions/{session_id}", headers=bearer(token))
        assert response.status_code == 204
        term.expect(f"[session {session_id} was deleted; your next message starts a new one]")
        term.line("again")
        new = term.expect_re(r"session: (\S+) \(new\)\n").group(1)
        term.expect("assistant> Echo: again\nyou> ")
        assert session(server, token, new)["message_count"] == 2
        term.line("/quit")
        assert term.wait() == 0


def test_an_idle_socket_closed_by_the_server_is_reopened_quietly(tmp_path: Path) -> None:
    # At debug level the server logs each close frame: the test sees the socket close.
    idle = slow_server(tmp_path, CHATBOT_IDLE_TIMEOUT="1", CHATBOT_LOG_LEVEL="debug")
    with idle as server:
        args = ("--url", server.url)
        with terminal(*args, cwd=tmp_path, CHATBOT_TOKEN=make_token("idler")) as term:
            term.expect("you> ")
            wait_for(
                lambda: "< CLOSE 1000 (OK) idle timeout" in server.log.read_text(),
                "the server to close the idle socket",
                20,
            )
            term.line("back")
            term.expect("assistant> Echo: back\nyou> ")
            assert "connection lost" not in term.text
            term.line("/quit")
            assert term.wait() == 0


def test_under_a_mount_prefix(tmp_path: Path) -> None:
    (tmp_path / "host.py").write_text(
        "from contextlib import asynccontextmanager\n"
        "from starlette.applications import Starlette\n"
        "from starlette.responses import PlainTextResponse\n"
        "from starlette.routing import Mount, Route\n"
        "from chatbot.app import create_app\n\n"
        "chat = create_app()\n\n\n"
        "@asynccontextmanager\n"
        "async def lifespan(app):\n"
        "    async with chat.router.lifespan_context(chat) as state:\n"
        "        yield state\n\n\n"
        "async def healthz(request):\n"
        "    return PlainTextResponse('ok')\n\n\n"
        "routes = [Route('/healthz', healthz), Mount('/chat', app=chat)]\n"
        "app = Starlette(routes=routes, lifespan=lifespan)\n"
    )
    command = ["-m", "uvicorn", "--app-dir", str(tmp_path), "host:app", "--port"]
    with ServeProcess(tmp_path, lambda port: [*command, str(port)]) as server:
        token = make_token("mounted")
        url = f"{server.url}/chat"
        with terminal("--url", url + "/", cwd=tmp_path, CHATBOT_TOKEN=token) as term:
            session_id = term.expect_re(r"session: (\S+) \(new\).*\nyou> ").group(1)
            term.line("under a prefix")
            term.expect("assistant> Echo: under a prefix\nyou> ")

            def titled() -> bool:
                response = httpx.get(f"{url}/api/sessions/{session_id}", headers=bearer(token))
                return bool(response.json()["title"])

            wait_for(titled, "the session's title, from its first words")
            term.line("/sessions")
            term.expect_re(rf"\*  1  {re.escape(session_id)}  .*  2 messages  under a prefix\n")
            term.line("/quit")
            assert term.wait() == 0
        result = run_client("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token)
        assert result.returncode == 1
        # Without the prefix, the host app refuses the upgrade (Starlette answers 403).
        assert result.stderr == (
            f"chatbot: error: {server.url} has no chat socket (HTTP 403); give --url the "
            "chatbot server's base URL, with its mount prefix if it has one\n"
        )


REPLACED = "[this reply replaces the previous one, which is kept as an earlier version]"
WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d"


def test_regenerate_streams_a_new_reply_and_keeps_the_old_one(
    server: ServeProcess, tmp_path: Path
) -> None:
    token = make_token("regenerator")
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
        session_id = term.expect_re(r"session: (\S+) \(new\).*\nyou> ").group(1)
        term.line("/regenerate")
        term.expect("error: there is no reply to regenerate\nyou> ")
        term.line("one two three four five six")
        term.expect("assistant> Echo: one two three four five six\nyou> ")
        first = messages(server, token, session_id)
        term.line("/regenerate")
        term.expect("assistant> Echo: one ")
        assert "six" not in term.rest(), "the new reply came at once, not as it streamed"
        term.expect(f"two three four five six\n{REPLACED}\nyou> ")
        term.line("/regenerate again")
        term.expect("/regenerate takes no argument; /help lists the commands\nyou> ")
        term.line("/quit")
        assert term.wait() == 0
    question, old = first
    branch = messages(server, token, session_id)
    assert [(m["role"], m["content"]) for m in branch] == [
        ("user", "one two three four five six"),
        ("assistant", "Echo: one two three four five six"),
    ]
    assert branch[0]["id"] == question["id"]
    new = branch[1]
    assert new["id"] != old["id"]
    assert new["parent_id"] == old["parent_id"] == question["id"]
    assert new["siblings"] == [old["id"], new["id"]]
    assert session(server, token, session_id)["message_count"] == 3


def test_edit_prefills_the_line_and_keeps_the_old_message(
    server: ServeProcess, tmp_path: Path
) -> None:
    token = make_token("editor")
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
        session_id = term.expect_re(r"session: (\S+) \(new\).*\nyou> ").group(1)
        term.line("/edit")
        term.expect("nothing to edit: no message of yours in this session yet\nyou> ")
        term.line("first question")
        term.expect("assistant> Echo: first question\nyou> ")
        term.line("second question")
        term.expect("assistant> Echo: second question\nyou> ")
        term.line("/edit")
        # The last message is on the line, ready to edit; what is typed goes after it.
        term.expect("edit> second question")
        term.line(", revised")
        term.expect("assistant> Echo: second question, revised\nyou> ")
        term.line("/edit third take")
        term.expect("assistant> Echo: third take\nyou> ")
        # Ctrl-C, or an emptied line, sends nothing.
        term.line("/edit")
        term.expect("edit> third take")
        term.send("\x03")
        term.expect("[edit cancelled]\nyou> ")
        term.line("/edit")
        term.expect("edit> third take")
        term.line("\x15")  # Ctrl-U empties the line
        term.expect("[edit cancelled]\nyou> ")
        term.line("/quit")
        assert term.wait() == 0
    branch = messages(server, token, session_id)
    assert [(m["role"], m["content"]) for m in branch] == [
        ("user", "first question"),
        ("assistant", "Echo: first question"),
        ("user", "third take"),
        ("assistant", "Echo: third take"),
    ]
    edited = branch[2]
    assert edited["parent_id"] == branch[1]["id"]
    assert len(edited["siblings"]) == 3 and edited["siblings"][-1] == edited["id"]
    # The earlier versions are kept, each with its own reply.
    for sibling, text in zip(
        edited["siblings"][:2], ["second question", "second question, revised"], strict=True
    ):
        kept = messages(server, token, session_id, leaf_id=sibling)
        assert [m["content"] for m in kept[2:]] == [text]
    assert session(server, token, session_id)["message_count"] == 8


def test_edit_of_a_first_message_starts_the_conversation_anew(
    server: ServeProcess, tmp_path: Path
) -> None:
    token = make_token("restarter")
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
        session_id = term.expect_re(r"session: (\S+) \(new\).*\nyou> ").group(1)
        term.line("hello")
        term.expect("assistant> Echo: hello\nyou> ")
        term.line("/edit hi")
        term.expect("assistant> Echo: hi\nyou> ")
        term.line("/quit")
        assert term.wait() == 0
    branch = messages(server, token, session_id)
    assert [(m["content"], m["parent_id"]) for m in branch] == [
        ("hi", None),
        ("Echo: hi", branch[0]["id"]),
    ]
    assert len(branch[0]["siblings"]) == 2


def test_edit_without_a_terminal_shows_the_old_text_and_reads_the_new(
    server: ServeProcess, tmp_path: Path
) -> None:
    token = make_token("piper")
    result = run_client(
        "--url", server.url, cwd=tmp_path, stdin="hello\n/edit\nbye\n/edit\n\n",
        CHATBOT_TOKEN=token,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    session_id = re.match(r"session: (\S+) \(new\)", result.stdout)
    assert session_id is not None
    assert result.stdout == (
        f"session: {session_id.group(1)} (new); /help lists the commands\n"
        "assistant> Echo: hello\n"
        "editing: hello\n"
        "assistant> Echo: bye\n"
        "editing: bye\n"
        "[edit cancelled]\n"
    )
    branch = messages(server, token, session_id.group(1))
    assert [m["content"] for m in branch] == ["bye", "Echo: bye"]


def _search_results(term: Terminal, query: str, count: int) -> list[tuple[str, str]]:
    """Type ``/search query`` and read ``count`` results: (heading, excerpt) pairs, as
    shown (without the terminal's control sequences), sorted."""
    term.line(f"/search {query}")
    lines = term.expect_re(rf"{re.escape(query)}\n((?:.*\n){{{2 * count}}})you> ").group(1)
    shown = lines.splitlines()
    return sorted(zip(shown[::2], shown[1::2], strict=True))


def test_search_emphasises_the_matches(server: ServeProcess, tmp_path: Path) -> None:
    token = make_token("searcher")
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
        trip = term.expect_re(r"session: (\S+) \(new\).*\nyou> ").group(1)
        term.line("best time to visit Lisbon")
        term.expect("assistant> Echo: best time to visit Lisbon\nyou> ")
        term.line("/title Trip planning")
        term.expect("title: Trip planning\nyou> ")
        term.line("/new")
        term.expect_re(r"session: \S+ \(new\)\nyou> ")
        term.line("nothing about cities")
        term.expect("assistant> Echo: nothing about cities\nyou> ")
        found = _search_results(term, "lisbon", 2)
        heading = rf"Trip planning \(session {re.escape(trip)}\), "
        assert re.fullmatch(heading + rf"assistant, {WHEN}", found[0][0])
        assert found[0][1] == "  Echo: best time to visit Lisbon"
        assert re.fullmatch(heading + rf"user, {WHEN}", found[1][0])
        assert found[1][1] == "  best time to visit Lisbon"
        # On a terminal the match is in bold reverse video.
        assert term.raw.count(b"visit \x1b[1;7mLisbon\x1b[22;27m\r\n") == 2
        term.line("/search zebra")
        term.expect("No messages match zebra.\nyou> ")
        words = " ".join(f"w{n}" for n in range(33))
        term.line(f"/search {words}")
        term.expect(
            "error: a search query may hold at most 32 words and quoted phrases, this one "
            "has 33: remove some\nyou> "
        )
        term.line("/search")
        term.expect("/search needs an argument; /help lists the commands\nyou> ")
        term.line("/quit")
        assert term.wait() == 0
    # With NO_COLOR set, the matches are between brackets instead.
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token, NO_COLOR="1") as term:
        term.expect("you> ")
        found = _search_results(term, '"to visit"', 2)
        assert [excerpt for _, excerpt in found] == [
            "  Echo: best time [to visit] Lisbon",
            "  best time [to visit] Lisbon",
        ]
        term.line("/quit")
        assert term.wait() == 0
    assert b"\x1b[1;7m" not in term.raw


def test_search_shows_control_characters_as_text(server: ServeProcess, tmp_path: Path) -> None:
    token = make_token("sirens")
    with connect(server.ws_url, additional_headers=bearer(token)) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send('{"message": "siren \\u001b[31m red \\u001b]0;owned\\u0007 \\u009b bell"}')
        recv_json(ws)
    response = httpx.patch(
        f"{server.url}/api/sessions/{session_id}",
        json={"title": "evil\n\u001b]0;title\u0007"},
        headers=bearer(token),
    )
    assert response.status_code == 200
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
        term.expect("you> ")
        found = _search_results(term, "siren", 2)
        heading = rf"evil \^\[\]0;title\^G \(session {re.escape(session_id)}\), "
        assert re.fullmatch(heading + rf"assistant, {WHEN}", found[0][0])
        assert found[0][1] == "  Echo: siren ^[[31m red ^[]0;owned^G \\x9b bell"
        assert re.fullmatch(heading + rf"user, {WHEN}", found[1][0])
        assert found[1][1] == "  siren ^[[31m red ^[]0;owned^G \\x9b bell"
        term.line("/quit")
        assert term.wait() == 0
    for raw in (b"\x1b[31m", b"\x1b]0;", b"\x07", "\x9b".encode()):
        assert raw not in term.raw


def test_export_writes_json_or_markdown_and_keeps_existing_files(
    server: ServeProcess, tmp_path: Path
) -> None:
    token = make_token("exporter")
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=token) as term:
        session_id = term.expect_re(r"session: (\S+) \(new\).*\nyou> ").group(1)
        term.line("hello")
        term.expect("assistant> Echo: hello\nyou> ")
        term.line("/title Greetings")
        term.expect("title: Greetings\nyou> ")
        term.line("/regenerate")
        term.expect(f"assistant> Echo: hello\n{REPLACED}\nyou> ")
        term.line("/export out.json")
        # The whole tree: the question and both replies.
        term.expect("Exported 3 messages to out.json\nyou> ")
        term.line("/export notes.MD")
        # The current branch.
        term.expect("Exported 2 messages to notes.MD\nyou> ")
        term.line("/export out.json")
        term.expect("error: out.json already exists; /export! out.json replaces it\nyou> ")
        term.line(f"/export {tmp_path}")
        term.expect(f"error: cannot write {tmp_path}: it is a directory; name a file in it\n")
        term.line("/export missing/out.json")
        term.expect("error: cannot write missing/out.json: No such file or directory\nyou> ")
        exported = json.loads((tmp_path / "out.json").read_text())
        term.line("again")
        term.expect("assistant> Echo: again\nyou> ")
        term.line("/export! out.json")
        term.expect("Exported 5 messages to out.json\nyou> ")
        term.line("/quit")
        assert term.wait() == 0
    assert exported["format"] == "chatbot.session.v1"
    assert exported["session"]["title"] == "Greetings"
    assert [(m["role"], m["content"]) for m in exported["messages"]] == [
        ("user", "hello"),
        ("assistant", "Echo: hello"),
        ("assistant", "Echo: hello"),
    ]
    replaced = json.loads((tmp_path / "out.json").read_text())
    assert replaced["format"] == "chatbot.session.v1"
    assert len(replaced["messages"]) == 5
    response = httpx.get(
        f"{server.url}/api/sessions/{session_id}/export",
        params={"format": "json"},
        headers=bearer(token),
    )
    assert replaced == response.json()
    markdown = (tmp_path / "notes.MD").read_text()
    assert re.fullmatch(
        r"# Greetings\n\nExported on \d{4}-\d\d-\d\d \d\d:\d\d UTC\.\n\n"
        r"## User\n\nhello\n\n## Assistant\n\nEcho: hello\n",
        markdown,
    ), markdown
    assert not (tmp_path / "missing").exists()


def test_help_lists_the_conversation_commands(server: ServeProcess, tmp_path: Path) -> None:
    with terminal("--url", server.url, cwd=tmp_path, CHATBOT_TOKEN=make_token("helped")) as term:
        term.expect("you> ")
        term.line("/help")
        term.expect(
            "/regenerate    a new reply to your last message (the previous reply is kept)\n"
            "/edit [TEXT]   change your last message and get a new reply: TEXT, or the message\n"
            "               typed out on the line to edit (the previous message is kept)\n"
            "/search WORDS  find messages in all your sessions\n"
            "/export FILE   save this session to FILE: Markdown if FILE ends in .md, else JSON;\n"
            "               /export! FILE replaces a file that exists\n"
        )
        term.line("/quit")
        assert term.wait() == 0


def test_urls() -> None:
    assert base_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
    assert base_url("https://example.com/chat/") == "https://example.com/chat"
    assert base_url("ws://h:1/x") == "http://h:1/x"


def test_printable_keeps_text_and_shows_controls() -> None:
    assert printable("héllo\n\tworld ✓") == "héllo\n\tworld ✓"
    assert printable("\x1b[2J\x07\r\x7f\x9b") == "^[[2J^G^M^?\\x9b"


def test_search_excerpts_are_one_inert_line() -> None:
    marks = ("<", ">")
    assert emphasised("a cat\nand a\tcatalog", [[2, 5], [12, 19]], marks) == (
        "a <cat> and a <catalog>"
    )
    # Escapes inside or around a match are shown, and cannot move the marks.
    assert emphasised("\x1b[31mred\x1b[0m", [[5, 8]], marks) == "^[[31m<red>^[[0m"
    assert emphasised("\x1b[31mred\x1b[0m", [[0, 6]], marks) == "<^[[31mr>ed^[[0m"
    # Offsets that do not fit the excerpt, overlap or are not pairs of integers are left out.
    assert emphasised("abcdef", [[4, 9], [0, 2], [1, 3], ["0", 1], [3], None], marks) == (
        "<abc>def"
    )
    assert emphasised("abc", "not a list", marks) == "abc"
    assert inline("title\r\nwith\u0085 breaks\x1b]0;x\x07") == ("title with\\x85 breaks^[]0;x^G")


def test_colours_only_on_a_terminal_without_no_color() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert wants_colour(Tty(), {"TERM": "xterm"})
    assert not wants_colour(Tty(), {"TERM": "xterm", "NO_COLOR": "1"})
    assert wants_colour(Tty(), {"TERM": "xterm", "NO_COLOR": ""})
    assert not wants_colour(Tty(), {"TERM": "dumb"})
    assert not wants_colour(io.StringIO(), {"TERM": "xterm"})


def test_export_format_follows_the_file_name() -> None:
    assert export_format("notes.md") == "markdown"
    assert export_format("Notes.MARKDOWN") == "markdown"
    assert export_format("session.json") == "json"
    assert export_format("session.md.bak") == "json"
