"""The ``chatbot`` command: ``serve``, ``token``, ``open``, ``backends``, ``migrate``,
``copy-store``, ``export``, ``import``, ``quota``, ``chat``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chatbot import __version__
from chatbot.errors import ChatbotError, ConfigError, InvalidRequest

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, flag: str = "--ttl") -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` to seconds."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(f"{flag} {text!r} is not a duration; write e.g. 90s, 15m, 1h or 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def forwarded_allow_ips(addresses: tuple[str, ...]) -> list[str] | str:
    """``CHATBOT_FORWARDED_ALLOW_IPS`` as uvicorn takes it: ``"*"`` trusts every client."""
    return "*" if "*" in addresses else list(addresses)


def serve(args: argparse.Namespace) -> int:
    """Run the server; a start that cannot succeed raises ``ConfigError`` instead."""
    import uvicorn

    from chatbot.jwt_secret import with_jwt_secret
    from chatbot.logs import use_json
    from chatbot.redact import server_log_config
    from chatbot.settings import Settings
    from chatbot.signin import announce, default_user
    from chatbot.startup import bind, check_database

    settings, note = with_jwt_secret(Settings.from_env())
    link_ttl = (
        settings.link_ttl if args.link_ttl is None else parse_duration(args.link_ttl, "--link-ttl")
    )
    user = args.user if args.user is not None else default_user()
    host = args.host if args.host is not None else settings.host
    # Bound here rather than by uvicorn, so that a port in use is one line naming the fix.
    sock = bind(host, args.port if args.port is not None else settings.port)
    port = sock.getsockname()[1]
    # Every record goes where uvicorn's do, through one filter: no token or key in any log
    # line, whichever logger sends it (a plugin's, an SDK's) and uvicorn's request lines
    # included (a refused ?token=...).
    log_config = server_log_config(uvicorn.config.LOGGING_CONFIG)
    json_logs = settings.log_format.lower() == "json"
    if json_logs:
        # uvicorn's own lines too: one JSON object per line, whoever logs it.
        log_config = use_json(log_config)
    # JSON lines are for a log collector, not a person: no sign-in link (a token) among
    # them unless asked for with --link.
    link = args.link if args.link is not None else not json_logs
    common: dict[str, Any] = {
        "host": host,
        "port": port,
        "ws_max_size": settings.max_frame_bytes,
        # Chat frames are small; compression would cost each socket zlib state and CPU, and
        # mix a reply's text with what others can influence (docs/security.md).
        "ws_per_message_deflate": False,
        # uvicorn's websockets-sansio, able to reset a client that stopped reading.
        "ws": "chatbot.transport:WebSocketProtocol",
        "log_level": settings.log_level.lower(),
        "log_config": log_config,
        # X-Forwarded-For and -Proto are believed from the proxies named, and only from
        # them: any other client could claim any address or scheme with them.
        "proxy_headers": bool(settings.forwarded_allow_ips),
        "forwarded_allow_ips": forwarded_allow_ips(settings.forwarded_allow_ips),
        # Said, not guessed: uvicorn guesses from whether the app's __call__ is a coroutine
        # function, and StartupErrors' is not (it hands each socket the app's own coroutine).
        "interface": "asgi3",
    }

    def started() -> None:
        # uvicorn says where it listens only for the sockets it binds itself.
        address = f"[{host}]" if ":" in host else host
        logging.getLogger("uvicorn.error").info(
            "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", address, port
        )
        if link:
            announce(settings, host, port, user, link_ttl, sys.stdout)
        elif json_logs and args.link is None:
            logging.getLogger("chatbot").info(
                "no sign-in link with CHATBOT_LOG_FORMAT=json (it holds a token); "
                "mint one with: chatbot token --sub NAME"
            )

    with sock:
        if args.reload:
            from uvicorn.supervisors import ChangeReload

            # Reloading needs an import string; the factory reads the same environment.
            config = uvicorn.Config("chatbot.app:create_app", factory=True, reload=True, **common)
            check_database(settings)
            if note is not None:
                print(note, file=sys.stderr)
            # The workers serve this socket; listening now queues the first requests until
            # one has started instead of refusing them.
            sock.set_inheritable(True)
            sock.listen(config.backlog)
            started()
            ChangeReload(config, target=uvicorn.Server(config).run, sockets=[sock]).run()
            return 0
        from chatbot.app import create_app
        from chatbot.server import ChatServer

        app = create_app(settings)
        # Before the database check: this sets up logging, which reports migrations applied.
        config = uvicorn.Config(app, timeout_graceful_shutdown=5, **common)
        applied = check_database(settings)
        if applied:
            logging.getLogger("chatbot").info("applied migrations: %s", ", ".join(applied))
        if note is not None:
            print(note, file=sys.stderr)
        server = ChatServer(config, app, on_started=started)
        try:
            server.run(sockets=[sock])
        except SystemExit:
            # uvicorn's way out of a failed start-up; the outcome is judged below.
            if server.started:
                raise
    if server.started:
        return 0
    if server.startup_error is not None:
        raise server.startup_error
    print("chatbot: error: the server did not start; the lines above say why", file=sys.stderr)
    return 1


def token(args: argparse.Namespace) -> int:
    """Print a token signed with the server's secret."""
    from chatbot.auth import TokenVerifier
    from chatbot.jwt_secret import read_jwt_secret
    from chatbot.settings import Settings

    ttl = parse_duration(args.ttl)
    # Without the backends: a token does not depend on them, and a secret is only ever read,
    # so a token is always one the server accepts.
    settings = read_jwt_secret(Settings.from_env(with_backends=False))
    print(TokenVerifier(settings).mint(args.sub, ttl))
    return 0


def open_link(args: argparse.Namespace) -> int:
    """Print a fresh sign-in link to the chat page, and open it with ``--browser``."""
    import webbrowser

    from chatbot.jwt_secret import read_jwt_secret
    from chatbot.settings import Settings
    from chatbot.signin import announce, default_user

    settings = Settings.from_env(with_backends=False)
    if not settings.web_ui:
        raise ConfigError(
            "CHATBOT_WEB_UI is false, so the server shows no chat page; unset it to use one"
        )
    ttl = settings.link_ttl if args.ttl is None else parse_duration(args.ttl)
    user = args.user if args.user is not None else default_user()
    host = args.host if args.host is not None else settings.host
    port = args.port if args.port is not None else settings.port
    if settings.uses_hmac:
        settings = read_jwt_secret(settings)
    url = announce(settings, host, port, user, ttl, sys.stdout)
    if args.browser and url is not None and not webbrowser.open(url):
        print("chatbot: no browser found; open the link above yourself", file=sys.stderr)
    return 0


def backends(args: argparse.Namespace) -> int:
    from chatbot.backends import discover
    from chatbot.registry import BackendRegistry
    from chatbot.settings import Settings

    settings = Settings.from_env()
    found = discover()
    print("Installed backend types (entry points in the chatbot.backends group):")
    for name, entry_point in sorted(found.items()):
        print(f"  {name:<16} {entry_point.value}")
    print("Configured backends:")
    for name, config in settings.backends.items():
        marks = []
        if name == settings.default_backend:
            marks.append("default")
        if config.type not in found:
            marks.append("type not installed")
        suffix = f" ({', '.join(marks)})" if marks else ""
        model = config.options.get("model")
        model_text = f" model={model}" if isinstance(model, str) else ""
        print(f"  {name:<16} type={config.type}{model_text}{suffix}")
    # Build them as `chatbot serve` would, so that a bad option or a missing key shows here.
    BackendRegistry.from_settings(settings)
    print("Every configured backend loads.")
    return 0


def migrate(args: argparse.Namespace) -> int:
    """Apply the pending database migrations."""
    from chatbot.settings import Settings
    from chatbot.startup import prepare_database

    settings = Settings.from_env(with_backends=False)
    applied = asyncio.run(prepare_database(settings, migrate=True))
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("the database is up to date")
    return 0


def copy_store(args: argparse.Namespace) -> int:
    """Copy a whole database to another store (SQLite to PostgreSQL, or back)."""
    from chatbot.copy import Copied, copy_store

    def show(copied: Copied) -> None:
        print(f"{copied.table}: {copied.copied} copied, {copied.present} already there")
        sys.stdout.flush()

    report = asyncio.run(copy_store(args.source, args.target, progress=show))
    if report.migrated:
        print(f"migrated the target: {', '.join(report.migrated)}")
    return 0


def export(args: argparse.Namespace) -> int:
    """Write a user's sessions to stdout as JSON Lines."""
    from chatbot.cli_transfer import check_user, export_sessions
    from chatbot.settings import Settings

    user = check_user(args.user)
    settings = Settings.from_env(with_backends=False)
    asyncio.run(export_sessions(settings, user, args.session, sys.stdout.buffer))
    return 0


def import_file(args: argparse.Namespace) -> int:
    """Import the sessions of a file (``-``: stdin) for a user, all or none."""
    from chatbot.cli_transfer import check_user, import_sessions, read_import
    from chatbot.settings import Settings

    user = check_user(args.user)
    # With the backends: imported sessions go on with the server's default one.
    settings = Settings.from_env()
    if args.file == "-":
        name, data = "stdin", sys.stdin.buffer.read()
    else:
        name = args.file
        try:
            data = Path(args.file).read_bytes()
        except OSError as exc:
            raise InvalidRequest(
                "invalid_import", f"cannot read {name}: {exc.strerror or exc}"
            ) from None
    # The whole file is read before the database is opened: a bad file changes nothing.
    sessions = asyncio.run(import_sessions(settings, user, read_import(data, name)))
    noun = "session" if len(sessions) == 1 else "sessions"
    print(f"Imported {len(sessions)} {noun} for {user}")
    return 0


def tokens(text: str) -> int:
    """``--per-day`` and ``--per-month``: a whole number of tokens, 0 or more."""
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of tokens; write a whole number, 0 or more"
        )
    return int(text)


def quota(args: argparse.Namespace) -> int:
    """Set, show or clear one user's quota override."""
    from chatbot.cli_quota import run

    print(asyncio.run(run(args)))
    return 0


def chat(args: argparse.Namespace) -> int:
    from chatbot.terminal import chat as run_chat

    return run_chat(args.url, args.session)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatbot", description="A self-hosted AI chat server.")
    parser.add_argument("--version", action="version", version=f"chatbot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("serve", help="run the server")
    p.add_argument("--host", help="address to listen on (default: CHATBOT_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: CHATBOT_PORT or 8000)")
    p.add_argument("--reload", action="store_true", help="restart when the code changes")
    p.add_argument("--user", help="whom the sign-in link signs in (default: your login name)")
    p.add_argument(
        "--link-ttl", help="lifetime of the sign-in link's token (default: CHATBOT_LINK_TTL, 12h)"
    )
    p.add_argument(
        "--link",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print a sign-in link once listening (default: yes, but not with "
        "CHATBOT_LOG_FORMAT=json; --no-link where stdout is kept in a log)",
    )
    p.set_defaults(func=serve)

    p = commands.add_parser("token", help="mint a token signed with the configured secret")
    p.add_argument("--sub", required=True, help="the user id the token names")
    p.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 7d (default 1h)")
    p.set_defaults(func=token)

    p = commands.add_parser("open", help="print a fresh sign-in link to the chat page")
    p.add_argument("--user", help="whom the link signs in (default: your login name)")
    p.add_argument("--ttl", help="lifetime of its token: 15m, 12h, 7d (default: CHATBOT_LINK_TTL)")
    p.add_argument("--host", help="the server's address (default: CHATBOT_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="the server's port (default: CHATBOT_PORT or 8000)")
    p.add_argument("--browser", action="store_true", help="also open it in the web browser")
    p.set_defaults(func=open_link)

    p = commands.add_parser("backends", help="list installed and configured backends")
    p.set_defaults(func=backends)

    p = commands.add_parser("migrate", help="apply pending database migrations")
    p.set_defaults(func=migrate)

    p = commands.add_parser(
        "copy-store",
        help="copy every session, message and share to another database (SQLite to "
        "PostgreSQL, or back)",
        description="Copy every table, ids included, from the database of SOURCE_URL to that "
        "of TARGET_URL (migrated first). Rows the target holds already are skipped: running "
        "it again copies what is missing. Stop the servers of both databases first.",
    )
    p.add_argument("source", metavar="SOURCE_URL", help="e.g. sqlite:///./chatbot.db")
    p.add_argument("target", metavar="TARGET_URL", help="e.g. postgresql://user@host/chatbot")
    p.set_defaults(func=copy_store)

    p = commands.add_parser("export", help="write a user's sessions to stdout as JSON Lines")
    p.add_argument("--user", required=True, help="whose sessions: the `sub` of their tokens")
    p.add_argument("--session", help="only this session")
    p.set_defaults(func=export)

    p = commands.add_parser(
        "import", help="import sessions from `chatbot export` or a ChatGPT export"
    )
    p.add_argument("--user", required=True, help="who owns them: the `sub` of their tokens")
    p.add_argument(
        "file",
        metavar="FILE",
        help="JSON Lines from `chatbot export`, a ChatGPT conversations.json, or - for stdin",
    )
    p.set_defaults(func=import_file)

    p = commands.add_parser("quota", help="set, show or clear one user's token quota")
    p.set_defaults(func=quota)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    user_help = "the user: the `sub` of their tokens"
    q = actions.add_parser("set", help="give a user a quota of their own, in place of any other")
    q.add_argument("--user", required=True, help=user_help)
    q.add_argument("--per-day", type=tokens, help="tokens a UTC day, input and output together")
    q.add_argument("--per-month", type=tokens, help="tokens a UTC month, likewise")
    q.add_argument("--unlimited", action="store_true", help="no limit: exempt from every quota")
    q = actions.add_parser("show", help="a user's quota and the tokens they used")
    q.add_argument("--user", required=True, help=user_help)
    q = actions.add_parser("clear", help="remove a user's quota of their own")
    q.add_argument("--user", required=True, help=user_help)

    p = commands.add_parser("chat", help="chat with a server from this terminal")
    p.add_argument("--url", help="the server's base URL (default: from CHATBOT_HOST, CHATBOT_PORT)")
    p.add_argument("--session", help="continue this session instead of starting one")
    p.set_defaults(func=chat)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ChatbotError as exc:
        print(f"chatbot: error: {exc}", file=sys.stderr)
        return 2
    return result
