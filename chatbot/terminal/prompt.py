"""The prompt of ``chatbot chat``: lines read with readline in the main thread, where
Ctrl-C lands, slash commands, and the loop thread that holds the socket."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sys
import threading
from collections.abc import Coroutine, Iterator
from datetime import datetime
from types import ModuleType
from typing import Any, TextIO, TypeVar

from chatbot.terminal import link
from chatbot.terminal.api import Api
from chatbot.terminal.endpoint import (
    Credentials,
    Server,
    base_url,
    credentials_from_env,
    default_url,
)
from chatbot.terminal.errors import ChatError, Unreachable
from chatbot.terminal.export import export_format, json_text, write_file
from chatbot.terminal.interrupt import CtrlC, read_line
from chatbot.terminal.link import Link, Turn
from chatbot.terminal.results import result_lines
from chatbot.terminal.screen import PROMPT, REPLY, Screen, printable, status_mark

#: How many of a session's newest messages ``/switch`` and ``--session`` show.
RECENT_MESSAGES = 6
#: The prompt of ``/edit``, on which the message being edited is typed out.
EDIT_PROMPT = "edit> "
#: How many results ``/search`` shows.
SEARCH_RESULTS = 20
#: Printed after a regenerated reply.
REPLACED = "[this reply replaces the previous one, which is kept as an earlier version]"

HELP = """\
/new           start a new session
/sessions      list your sessions, most recently active first
/switch ID|N   continue a session: its id, or its number in the /sessions list
/title TEXT    rename this session
/regenerate    a new reply to your last message (the previous reply is kept)
/edit [TEXT]   change your last message and get a new reply: TEXT, or the message
               typed out on the line to edit (the previous message is kept)
/search WORDS  find messages in all your sessions
/export FILE   save this session to FILE: Markdown if FILE ends in .md, else JSON;
               /export! FILE replaces a file that exists
/help          this list
/quit          leave (Ctrl-D too)
Ctrl-C stops the reply being written; at the prompt it clears the line, and a second
Ctrl-C in a row leaves. Start a message with // to send one that begins with /."""

T = TypeVar("T")


class Over(ChatError):
    """The chat cannot go on (``Link.fatal`` says why): no prompt is shown any more."""


class Loop:
    """An asyncio loop in a daemon thread, so that the main thread stays free for
    ``readline`` and for Ctrl-C."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="chat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start a coroutine in the loop; its future, to wait on from this thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine to its end; Ctrl-C cancels it."""
        future = self.submit(coro)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class Chat:
    """The prompt: reads lines, runs commands, sends messages."""

    def __init__(self, server: Server, credentials: Credentials, out: TextIO, err: TextIO) -> None:
        interactive = sys.stdin.isatty()
        #: input() edits lines and keeps their history with it; /edit fills the line in.
        self.readline: ModuleType | None = None
        if interactive:
            with contextlib.suppress(ImportError):
                import readline

                self.readline = readline
        self.screen = Screen(out, err, interactive)
        self.api = Api(server, credentials)
        self.ctrl_c = CtrlC()
        self.loop = Loop()
        self.link = Link(server, credentials, self.screen)
        self.link.on_fatal = self._wake
        self._listed: list[str] = []
        self._prompting = threading.Lock()

    def _wake(self) -> None:
        """Leave at once when the chat cannot go on, also while waiting at the prompt."""
        with self._prompting:
            if self.screen.typing:
                self.ctrl_c.interrupt()

    def start(self, session_id: str | None) -> None:
        """Open the first session, or continue ``session_id``; raises ChatError."""
        if session_id is None:
            session_id = self.loop.run(self.link.connect(None))
            self.screen.line(f"session: {session_id} (new); /help lists the commands")
            return
        session = self.api.session(session_id)
        if session is None:
            raise ChatError(
                f"session {session_id!r} not found: it was deleted or belongs to another user; "
                "run without --session to start a new one"
            )
        self._open(session)

    def _open(self, session: dict[str, Any]) -> None:
        session_id = str(session["session_id"])
        self.loop.run(self.link.connect(session_id))
        title = printable(session.get("title") or "untitled")
        self.screen.line(f"session: {session_id} ({title}); /help lists the commands")
        messages, more = self.api.recent(session_id, RECENT_MESSAGES)
        if more:
            self.screen.line("[earlier messages not shown]")
        for message in messages:
            prefix = PROMPT if message["role"] == "user" else REPLY
            mark = status_mark(message["content"], message["status"])
            self.screen.line(f"{prefix}{printable(message['content'])}{mark}")

    def run(self) -> int:
        """Read and act on lines until /quit or end of input; the exit status."""
        interrupted = False
        while True:
            try:
                line = self._read_line()
            except Over:
                return 1
            except EOFError:
                if self.screen.interactive:
                    self.screen.write("\n")
                return 0
            except KeyboardInterrupt:
                if self.link.failed():
                    return 1
                if interrupted:
                    self.screen.write("\n")
                    return 0
                self.screen.write("\n(Ctrl-C again, Ctrl-D or /quit to leave)\n")
                interrupted = True
                continue
            interrupted = False
            try:
                if not self.handle(line):
                    return 0
            except Unreachable as exc:
                self.screen.line(f"error: {exc}")
            except ChatError as exc:
                if self.link.failed():
                    break
                self.screen.line(f"error: {exc}")
            except KeyboardInterrupt:
                self.screen.line("[interrupted]")
        return 1

    def _read_line(self, prompt: str = PROMPT) -> str:
        """A line typed at ``prompt`` (none without a terminal); raises Over when the chat
        can no longer go on, and EOFError or KeyboardInterrupt as input() does."""
        saved = self.screen.prompt
        if self.screen.interactive:
            self.screen.prompt = prompt  # drawn again under a line printed meanwhile
        try:
            with self._prompting:
                # Either the failure is seen here, or _wake sees the prompt and interrupts
                # it: no prompt is left waiting on a chat that is over.
                if self.link.failed():
                    raise Over
                self.screen.typing = True
            return read_line(self.screen.prompt)
        finally:
            self.screen.typing = False
            self.screen.prompt = saved

    def handle(self, line: str) -> bool:
        """Act on one line; False to leave."""
        text = line.strip()
        if not text:
            return True
        if not text.startswith("/") or text.startswith("//"):
            self.send(line[1:] if text.startswith("//") else line)
            return True
        command, _, argument = text.partition(" ")
        argument = argument.strip()
        if command in ("/quit", "/exit"):
            return False
        if command == "/help":
            self.screen.line(HELP)
        elif command == "/new":
            session_id = self.loop.run(self.link.connect(None))
            self.screen.line(f"session: {session_id} (new)")
        elif command == "/sessions":
            self.list_sessions()
        elif command == "/switch" and argument:
            self.switch(argument)
        elif command == "/title" and argument:
            self.rename(argument)
        elif command == "/regenerate" and not argument:
            self.regenerate()
        elif command == "/edit":
            self.edit(argument)
        elif command == "/search" and argument:
            self.search(argument)
        elif command in ("/export", "/export!") and argument:
            self.export(argument, replace=command == "/export!")
        elif command in ("/switch", "/title", "/search", "/export", "/export!"):
            self.screen.line(f"{command} needs an argument; /help lists the commands")
        elif command == "/regenerate":
            self.screen.line("/regenerate takes no argument; /help lists the commands")
        else:
            self.screen.line(
                f"unknown command {printable(command)}; /help lists the commands "
                "(start with // to send a message that begins with /)"
            )
        return True

    def send(self, text: str) -> None:
        """Send a message and wait for its reply; Ctrl-C cancels it."""
        self.ask(link.message(text))

    def ask(self, request: dict[str, Any]) -> Turn:
        """Send a request (see :mod:`chatbot.terminal.link`) and wait for its reply;
        Ctrl-C cancels it. The turn, which says how the reply ended."""
        with self._quiet_terminal():
            future = self.loop.submit(self.link.ask(request))
            while True:
                try:
                    return future.result()
                except KeyboardInterrupt:
                    pass
                # Ctrl-C pressed again right now must not leave the reply running unseen.
                with contextlib.suppress(KeyboardInterrupt):
                    self.loop.submit(self.link.interrupt())

    @contextlib.contextmanager
    def _quiet_terminal(self) -> Iterator[None]:
        """While a reply streams, the terminal does not echo what is typed (a ``^C`` or the
        next message would land inside the reply); typed lines wait for the next prompt."""
        if not self.screen.interactive:
            yield
            return
        try:
            import termios
        except ImportError:  # pragma: no cover - not a POSIX terminal
            yield
            return
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        quiet = list(saved)
        quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
        try:
            yield
        finally:
            termios.tcsetattr(fd, termios.TCSANOW, saved)

    def list_sessions(self) -> None:
        sessions, more = self.api.sessions()
        self._listed = [str(s["session_id"]) for s in sessions]
        if not sessions:
            self.screen.line("no sessions yet")
        for number, session in enumerate(sessions, 1):
            mark = "*" if session["session_id"] == self.link.session_id else " "
            updated = datetime.fromisoformat(session["updated_at"]).astimezone()
            count = session["message_count"]
            title = printable(session["title"] or "(untitled)")
            self.screen.line(
                f"{mark}{number:>3}  {session['session_id']}  {updated:%Y-%m-%d %H:%M}  "
                f"{count:>4} message{'' if count == 1 else 's'}  {title}"
            )
        if more:
            self.screen.line(f"(the {len(sessions)} most recent; older sessions not listed)")

    def switch(self, argument: str) -> None:
        session_id = argument
        if argument.isdigit() and len(argument) < 4:
            if not 1 <= int(argument) <= len(self._listed):
                self.screen.line(f"no session number {argument}; /sessions lists them")
                return
            session_id = self._listed[int(argument) - 1]
        session = self.api.session(session_id)
        if session is None:
            self.screen.line(f"no session {printable(session_id)}; /sessions lists yours")
            return
        self._open(session)

    def rename(self, title: str) -> None:
        session_id = self._session()
        if session_id is None:
            return
        session = self.api.rename(session_id, title)
        if session is None:
            self.screen.line(f"session {session_id} no longer exists")
            return
        self.screen.line(f"title: {printable(session['title'] or '')}")

    def _session(self) -> str | None:
        """The current session's id; None, said so, when there is none."""
        if self.link.session_id is None:
            self.screen.line("no session: send a message first, or /switch to one")
        return self.link.session_id

    def regenerate(self) -> None:
        """A new reply in place of the newest one; the previous reply stays, as a version."""
        if self._session() is None:
            return
        turn = self.ask(link.regenerate())
        if turn.status is not None:
            self.screen.line(REPLACED)

    def edit(self, text: str) -> None:
        """Replace the last message the user wrote with ``text``, or with the line they
        edit, and answer it; the previous message stays on the server, as a version."""
        session_id = self._session()
        if session_id is None:
            return
        last = self.api.last_user_message(session_id)
        if last is None:
            self.screen.line("nothing to edit: no message of yours in this session yet")
            return
        if "parent_id" not in last:
            raise ChatError("this server keeps no versions of messages; /edit needs a newer one")
        if not text:
            typed = self._edited(str(last["content"]))
            if typed is None or not typed.strip():
                self.screen.line("[edit cancelled]")
                return
            text = typed
        self.ask(link.edit(text, last["parent_id"]))

    def _edited(self, old: str) -> str | None:
        """The new text of a message, typed at the edit prompt: ``old`` is on the line to
        edit where readline is, else shown above it. None if the edit was abandoned
        (Ctrl-C or Ctrl-D)."""
        if self.readline is None:
            self.screen.line(f"editing: {printable(old)}")
            return self._edit_line()
        readline = self.readline
        readline.set_startup_hook(lambda: readline.insert_text(old))
        try:
            return self._edit_line()
        finally:
            readline.set_startup_hook(None)

    def _edit_line(self) -> str | None:
        try:
            return self._read_line(EDIT_PROMPT)
        except (EOFError, KeyboardInterrupt):
            if self.link.failed():
                raise Over from None  # interrupted because the chat is over
            if self.screen.interactive:
                self.screen.write("\n")
            return None

    def search(self, words: str) -> None:
        """The user's messages that match ``words``, in all their sessions, best first."""
        results, more = self.api.search(words, SEARCH_RESULTS)
        if not results:
            self.screen.line(f"No messages match {printable(words)}.")
            return
        for line in result_lines(results, colour=self.screen.colour):
            self.screen.line(line)
        if more:
            self.screen.line(
                f"(the {len(results)} best matches; more messages match: add words to narrow "
                "the search)"
            )

    def export(self, name: str, *, replace: bool) -> None:
        """Write the current session to the file ``name``: its current branch as Markdown
        for a ``.md`` name, else the whole conversation as JSON, which imports back."""
        session_id = self._session()
        if session_id is None:
            return
        content: bytes | None
        if export_format(name) == "markdown":
            content = self.api.export_markdown(session_id)
            count = self.api.branch_length(session_id)
        else:
            data = self.api.export_json(session_id)
            content = None if data is None else json_text(data)
            count = 0 if data is None else len(data["messages"])
        if content is None:
            self.screen.line(f"session {session_id} no longer exists")
            return
        write_file(name, content, replace=replace)
        noun = "message" if count == 1 else "messages"
        self.screen.line(f"Exported {count} {noun} to {printable(name)}")

    def close(self) -> None:
        try:
            with contextlib.suppress(Exception, KeyboardInterrupt):
                self.loop.run(self.link.close())
            self.loop.close()
            self.api.close()
        finally:
            self.ctrl_c.close()


def chat(url: str | None, session_id: str | None) -> int:
    """``chatbot chat``: the exit status. Raises ConfigError when no token can be had."""
    credentials = credentials_from_env(os.environ)
    if url is None:
        url = default_url()
    server = Server(base_url(url))
    session = Chat(server, credentials, sys.stdout, sys.stderr)
    try:
        session.start(session_id)
        status = session.run()
    except ChatError as exc:
        session.screen.end_line()
        print(f"chatbot: error: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        session.screen.end_line()
        status = 130
    finally:
        session.close()
    return status
