"""Settings: ``CHATBOT_*`` environment variables, an optional ``.env`` and a TOML file.

Environment variables configure the server; the TOML file (``CHATBOT_CONFIG``, or
``./chatbot.toml`` when present) names the backends::

    default_backend = "echo"
    [backends.echo]
    type = "echo"        # the entry-point name in the ``chatbot.backends`` group
    delay = 0.0

Each setting is declared once, as a field of :class:`Settings` made by
:func:`~chatbot.declarations.setting`: its default, its bound and a line of documentation;
its type is the field's annotation and its variable ``CHATBOT_<FIELD>``. Reading the
environment (:meth:`Settings.from_env`), checking the bounds (:meth:`Settings.validate`) and
the table of docs/configuration.md (``python -m chatbot.settings``) all follow from those
declarations.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from starlette.datastructures import Secret

from chatbot import declarations
from chatbot.backend_config import BackendConfig, default_backends, load_backends_file
from chatbot.declarations import (
    Addresses,
    AtLeast,
    Between,
    Checked,
    LongSecret,
    OneOf,
    Origins,
    Seconds,
    Variable,
    declared,
    declared_variables,
    setting,
)
from chatbot.errors import ConfigError
from chatbot.jwks import check_jwks_url, public_key_algorithms, read_public_key_setting
from chatbot.oidc import check_issuer

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MIN_SECRET_BYTES = 32
MAX_LEEWAY_SECONDS = 60
MAX_JWKS_REFRESH_SECONDS = 86_400
SECRET_FILE_NAME = "jwt-secret"  # noqa: S105 (a file name, not a secret)
#: uvicorn's log levels, which CHATBOT_LOG_LEVEL names.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
LOG_FORMATS = ("text", "json")
#: Every variable's name is this prefix and its field's name in upper case.
PREFIX = "CHATBOT_"


def _public_key(variable: str, raw: str) -> str:
    return read_public_key_setting(raw)


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know; build it with :meth:`from_env` or by hand."""

    # setting() returns a dataclasses.field(), as ruff cannot tell (RUF009).
    jwt_secret: Secret | None = setting(  # noqa: RUF009
        None,
        "shared secret that signs and verifies HS* tokens",
        bound=LongSecret(MIN_SECRET_BYTES),
        shown_default="generated in `CHATBOT_DATA_DIR`",
    )
    jwt_algorithms: tuple[str, ...] = setting(
        ("HS256",),
        "allow-list of one family: HS*, or public-key ones (RS*, PS*, ES*, EdDSA); "
        "`none` is refused",
        shown_default="`HS256`; `RS256` with `CHATBOT_OIDC_ISSUER`",
        accepts="comma-separated algorithm names",
    )
    jwt_audience: str | None = setting(None, "when set, tokens must carry this `aud`")
    jwt_issuer: str | None = setting(None, "when set, tokens must carry this `iss`")
    jwt_leeway: float = setting(
        30.0,
        "clock skew allowed on `exp`, `nbf` and `iat`",
        bound=Between(0, MAX_LEEWAY_SECONDS, " seconds"),
    )
    jwt_user_claim: str = setting("sub", "the claim that holds the user id")
    jwt_public_key: str | None = setting(
        None,
        "for public-key tokens (RS*, ES*, EdDSA...): the identity provider's public key",
        parse=_public_key,
        accepts="PEM text, or `@/path/to/key.pem`",
        repr=False,
    )
    jwt_jwks_url: str | None = setting(
        None,
        "for public-key tokens: where the provider publishes its keys (JWKS); keys by `kid`, "
        "cached. See [identity providers](identity-providers.md)",
        bound=Checked(check_jwks_url, "an `https://` URL, or `http://` on loopback"),
    )
    jwt_jwks_refresh_seconds: float = setting(
        60.0,
        "an unknown `kid` refetches the JWKS at most this often",
        bound=Between(1, MAX_JWKS_REFRESH_SECONDS, " seconds"),
    )
    database_url: str = setting(
        "sqlite:///./chatbot.db",
        "where sessions and messages live; `sqlite:////abs/path.db` for an absolute path; "
        "`?synchronous=normal` trades the last commits on a power loss for fewer disk syncs "
        "(see [performance](performance.md#synchronousnormal)); "
        "`postgresql://user:password@host:5432/database` for PostgreSQL (needs "
        "`pip install 'chatbot[postgres]'`, see [PostgreSQL](configuration.md#postgresql))",
    )
    database_pool_size: int = setting(
        10,
        "connections each server process keeps open to PostgreSQL, at most (unused with SQLite)",
        bound=Between(1, 1000),
    )
    data_dir: Path = setting(Path(".chatbot"), "holds the generated JWT secret")  # noqa: RUF009
    backends: Mapping[str, BackendConfig] = field(
        default_factory=default_backends,
        metadata=declared(
            "the TOML file that names the backends, see [backends](backends.md)",
            variable="CONFIG",
            shown_default="`./chatbot.toml` when present, else the `echo` backend alone",
            accepts="a path",
            by_hand=True,
        ),
    )
    default_backend: str = setting(
        "echo",
        "the backend of new sessions, by name",
        variable="BACKEND",
        shown_default="the TOML file's `default_backend` (else its first backend), else `echo`",
        accepts="a configured backend's name",
        by_hand=True,
    )
    title_backend: str | None = setting(
        None,
        "the backend that titles new sessions (usually a cheap model); unset, a title is "
        "the first words of the first message",
        shown_default="the TOML file's `title_backend`, else none",
        accepts="a configured backend's name",
        by_hand=True,
    )
    max_message_chars: int = setting(
        32_000, "longest message a client may send, in characters", bound=AtLeast(1)
    )
    max_frame_bytes: int = setting(
        1_048_576,
        "largest WebSocket frame, in bytes; a larger one closes the socket with `1009`",
        bound=AtLeast(1),
    )
    context_messages: int = setting(
        50, "how many of a session's newest messages the backend sees", bound=AtLeast(1)
    )
    process_timeout: float = setting(
        15.0,
        "on PostgreSQL, seconds after which a process that stopped saying it is alive (killed, "
        "cut off) loses its sessions' queues to the other processes; it says so every quarter "
        "of this",
        bound=Between(1, 3600, " seconds"),
    )
    session_queue_size: int = setting(
        4,
        "messages that may wait while a session's reply is generated; more get `busy`",
        bound=AtLeast(1),
    )
    shutdown_grace: float = setting(
        10.0,
        "seconds the replies in flight get to finish on SIGTERM before they are stored as "
        "cancelled",
        bound=Seconds(zero=True),
    )
    system_prompt: str | None = setting(
        None, "system prompt of sessions that set none, on backends whose table sets none"
    )
    auto_migrate: bool = setting(
        True, "apply database migrations on start; else run `chatbot migrate`"
    )
    host: str = setting("127.0.0.1", "address `chatbot serve` listens on")
    port: int = setting(8000, "port `chatbot serve` listens on", bound=Between(1, 65535))
    forwarded_allow_ips: tuple[str, ...] = setting(
        (),
        "addresses of the reverse proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` "
        "`chatbot serve` believes: the client's address in its logs, `https` in the links it "
        "makes (shared links). See [deployment](deployment.md#nginx)",
        bound=Addresses(),
        shown_default="unset: the headers are ignored",
    )
    log_level: str = setting(
        "info",
        "uvicorn's log level under `chatbot serve`",
        bound=OneOf(LOG_LEVELS, "a log level", ignore_case=True),
    )
    log_format: str = setting(
        "text",
        "how `chatbot serve` writes its log, uvicorn's lines included: `text` for people, "
        "`json` one object per line for a log collector. See [operations](operations.md#logs)",
        bound=OneOf(LOG_FORMATS, "a log format", ignore_case=True),
    )
    log_content: bool = setting(
        False,
        "put the user's message and the reply's text in each `reply_finished` line of the "
        "`json` log; off, no message text reaches a log",
    )
    metrics: bool = setting(
        True,
        "serve Prometheus metrics at `/metrics`; `false` leaves it unanswered (`404`). See "
        "[operations](operations.md#metrics)",
    )
    metrics_token: Secret | None = setting(  # noqa: RUF009
        None,
        "when set, `/metrics` answers only `Authorization: Bearer <this token>` (`401` else); "
        "unset, it answers anyone who reaches it",
        bound=LongSecret(MIN_SECRET_BYTES),
    )
    allowed_origins: tuple[str, ...] = setting(
        (),
        "browser origins allowed to open the chat socket; others are closed with `4403`. "
        "Clients that send no `Origin` (not browsers) are always allowed. The same origins "
        "may call the HTTP API from a page (CORS, bearer tokens only, no cookies). See "
        "[security](security.md#allowed-origins)",
        bound=Origins(),
        shown_default="unset: same origin only",
    )
    max_body_bytes: int = setting(
        262_144,
        "largest HTTP request body, in bytes; a larger one is answered `413` without being read",
        bound=AtLeast(1),
    )
    max_import_bytes: int = setting(
        52_428_800,
        "largest body of `POST /api/sessions/import` (a ChatGPT `conversations.json`), in bytes",
        bound=AtLeast(1),
    )
    rate_limit_per_minute: int = setting(
        30,
        "chat messages a user may send per minute, all their sockets together; more get "
        "`rate_limited` with `retry_after`",
        bound=AtLeast(1),
    )
    flood_tolerance: int = setting(
        10,
        "messages a rate-limited user may still send (each refused) before the socket sending "
        "the next is closed with `4429`",
        bound=AtLeast(0),
    )
    max_sockets_per_user: int = setting(
        10,
        "chat sockets a user may have open at once; one more is closed with `4429`",
        bound=AtLeast(1),
    )
    max_sessions_per_user: int = setting(
        1000,
        "sessions a user may own; one more is `429` over HTTP and `4429` on a socket",
        bound=AtLeast(1),
    )
    idle_timeout: float = setting(
        300.0,
        "seconds without a frame from the client after which its socket is closed with "
        "`1000` `idle timeout`",
        bound=Seconds(),
    )
    quota_tokens_per_day: int | None = setting(
        None,
        "tokens (input and output together) a user may use per UTC day, all sessions "
        "together; past it, a message gets `quota_exceeded` and reaches no model. See "
        "[quotas](protocol.md#quotas)",
        bound=AtLeast(0),
        shown_default="unset: no limit",
    )
    quota_tokens_per_month: int | None = setting(
        None,
        "tokens a user may use per UTC month, as above",
        bound=AtLeast(0),
        shown_default="unset: no limit",
    )
    quota_claim: str | None = setting(
        None,
        'a token claim that carries the user\'s plan, `{"tokens_per_day": N, '
        '"tokens_per_month": M}`: it comes before the two settings above, and an override '
        "of `chatbot quota set` before it",
    )
    max_pending_bytes: int = setting(
        1_048_576,
        "frames, in bytes, that may wait for a socket that does not read them before it is "
        "closed with `1008`",
        bound=AtLeast(1),
    )
    # The connection is reset rather than closed: a close frame cannot pass what the client
    # does not read.
    send_timeout: float = setting(
        30.0,
        "seconds a client may take nothing of what the server sends before its connection is "
        "reset and its socket slot freed. See [security](security.md#clients-that-stop-reading)",
        bound=Seconds(),
    )
    web_ui: bool = setting(
        True,
        "serve the [chat page](chat-page.md) at `/`; `false` leaves `/` unanswered (`404`)",
    )
    frame_ancestors: str = setting(
        "'none'",
        "who may show the chat page in a frame: the CSP `frame-ancestors` sources, "
        "space-separated (`'self' https://intranet.example.com`)",
    )
    link_ttl: float = setting(
        43_200.0,
        "seconds the token in the sign-in link of `chatbot serve` and `chatbot open` is valid",
        bound=Seconds(),
        shown_default="`43200` (12 hours)",
    )
    oidc_issuer: str | None = setting(
        None,
        "an OpenID provider's issuer: the chat page signs in there, and the server verifies "
        "tokens with the keys its discovery document names. See [OpenID Connect sign-in]"
        "(identity-providers.md#openid-connect-sign-in-for-the-chat-page)",
        bound=Checked(check_issuer, "an `https://` URL, or `http://` on loopback"),
    )
    oidc_client_id: str | None = setting(
        None, "the chat page's client id at that provider: a public client (no secret), with PKCE"
    )
    oidc_scopes: str = setting(
        "openid profile email", "the scopes the page asks for (`openid` is always asked)"
    )
    oidc_token: str = setting(
        "access",
        "the token the page sends as its bearer: `access` (needs `CHATBOT_JWT_AUDIENCE`) or "
        "`id` (its audience is the client id)",
        bound=OneOf(("access", "id"), "a kind of token"),
    )

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        env_file: str | Path | None = ".env",
        *,
        with_backends: bool = True,
    ) -> Settings:
        """Read ``CHATBOT_*`` variables (and ``.env``), then the backends' TOML file.

        ``with_backends=False`` skips the TOML file and ``CHATBOT_BACKEND``, for commands
        that only mint tokens or reach the server: a broken backend setup is not theirs to
        report.
        """
        env = os.environ if environ is None else environ
        from_file = read_env_file(Path(env_file)) if env_file is not None else {}

        def get(variable: str) -> str | None:
            # An empty variable counts as unset, so it does not hide the .env file's value.
            for source in (env, from_file):
                value = source.get(variable)
                if value:
                    return value
            return None

        values: dict[str, Any] = {}
        for variable in variables():
            raw = get(variable.name)
            if raw is not None and variable.parse is not None:
                values[variable.field] = variable.parse(variable.name, raw)
        if "jwt_algorithms" not in values and "oidc_issuer" in values:
            # What every OpenID provider can sign with (OpenID Connect Core 15.1).
            values["jwt_algorithms"] = ("RS256",)

        if not with_backends:
            return cls(**values)
        config_path = get(f"{PREFIX}CONFIG")
        if config_path is not None:
            path = Path(config_path)
            if not path.is_file():
                raise ConfigError(f"CHATBOT_CONFIG points at {config_path!r}, which is not a file")
            values.update(load_backends_file(path))
        elif Path("chatbot.toml").is_file():
            values.update(load_backends_file(Path("chatbot.toml")))

        backend = get(f"{PREFIX}BACKEND")
        if backend is not None:
            values["default_backend"] = backend
        title_backend = get(f"{PREFIX}TITLE_BACKEND")
        if title_backend is not None:
            values["title_backend"] = title_backend or None
        return cls(**values)

    def validate(self) -> None:
        """Refuse settings the server cannot run with safely."""
        self._validate_algorithms()
        for variable in variables():
            value = getattr(self, variable.field)
            if variable.bound is not None and value is not None:
                variable.bound.check(variable.name, value)
        # Cross-field checks. One kind of key only: a secret for HS*, a public key or a JWKS
        # URL for the others.
        if self.jwt_public_key is not None and self.jwt_jwks_url is not None:
            raise ConfigError("set CHATBOT_JWT_PUBLIC_KEY or CHATBOT_JWT_JWKS_URL, not both")
        if self.uses_hmac and (self.jwt_public_key is not None or self.jwt_jwks_url is not None):
            raise ConfigError(
                "CHATBOT_JWT_PUBLIC_KEY and CHATBOT_JWT_JWKS_URL serve public-key algorithms, "
                "but CHATBOT_JWT_ALGORITHMS allows HMAC (HS*) ones (HS256 is the default); set "
                "CHATBOT_JWT_ALGORITHMS=RS256 (or ES256...) to use the identity provider's keys"
            )
        if not self.uses_hmac and self.jwt_secret is not None:
            raise ConfigError(
                "CHATBOT_JWT_SECRET serves HMAC (HS*) algorithms, but CHATBOT_JWT_ALGORITHMS "
                "allows public-key ones; unset CHATBOT_JWT_SECRET"
            )
        if self.jwt_public_key is not None:
            public_key_algorithms(self.jwt_public_key, self.jwt_algorithms)
        if (self.oidc_issuer is None) != (self.oidc_client_id is None):
            raise ConfigError(
                "set both CHATBOT_OIDC_ISSUER and CHATBOT_OIDC_CLIENT_ID for sign-in with "
                "OpenID Connect, or neither"
            )
        if self.oidc_issuer is not None:
            self._validate_oidc(self.oidc_issuer)
        self._validate_backends()

    def _validate_algorithms(self) -> None:
        algorithms = set(self.jwt_algorithms)
        if not algorithms:
            raise ConfigError("CHATBOT_JWT_ALGORITHMS is empty; the default is HS256")
        if any(a.lower() == "none" for a in algorithms):
            raise ConfigError("CHATBOT_JWT_ALGORITHMS must not allow 'none'")
        unknown = algorithms - HMAC_ALGORITHMS - ASYMMETRIC_ALGORITHMS
        if unknown:
            raise ConfigError(
                f"unknown JWT algorithm {sorted(unknown)[0]!r}; choose from "
                + ", ".join(sorted(HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS))
            )
        if algorithms & HMAC_ALGORITHMS and algorithms & ASYMMETRIC_ALGORITHMS:
            raise ConfigError(
                "CHATBOT_JWT_ALGORITHMS mixes HMAC (HS*) and public-key algorithms; "
                "allow one family only"
            )

    def _validate_oidc(self, issuer: str) -> None:
        if self.uses_hmac:
            raise ConfigError(
                "an OpenID provider signs tokens with its own key, but CHATBOT_JWT_ALGORITHMS "
                "allows HMAC (HS*) algorithms; unset CHATBOT_JWT_ALGORITHMS (RS256 is then the "
                "default) or set the algorithm the provider signs with, e.g. ES256"
            )
        if self.jwt_issuer is not None and self.jwt_issuer != issuer:
            raise ConfigError(
                "CHATBOT_JWT_ISSUER differs from CHATBOT_OIDC_ISSUER, whose tokens the chat page "
                "sends; unset CHATBOT_JWT_ISSUER"
            )
        if self.oidc_token == "access" and self.jwt_audience is None:  # noqa: S105 (not a secret)
            # Without an audience, an access token the provider issued for any other
            # application would be accepted here; providers name this server differently.
            raise ConfigError(
                "CHATBOT_OIDC_TOKEN=access (the default) needs CHATBOT_JWT_AUDIENCE: the "
                "audience the provider puts in the access tokens it issues for this server "
                "(Keycloak: an audience mapper; Auth0: the API identifier). Or set "
                "CHATBOT_OIDC_TOKEN=id to send ID tokens, whose audience is the client id. "
                "See docs/identity-providers.md"
            )

    def _validate_backends(self) -> None:
        if not self.backends:
            raise ConfigError("no backends are configured; add a [backends.NAME] table")
        if self.default_backend not in self.backends:
            raise ConfigError(
                f"no backend named {self.default_backend!r}; the configured backends are: "
                + ", ".join(sorted(self.backends))
            )
        if self.title_backend is not None and self.title_backend not in self.backends:
            raise ConfigError(
                f"title_backend names no configured backend ({self.title_backend!r}); the "
                "configured backends are: " + ", ".join(sorted(self.backends))
            )
        for config in self.backends.values():
            for name in config.fallback:
                if name == config.name or name not in self.backends:
                    raise ConfigError(
                        f"[backends.{config.name}]: fallback {name!r} is not another "
                        "configured backend; the configured backends are: "
                        + ", ".join(sorted(self.backends))
                    )

    @property
    def uses_hmac(self) -> bool:
        return bool(set(self.jwt_algorithms) & HMAC_ALGORITHMS)

    @property
    def token_issuer(self) -> str | None:
        """The ``iss`` every token must carry: CHATBOT_JWT_ISSUER, else the OIDC issuer."""
        return self.jwt_issuer if self.jwt_issuer is not None else self.oidc_issuer

    @property
    def token_audience(self) -> str | None:
        """The ``aud`` every token must carry: CHATBOT_JWT_AUDIENCE, else the client id when
        the chat page sends OIDC ID tokens (an ID token's audience is the client)."""
        sends_id_tokens = self.oidc_token == "id"  # noqa: S105 (a choice of token, not a secret)
        if self.jwt_audience is None and self.oidc_issuer is not None and sends_id_tokens:
            return self.oidc_client_id
        return self.jwt_audience

    @property
    def secret_file(self) -> Path:
        return self.data_dir / SECRET_FILE_NAME


@functools.cache
def variables() -> tuple[Variable, ...]:
    """Every ``CHATBOT_*`` variable of :class:`Settings`, in the order of its fields."""
    return declared_variables(Settings, PREFIX)


# The documentation's table ------------------------------------------------------------------

#: The lines around the generated table in docs/configuration.md.
TABLE_START = (
    "<!-- generated by `python -m chatbot.settings docs/configuration.md`: edit the "
    "declarations in chatbot/settings.py, not this table -->"
)
TABLE_END = "<!-- end of the generated table -->"


def markdown_table() -> str:
    """The table of every ``CHATBOT_*`` variable, as docs/configuration.md shows it."""
    return declarations.markdown_table(variables())


def with_table(text: str) -> str:
    """``text`` with what lies between its table markers replaced by :func:`markdown_table`."""
    before, start, rest = text.partition(TABLE_START)
    _, end, after = rest.partition(TABLE_END)
    if not start or not end:
        raise ValueError(f"the text has no {TABLE_START!r} ... {TABLE_END!r} lines")
    return f"{before}{TABLE_START}\n{markdown_table()}\n{TABLE_END}{after}"


def main(argv: Sequence[str]) -> None:
    """Print the table, or with file names, rewrite the table in each file."""
    if not argv:
        print(markdown_table())
    for name in argv:
        path = Path(name)
        path.write_text(with_table(path.read_text(encoding="utf-8")), encoding="utf-8")


def read_env_file(path: Path) -> dict[str, str]:
    """The ``CHATBOT_*`` assignments of a ``.env`` file, ``{}`` when there is none.

    python-dotenv reads the file as shells and Docker Compose write it: ``export NAME=value``
    lines, quotes, comments. Nothing is interpolated: a ``$`` in a secret stays a ``$``.
    """
    if not path.is_file():
        return {}
    try:
        values = dotenv_values(path, interpolate=False, encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}; fix or remove the file") from None
    return {
        name: value
        for name, value in values.items()
        if name.startswith("CHATBOT_") and value is not None
    }


if __name__ == "__main__":
    main(sys.argv[1:])
