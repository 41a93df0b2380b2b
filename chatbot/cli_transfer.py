"""``chatbot export`` and ``chatbot import``: one user's sessions as JSON Lines, and back.

An export is one ``chatbot.session.v1`` object (:func:`chatbot.transfer.export_json`, the
format of ``GET /api/sessions/{id}/export``) per line, in UTF-8, oldest session first, so
that files can be split, joined and streamed. An import reads such a file, or one JSON value
of anything ``POST /api/sessions/import`` takes (a ChatGPT ``conversations.json``), and
stores every conversation in one transaction: all of them or, on any error, none.

Both work on the database named by ``CHATBOT_DATABASE_URL``, whether a server runs on it or
not. Moving a user's conversations to another server is an export on one and an import on
the other: the trees, statuses, timestamps and usage are kept; ids are new.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import BinaryIO, TypeVar

from chatbot.auth import MAX_USER_ID_CHARS
from chatbot.errors import ConfigError, InvalidRequest, NotFound, TooManySessions
from chatbot.settings import Settings
from chatbot.stores import store_for_url
from chatbot.stores.base import Message, Session, SessionStore
from chatbot.transfer import FORMAT, ImportedSession, export_json, parse_import

T = TypeVar("T")

#: More sessions than any user holds: an export lists them all at once.
_ALL = 2**31


def check_user(user: str) -> str:
    """``--user``: a user id as the server's tokens name one, or ``ConfigError``."""
    if not 0 < len(user) <= MAX_USER_ID_CHARS:
        raise ConfigError(
            f"--user must be a user id of 1 to {MAX_USER_ID_CHARS} characters: the `sub` "
            "of the user's tokens"
        )
    return user


def export_line(session: Session, messages: list[Message]) -> bytes:
    """One session and its whole tree as a line of JSON Lines: compact UTF-8 JSON, with the
    line breaks inside strings escaped as JSON escapes them, and a final newline."""
    text = json.dumps(export_json(session, messages), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


def read_import(data: bytes, name: str) -> list[ImportedSession]:
    """The conversations in the bytes of a file called ``name`` (for error messages).

    A file that is one JSON value is read as ``POST /api/sessions/import`` reads a body;
    any other, as JSON Lines: one such value a line, blank lines skipped. Raises
    :class:`~chatbot.errors.InvalidRequest` naming the file, the line and the problem.
    """
    try:
        # "utf-8-sig": a byte order mark, as some editors write one, is not part of the JSON.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _invalid(f"{name} is not UTF-8 text (byte {exc.start} is not UTF-8)") from None
    if not text.strip():
        raise _invalid(f"{name} is empty: there is nothing to import")
    try:
        return _parsed(json.loads(text), name)
    except RecursionError:
        raise _invalid(f"{name} is nested too deeply to be an export") from None
    except json.JSONDecodeError as whole:
        # Not one value: JSON Lines, unless its first line is not JSON either, when what
        # is wrong with the file as a whole says more (a ChatGPT export cut short).
        error = whole
    sessions: list[ImportedSession] = []
    first = True
    # Lines end at "\n" only: JSON allows U+2028 and the like inside a string, and
    # str.splitlines() would cut there.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            if first:
                raise _invalid(
                    f"{name} is not JSON: {error.msg} at line {error.lineno} column "
                    f"{error.colno}; give a file written by `chatbot export` (one {FORMAT} "
                    "export a line) or a ChatGPT conversations.json"
                ) from None
            raise _invalid(
                f"{where} is not JSON: {exc.msg} at column {exc.colno}; each line must hold "
                f"one {FORMAT} export, as `chatbot export` writes them"
            ) from None
        except RecursionError:
            raise _invalid(f"{where} is nested too deeply to be an export") from None
        first = False
        sessions += _parsed(value, where)
    return sessions


def _parsed(value: object, where: str) -> list[ImportedSession]:
    try:
        return parse_import(value)
    except InvalidRequest as exc:
        raise _invalid(f"{where}: {exc.message}") from None


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest("invalid_import", message)


async def export_sessions(
    settings: Settings, user: str, session_id: str | None, output: BinaryIO
) -> int:
    """Write ``user``'s sessions (or the one ``session_id``) to ``output`` as JSON Lines;
    how many. ``NotFound`` for a session that is not ``user``'s, and for a user with none:
    an empty file would look like a finished export of the wrong name."""

    async def export(store: SessionStore) -> int:
        if session_id is not None:
            try:
                sessions = [await store.get_session(user, session_id)]
            except NotFound:
                raise NotFound(
                    f"{user!r} has no session {session_id!r}; check the id (a `session_id` "
                    "of GET /api/sessions with their token) and --user"
                ) from None
        else:
            sessions = await _all_sessions(store, user)
            if not sessions:
                raise NotFound(
                    f"{user!r} has no sessions in the database of CHATBOT_DATABASE_URL; "
                    "--user takes the user id the server's tokens name (their `sub`)"
                )
        written = 0
        for session in sessions:
            try:
                messages = await store.all_messages(user, session.id)
            except NotFound:
                continue  # deleted since it was listed
            output.write(export_line(session, messages))
            written += 1
        output.flush()
        return written

    return await _with_store(settings, export)


async def _all_sessions(store: SessionStore, user: str) -> list[Session]:
    """Every session of ``user``, oldest first."""
    # One read rather than pages: a running server that moves a session to the top of the
    # list between two pages would have it missed.
    page = await store.list_sessions(user, limit=_ALL)
    return sorted(page.sessions, key=lambda session: (session.created_at, session.id))


async def import_sessions(
    settings: Settings, user: str, sessions: list[ImportedSession]
) -> list[Session]:
    """Store ``sessions`` as ``user``'s, in one transaction, with the default backend; as the
    server's import does, never past ``CHATBOT_MAX_SESSIONS_PER_USER``."""

    async def store_them(store: SessionStore) -> list[Session]:
        try:
            return await store.import_sessions(
                user,
                sessions,
                backend=settings.default_backend,
                limit=settings.max_sessions_per_user,
            )
        except TooManySessions:
            raise InvalidRequest(
                "too_many_sessions",
                f"{len(sessions)} more sessions would give {user!r} more than "
                f"{settings.max_sessions_per_user}, the most CHATBOT_MAX_SESSIONS_PER_USER "
                "allows; nothing was imported: raise it, or import fewer",
            ) from None

    return await _with_store(settings, store_them)


async def _with_store(settings: Settings, work: Callable[[SessionStore], Awaitable[T]]) -> T:
    """Run ``work`` on the store, opened and migrated as ``chatbot serve`` would."""
    store = store_for_url(settings.database_url, pool_size=settings.database_pool_size)
    await store.open()
    try:
        if settings.auto_migrate:
            await store.migrate()
        return await work(store)
    finally:
        await store.close()
