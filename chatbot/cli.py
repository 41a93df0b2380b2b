"""The ``chatbot`` command: ``serve``, ``token``, ``backends`` and ``migrate``."""

from __future__ import annotations

import argparse
import asyncio
import copy
import re
import sys
from collections.abc import Sequence
from typing import Any

from chatbot import __version__
from chatbot.errors import ChatbotError, ConfigError

_DURATION = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``7d`` to seconds."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ConfigError(f"--ttl {text!r} is not a duration; write e.g. 90s, 15m, 1h or 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from chatbot.redact import add_redaction
    from chatbot.settings import Settings, with_jwt_secret

    settings, note = with_jwt_secret(Settings.from_env())
    if note is not None:
        print(note, file=sys.stderr)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    # chatbot's own records (a failing backend, a shutdown in progress) go where uvicorn's do.
    log_config["loggers"]["chatbot"] = {"handlers": ["default"], "level": "INFO"}
    # No token in any log line, uvicorn's request lines included (a refused ?token=...).
    add_redaction(log_config)
    common: dict[str, Any] = {
        "host": args.host if args.host is not None else settings.host,
        "port": args.port if args.port is not None else settings.port,
        "ws_max_size": settings.max_frame_bytes,
        # Chat frames are small; compression would cost each socket zlib state and CPU, and
        # mix a reply's text with what others can influence (docs/security.md).
        "ws_per_message_deflate": False,
        "log_level": settings.log_level,
        "log_config": log_config,
        "proxy_headers": False,
    }
    if args.reload:
        # Reloading needs an import string; the factory reads the same environment.
        uvicorn.run("chatbot.app:create_app", factory=True, reload=True, **common)
        return 0
    from chatbot.app import create_app
    from chatbot.server import ChatServer

    app = create_app(settings)
    config = uvicorn.Config(app, timeout_graceful_shutdown=5, **common)
    ChatServer(config, app).run()
    return 0


def token(args: argparse.Namespace) -> int:
    from chatbot.auth import TokenVerifier
    from chatbot.settings import Settings, with_jwt_secret

    settings = Settings.from_env()
    if not settings.uses_hmac:
        raise ConfigError(
            "chatbot token signs with the shared secret (HS*); with public-key algorithms "
            "your identity provider issues the tokens"
        )
    ttl = parse_duration(args.ttl)
    settings, note = with_jwt_secret(settings)
    if note is not None and "Generated" in note:
        print(note, file=sys.stderr)
    print(TokenVerifier(settings).mint(args.sub, ttl))
    return 0


def backends(args: argparse.Namespace) -> int:
    from chatbot.backends import BackendRegistry, discover
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
    from chatbot.settings import Settings
    from chatbot.stores import store_for_url

    settings = Settings.from_env()

    async def run() -> list[str]:
        store = store_for_url(settings.database_url)
        await store.open()
        try:
            return await store.migrate()
        finally:
            await store.close()

    applied = asyncio.run(run())
    if applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print("the database is up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatbot", description="A self-hosted AI chat server.")
    parser.add_argument("--version", action="version", version=f"chatbot {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("serve", help="run the server")
    p.add_argument("--host", help="address to listen on (default: CHATBOT_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: CHATBOT_PORT or 8000)")
    p.add_argument("--reload", action="store_true", help="restart when the code changes")
    p.set_defaults(func=serve)

    p = commands.add_parser("token", help="mint a token signed with the configured secret")
    p.add_argument("--sub", required=True, help="the user id the token names")
    p.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 7d (default 1h)")
    p.set_defaults(func=token)

    p = commands.add_parser("backends", help="list installed and configured backends")
    p.set_defaults(func=backends)

    p = commands.add_parser("migrate", help="apply pending database migrations")
    p.set_defaults(func=migrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ChatbotError as exc:
        print(f"chatbot: error: {exc}", file=sys.stderr)
        return 2
    return result
