"""Settings: ``CHATBOT_*`` environment variables, an optional ``.env`` and a TOML file.

Environment variables configure the server; the TOML file (``CHATBOT_CONFIG``, or
``./chatbot.toml`` when present) names the backends::

    default_backend = "echo"
    [backends.echo]
    type = "echo"        # the entry-point name in the ``chatbot.backends`` group
    delay = 0.0
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from starlette.datastructures import Secret

from chatbot.errors import ConfigError, why_not_created
from chatbot.jwks import check_jwks_url, public_key_algorithms, read_public_key_setting
from chatbot.oidc import check_issuer
from chatbot.origins import ANY_ORIGIN, normalize_origin

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


@dataclass(frozen=True)
class BackendConfig:
    """One named backend from the TOML file: its entry-point ``type``, the keys the server
    itself reads (``fallback``, ``system_prompt``, ``context_tokens``) and, in ``options``,
    everything else, which belongs to the backend class."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Backends that answer, in order, when this one fails before its first token.
    fallback: tuple[str, ...] = ()
    #: The system prompt of this backend's sessions that do not set their own.
    system_prompt: str | None = None
    #: Approximate token budget of the context sent to this backend (None: no budget).
    context_tokens: int | None = None

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any], source: str) -> BackendConfig:
        """Split a ``[backends.NAME]`` table into the server's keys and the backend's."""
        where = f"{source}: [backends.{name}]"
        if not isinstance(table.get("type"), str):
            raise ConfigError(
                f"{where} needs a type, the backend's entry-point name "
                "(run `chatbot backends` to list them)"
            )
        fallback = table.get("fallback", [])
        if isinstance(fallback, str):
            fallback = [fallback]
        if not isinstance(fallback, list) or not all(isinstance(f, str) for f in fallback):
            raise ConfigError(f"{where}: fallback must be a list of backend names")
        system_prompt = table.get("system_prompt")
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ConfigError(f"{where}: system_prompt must be a string")
        budget = table.get("context_tokens")
        if budget is not None and (
            not isinstance(budget, int) or isinstance(budget, bool) or budget < 1
        ):
            raise ConfigError(f"{where}: context_tokens must be a whole number above 0")
        reserved = {"type", "fallback", "system_prompt", "context_tokens"}
        return cls(
            name=name,
            type=table["type"],
            options={k: v for k, v in table.items() if k not in reserved},
            fallback=tuple(fallback),
            system_prompt=system_prompt,
            context_tokens=budget,
        )


def _default_backends() -> dict[str, BackendConfig]:
    return {"echo": BackendConfig(name="echo", type="echo")}


@dataclass(frozen=True)
class Settings:
    """Everything the server needs to know; build it with :meth:`from_env` or by hand."""

    jwt_secret: Secret | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    jwt_leeway: float = 30.0
    jwt_user_claim: str = "sub"
    #: The identity provider's PEM public key, for public-key algorithms (RS256, ES256...).
    jwt_public_key: str | None = field(default=None, repr=False)
    #: Where the identity provider publishes its keys, for public-key algorithms.
    jwt_jwks_url: str | None = None
    #: Least seconds between two JWKS requests made because a token named an unknown kid.
    jwt_jwks_refresh_seconds: float = 60.0
    database_url: str = "sqlite:///./chatbot.db"
    data_dir: Path = Path(".chatbot")
    backends: Mapping[str, BackendConfig] = field(default_factory=_default_backends)
    default_backend: str = "echo"
    max_message_chars: int = 32_000
    max_frame_bytes: int = 1_048_576
    context_messages: int = 50
    session_queue_size: int = 4
    shutdown_grace: float = 10.0
    system_prompt: str | None = None
    auto_migrate: bool = True
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    #: Browser origins allowed to open the chat socket; empty: same-origin only; "*": any.
    allowed_origins: tuple[str, ...] = ()
    #: Largest HTTP request body; a larger one is answered 413 without being read.
    max_body_bytes: int = 262_144
    #: Chat messages a user may send per minute, across all their sockets.
    rate_limit_per_minute: int = 30
    #: Messages a rate-limited user may still send (each refused) before the socket that
    #: sends the next one is closed with 4429.
    flood_tolerance: int = 10
    max_sockets_per_user: int = 10
    max_sessions_per_user: int = 1000
    #: Seconds without a client frame after which a socket is closed (1000, idle timeout).
    idle_timeout: float = 300.0
    #: Bytes of frames waiting for a socket that does not read before it is closed (1008).
    max_pending_bytes: int = 1_048_576
    #: Seconds one frame may take to reach a client before its connection is dropped (reset:
    #: a close frame cannot pass what it does not read) and its socket slot freed.
    send_timeout: float = 30.0
    #: Serve the chat page at ``/``.
    web_ui: bool = True
    #: CSP ``frame-ancestors`` of the chat page: who may put it in a frame.
    frame_ancestors: str = "'none'"
    #: Seconds the token in the sign-in link that ``chatbot serve`` and ``chatbot open``
    #: print stays valid.
    link_ttl: float = 43_200.0
    #: OpenID Connect for the chat page: the issuer and the page's (public) client id.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_scopes: str = "openid profile email"
    #: Which OIDC token the page sends as its bearer: "access" or "id".
    oidc_token: str = "access"  # noqa: S105 (a choice of token, not a secret)

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

        def get(name: str) -> str | None:
            # An empty variable counts as unset, so it does not hide the .env file's value.
            for source in (env, from_file):
                value = source.get(f"CHATBOT_{name}")
                if value:
                    return value
            return None

        def get_number(name: str, kind: type[int] | type[float]) -> Any:
            raw = get(name)
            if raw is None:
                return None
            try:
                return kind(raw)
            except ValueError:
                raise ConfigError(f"CHATBOT_{name} must be a number, got {raw!r}") from None

        values: dict[str, Any] = {}
        secret = get("JWT_SECRET")
        if secret is not None:
            values["jwt_secret"] = Secret(secret)
        algorithms = get("JWT_ALGORITHMS")
        if algorithms is not None:
            values["jwt_algorithms"] = tuple(a.strip() for a in algorithms.split(",") if a.strip())
        elif get("OIDC_ISSUER") is not None:
            # What every OpenID provider can sign with (OpenID Connect Core 15.1).
            values["jwt_algorithms"] = ("RS256",)
        public_key = get("JWT_PUBLIC_KEY")
        if public_key is not None:
            values["jwt_public_key"] = read_public_key_setting(public_key)
        for name in (
            "JWT_AUDIENCE",
            "JWT_ISSUER",
            "JWT_USER_CLAIM",
            "JWT_JWKS_URL",
            "DATABASE_URL",
            "SYSTEM_PROMPT",
            "HOST",
            "LOG_LEVEL",
            "FRAME_ANCESTORS",
            "OIDC_ISSUER",
            "OIDC_CLIENT_ID",
            "OIDC_SCOPES",
            "OIDC_TOKEN",
        ):
            value = get(name)
            if value is not None:
                values[name.lower()] = value
        for name, kind in (
            ("JWT_LEEWAY", float),
            ("JWT_JWKS_REFRESH_SECONDS", float),
            ("MAX_MESSAGE_CHARS", int),
            ("MAX_FRAME_BYTES", int),
            ("CONTEXT_MESSAGES", int),
            ("SESSION_QUEUE_SIZE", int),
            ("SHUTDOWN_GRACE", float),
            ("PORT", int),
            ("MAX_BODY_BYTES", int),
            ("RATE_LIMIT_PER_MINUTE", int),
            ("FLOOD_TOLERANCE", int),
            ("MAX_SOCKETS_PER_USER", int),
            ("MAX_SESSIONS_PER_USER", int),
            ("IDLE_TIMEOUT", float),
            ("MAX_PENDING_BYTES", int),
            ("SEND_TIMEOUT", float),
            ("LINK_TTL", float),
        ):
            number = get_number(name, kind)
            if number is not None:
                values[name.lower()] = number
        origins = get("ALLOWED_ORIGINS")
        if origins is not None:
            values["allowed_origins"] = tuple(o.strip() for o in origins.split(",") if o.strip())
        data_dir = get("DATA_DIR")
        if data_dir is not None:
            values["data_dir"] = Path(data_dir)
        for name in ("AUTO_MIGRATE", "WEB_UI"):
            flag = get(name)
            if flag is not None:
                if flag.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ConfigError(f"CHATBOT_{name} must be true or false, got {flag!r}")
                values[name.lower()] = flag.lower() in ("1", "true", "yes")

        if not with_backends:
            return cls(**values)
        config_path = get("CONFIG")
        if config_path is not None:
            path = Path(config_path)
            if not path.is_file():
                raise ConfigError(f"CHATBOT_CONFIG points at {config_path!r}, which is not a file")
            values.update(load_backends_file(path))
        elif Path("chatbot.toml").is_file():
            values.update(load_backends_file(Path("chatbot.toml")))

        backend = get("BACKEND")
        if backend is not None:
            values["default_backend"] = backend
        return cls(**values)

    def validate(self) -> None:
        """Refuse settings the server cannot run with safely."""
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
        if self.jwt_secret is not None and len(str(self.jwt_secret).encode()) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"CHATBOT_JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes; "
                "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        if not 0 <= self.jwt_leeway <= MAX_LEEWAY_SECONDS:
            raise ConfigError(
                f"CHATBOT_JWT_LEEWAY must be between 0 and {MAX_LEEWAY_SECONDS} seconds"
            )
        # One kind of key only: a secret for HS*, a public key or a JWKS URL for the others.
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
        if self.jwt_jwks_url is not None:
            check_jwks_url(self.jwt_jwks_url)
        if not 1 <= self.jwt_jwks_refresh_seconds <= MAX_JWKS_REFRESH_SECONDS:
            raise ConfigError(
                "CHATBOT_JWT_JWKS_REFRESH_SECONDS must be between 1 and "
                f"{MAX_JWKS_REFRESH_SECONDS} seconds"
            )
        for name in (
            "max_message_chars",
            "max_frame_bytes",
            "context_messages",
            "session_queue_size",
            "max_body_bytes",
            "rate_limit_per_minute",
            "max_sockets_per_user",
            "max_sessions_per_user",
            "max_pending_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"CHATBOT_{name.upper()} must be at least 1")
        if self.flood_tolerance < 0:
            raise ConfigError("CHATBOT_FLOOD_TOLERANCE must be 0 or more")
        if not 0 < self.idle_timeout < float("inf"):
            raise ConfigError("CHATBOT_IDLE_TIMEOUT must be a number of seconds above 0")
        for origin in self.allowed_origins:
            if origin != ANY_ORIGIN and normalize_origin(origin) is None:
                raise ConfigError(
                    f"CHATBOT_ALLOWED_ORIGINS: {origin!r} is not an origin; write "
                    "scheme://host[:port], e.g. https://chat.example.com, or * for any"
                )
        if not 0 < self.send_timeout < float("inf"):
            raise ConfigError("CHATBOT_SEND_TIMEOUT must be a number of seconds above 0")
        if not 0 < self.link_ttl < float("inf"):
            raise ConfigError("CHATBOT_LINK_TTL must be a number of seconds above 0")
        if (self.oidc_issuer is None) != (self.oidc_client_id is None):
            raise ConfigError(
                "set both CHATBOT_OIDC_ISSUER and CHATBOT_OIDC_CLIENT_ID for sign-in with "
                "OpenID Connect, or neither"
            )
        if self.oidc_token not in ("access", "id"):
            raise ConfigError(
                f"CHATBOT_OIDC_TOKEN must be 'access' or 'id', got {self.oidc_token!r}"
            )
        if self.oidc_issuer is not None:
            self._validate_oidc(self.oidc_issuer)
        if self.shutdown_grace < 0:
            raise ConfigError("CHATBOT_SHUTDOWN_GRACE must be a number of seconds >= 0")
        if not 0 < self.port < 65536:
            raise ConfigError("CHATBOT_PORT must be between 1 and 65535")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(
                f"CHATBOT_LOG_LEVEL {self.log_level!r} is not a log level; choose one of "
                + ", ".join(LOG_LEVELS)
            )
        if not self.backends:
            raise ConfigError("no backends are configured; add a [backends.NAME] table")
        if self.default_backend not in self.backends:
            raise ConfigError(
                f"no backend named {self.default_backend!r}; the configured backends are: "
                + ", ".join(sorted(self.backends))
            )
        for config in self.backends.values():
            for name in config.fallback:
                if name == config.name or name not in self.backends:
                    raise ConfigError(
                        f"[backends.{config.name}]: fallback {name!r} is not another "
                        "configured backend; the configured backends are: "
                        + ", ".join(sorted(self.backends))
                    )

    def _validate_oidc(self, issuer: str) -> None:
        check_issuer(issuer)
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


def load_backends_file(path: Path) -> dict[str, Any]:
    """Read ``default_backend`` and the ``[backends.NAME]`` tables of a TOML file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    known = {"default_backend", "backends"}
    extra = set(data) - known
    if extra:
        raise ConfigError(
            f"{path}: unknown top-level key {sorted(extra)[0]!r}; "
            "expected default_backend and [backends.NAME] tables"
        )
    values: dict[str, Any] = {}
    tables = data.get("backends")
    if tables is not None:
        if not isinstance(tables, dict) or not tables:
            raise ConfigError(f"{path}: [backends] must hold at least one [backends.NAME] table")
        backends: dict[str, BackendConfig] = {}
        for name, table in tables.items():
            if not isinstance(table, dict):
                raise ConfigError(f"{path}: [backends.{name}] must be a table")
            backends[name] = BackendConfig.from_table(name, table, str(path))
        values["backends"] = backends
        values["default_backend"] = next(iter(backends))
    default = data.get("default_backend")
    if default is not None:
        if not isinstance(default, str):
            raise ConfigError(f"{path}: default_backend must be a string")
        values["default_backend"] = default
    return values


def with_jwt_secret(settings: Settings) -> tuple[Settings, str | None]:
    """Return settings that hold a JWT secret, creating one in the data directory if needed.

    The second item is a line to show the operator when the secret came from (or was just
    written to) the data directory, ``None`` otherwise. Only HMAC algorithms need a secret.
    """
    if settings.jwt_secret is not None or not settings.uses_hmac:
        return settings, None
    path = settings.secret_file
    hint = "get a token with: chatbot token --sub you"
    if not path.is_file():
        value = secrets.token_urlsafe(48)
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # O_EXCL: when two processes start at once, one writes and both read its secret.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            if not path.is_file():
                raise ConfigError(
                    f"cannot write a JWT secret to {path}: {why_not_created(path.parent, exc)}; "
                    "make CHATBOT_DATA_DIR a writable directory, or set CHATBOT_JWT_SECRET"
                ) from None
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(value + "\n")
            note = f"Generated a JWT secret in {path} (mode 0600); {hint}"
            return replace(settings, jwt_secret=Secret(value)), note
    value = _read_secret_file(path)
    return replace(settings, jwt_secret=Secret(value)), f"Using the JWT secret in {path}; {hint}"


def read_jwt_secret(settings: Settings) -> Settings:
    """Settings that hold the server's JWT secret, for commands that mint tokens beside a
    server (``chatbot token``, ``chatbot open``, ``chatbot chat``). Unlike
    :func:`with_jwt_secret` this never creates a secret: one made here would sign tokens
    that the server, using another, refuses."""
    if not settings.uses_hmac:
        raise ConfigError(
            "tokens are signed with the shared secret (HS*) only; with public-key algorithms "
            "your identity provider issues the tokens"
        )
    if settings.jwt_secret is not None:
        return settings
    path = settings.secret_file
    if not path.is_file():
        raise ConfigError(
            f"no JWT secret: CHATBOT_JWT_SECRET is unset and {path.resolve()} does not exist. "
            "Run this command in the directory where `chatbot serve` runs (it creates that "
            "file on its first start), or set CHATBOT_DATA_DIR or CHATBOT_JWT_SECRET as the "
            "server has them"
        )
    return replace(settings, jwt_secret=Secret(_read_secret_file(path)))


def _read_secret_file(path: Path) -> str:
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the JWT secret in {path}: {exc}") from None
    if len(value.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the JWT secret in {path} is shorter than {MIN_SECRET_BYTES} bytes; "
            "delete the file to have a new one generated"
        )
    return value
