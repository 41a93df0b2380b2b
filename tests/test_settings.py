"""Settings from ``CHATBOT_*`` variables, a ``.env`` file and the backends' TOML file."""

from __future__ import annotations

import operator
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from starlette.datastructures import Secret

from chatbot.declarations import AtLeast, Seconds, Variable, table_row
from chatbot.echo import EchoBackend
from chatbot.errors import ConfigError
from chatbot.settings import (
    TABLE_END,
    TABLE_START,
    BackendConfig,
    Settings,
    markdown_table,
    variables,
    with_table,
)

SECRET = "a-secret-that-is-long-enough-for-hs256-0123456789"


@pytest.fixture(autouse=True)
def scratch_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory: ``./chatbot.toml`` is read when it exists."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def from_env(**environ: str) -> Settings:
    return Settings.from_env(environ=environ, env_file=None)


def config_error(**environ: str) -> str:
    with pytest.raises(ConfigError) as raised:
        from_env(**environ)
    return str(raised.value)


def test_defaults() -> None:
    settings = from_env()
    assert settings.jwt_algorithms == ("HS256",)
    assert settings.jwt_leeway == 30
    assert settings.jwt_secret is None
    assert settings.jwt_user_claim == "sub"
    assert settings.database_url == "sqlite:///./chatbot.db"
    assert settings.default_backend == "echo"
    assert dict(settings.backends) == {"echo": BackendConfig(name="echo", type="echo")}
    assert settings.data_dir == Path(".chatbot")
    assert settings.secret_file == Path(".chatbot/jwt-secret")
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.auto_migrate is True


def test_variables_are_read() -> None:
    settings = from_env(
        CHATBOT_JWT_SECRET=SECRET,
        CHATBOT_JWT_LEEWAY="12.5",
        CHATBOT_JWT_AUDIENCE="chat",
        CHATBOT_DATABASE_URL="sqlite:////var/lib/chatbot/x.db",
        CHATBOT_PORT="9000",
        CHATBOT_MAX_MESSAGE_CHARS="100",
        CHATBOT_AUTO_MIGRATE="no",
        CHATBOT_DATA_DIR="/srv/chatbot",
        CHATBOT_HOST="",  # empty means unset
    )
    assert str(settings.jwt_secret) == SECRET
    assert settings.jwt_leeway == 12.5
    assert settings.jwt_audience == "chat"
    assert settings.database_url == "sqlite:////var/lib/chatbot/x.db"
    assert settings.port == 9000
    assert settings.max_message_chars == 100
    assert settings.auto_migrate is False
    assert settings.secret_file == Path("/srv/chatbot/jwt-secret")
    assert settings.host == "127.0.0.1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("HS256,HS512", ("HS256", "HS512")),
        (" HS384 , HS256 ,", ("HS384", "HS256")),
        ("RS256,ES256", ("RS256", "ES256")),
    ],
)
def test_algorithms_are_comma_separated(raw: str, expected: tuple[str, ...]) -> None:
    assert from_env(CHATBOT_JWT_ALGORITHMS=raw).jwt_algorithms == expected


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("JWT_LEEWAY", "soon"),
        ("PORT", "80.5"),
        ("PORT", "http"),
        ("MAX_MESSAGE_CHARS", "lots"),
        ("MAX_FRAME_BYTES", "1MB"),
        ("CONTEXT_MESSAGES", "1e3"),
        ("SESSION_QUEUE_SIZE", "four"),
    ],
)
def test_an_invalid_number_names_the_variable(name: str, raw: str) -> None:
    message = config_error(**{f"CHATBOT_{name}": raw})
    assert message == f"CHATBOT_{name} must be a number, got {raw!r}"


@pytest.mark.parametrize(
    ("name", "raw"),
    [("PORT", "0"), ("PORT", "70000"), ("CONTEXT_MESSAGES", "0"), ("MAX_FRAME_BYTES", "-1")],
)
def test_a_number_out_of_range_names_the_variable(name: str, raw: str) -> None:
    assert f"CHATBOT_{name} must be" in config_error(**{f"CHATBOT_{name}": raw})


def test_auto_migrate_must_be_a_boolean() -> None:
    assert "CHATBOT_AUTO_MIGRATE must be true or false" in config_error(
        CHATBOT_AUTO_MIGRATE="sometimes"
    )


@pytest.mark.parametrize("raw", ["none", "HS256,none", "NONE", "None,RS256"])
def test_algorithm_none_is_refused(raw: str) -> None:
    assert config_error(CHATBOT_JWT_ALGORITHMS=raw) == (
        "CHATBOT_JWT_ALGORITHMS must not allow 'none'"
    )


@pytest.mark.parametrize("raw", ["HS256,RS256", "ES256,HS512"])
def test_mixed_algorithm_families_are_refused(raw: str) -> None:
    message = config_error(CHATBOT_JWT_ALGORITHMS=raw)
    assert "mixes HMAC (HS*) and public-key algorithms" in message
    assert "allow one family only" in message


def test_an_unknown_algorithm_is_refused() -> None:
    message = config_error(CHATBOT_JWT_ALGORITHMS="HS257")
    assert message.startswith("unknown JWT algorithm 'HS257'; choose from ")
    assert "HS256" in message


def test_empty_algorithm_list_is_refused() -> None:
    assert "CHATBOT_JWT_ALGORITHMS is empty" in config_error(CHATBOT_JWT_ALGORITHMS=" , ")


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("x" * 31, id="31-ascii"),
        pytest.param("é" * 15, id="15-two-byte-chars"),
    ],
)
def test_a_short_secret_is_refused(secret: str) -> None:
    message = config_error(CHATBOT_JWT_SECRET=secret)
    assert "CHATBOT_JWT_SECRET is shorter than 32 bytes" in message
    assert secret not in message


@pytest.mark.parametrize(
    "secret",
    [pytest.param("x" * 32, id="32-ascii"), pytest.param("é" * 16, id="16-two-byte-chars")],
)
def test_a_32_byte_secret_is_accepted(secret: str) -> None:
    assert str(from_env(CHATBOT_JWT_SECRET=secret).jwt_secret) == secret


@pytest.mark.parametrize(
    ("raw", "accepted"), [("0", True), ("60", True), ("61", False), ("-1", False)]
)
def test_leeway_is_at_most_60_seconds(raw: str, accepted: bool) -> None:
    if accepted:
        assert from_env(CHATBOT_JWT_LEEWAY=raw).jwt_leeway == float(raw)
    else:
        assert config_error(CHATBOT_JWT_LEEWAY=raw) == (
            "CHATBOT_JWT_LEEWAY must be between 0 and 60 seconds"
        )


def test_the_secret_stays_out_of_repr() -> None:
    settings = from_env(CHATBOT_JWT_SECRET=SECRET)
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert "jwt_secret=Secret('**********')" in repr(settings)
    assert str(settings.jwt_secret) == SECRET


TWO_BACKENDS = """\
default_backend = "slow"

[backends.fast]
type = "echo"

[backends.slow]
type = "echo"
delay = 0.5
model = "echo"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_backends_from_chatbot_config(tmp_path: Path) -> None:
    path = write(tmp_path / "elsewhere.toml", TWO_BACKENDS)
    settings = from_env(CHATBOT_CONFIG=str(path))
    assert list(settings.backends) == ["fast", "slow"]
    assert settings.backends["fast"] == BackendConfig(name="fast", type="echo", options={})
    assert settings.backends["slow"] == BackendConfig(
        name="slow", type="echo", options={"delay": 0.5, "model": "echo"}
    )
    assert settings.default_backend == "slow"


def test_the_first_backend_is_the_default_unless_named(tmp_path: Path) -> None:
    text = TWO_BACKENDS.replace('default_backend = "slow"\n', "")
    path = write(tmp_path / "b.toml", text)
    assert from_env(CHATBOT_CONFIG=str(path)).default_backend == "fast"


def test_chatbot_toml_in_the_working_directory_is_read(scratch_cwd: Path) -> None:
    write(scratch_cwd / "chatbot.toml", TWO_BACKENDS)
    settings = from_env()
    assert list(settings.backends) == ["fast", "slow"]
    assert settings.default_backend == "slow"


def test_chatbot_backend_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "b.toml", TWO_BACKENDS)
    assert from_env(CHATBOT_CONFIG=str(path), CHATBOT_BACKEND="fast").default_backend == "fast"


def test_an_unknown_default_backend_names_the_configured_ones(tmp_path: Path) -> None:
    path = write(tmp_path / "b.toml", TWO_BACKENDS)
    assert config_error(CHATBOT_CONFIG=str(path), CHATBOT_BACKEND="fsat") == (
        "no backend named 'fsat'; the configured backends are: fast, slow"
    )


def test_chatbot_config_to_a_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    assert config_error(CHATBOT_CONFIG=missing) == (
        f"CHATBOT_CONFIG points at {missing!r}, which is not a file"
    )


def test_a_backend_without_type(tmp_path: Path) -> None:
    path = write(tmp_path / "b.toml", "[backends.x]\ndelay = 1\n")
    message = config_error(CHATBOT_CONFIG=str(path))
    assert message.startswith(f"{path}: [backends.x] needs a type")
    assert "chatbot backends" in message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('default_backends = "x"\n', "unknown top-level key 'default_backends'"),
        ("[backends\n", "cannot read"),
        ("backends = {}\n", "must hold at least one [backends.NAME] table"),
        ("default_backend = 3\n", "default_backend must be a string"),
    ],
)
def test_a_malformed_backends_file(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path / "b.toml", text)
    message = config_error(CHATBOT_CONFIG=str(path))
    assert str(path) in message
    assert words in message


def test_a_dotenv_file_is_read(tmp_path: Path) -> None:
    env_file = write(
        tmp_path / ".env",
        f"CHATBOT_JWT_SECRET={SECRET}\nCHATBOT_JWT_LEEWAY=5\nCHATBOT_PORT=8123\n",
    )
    settings = Settings.from_env(environ={"CHATBOT_PORT": "9000"}, env_file=env_file)
    assert str(settings.jwt_secret) == SECRET
    assert settings.jwt_leeway == 5
    assert settings.port == 9000  # the environment wins over the file


def test_a_missing_dotenv_file_is_no_error(tmp_path: Path) -> None:
    settings = Settings.from_env(environ={}, env_file=tmp_path / ".env")
    assert settings.jwt_secret is None
    assert settings.port == 8000


def test_a_dotenv_file_as_shells_write_it(tmp_path: Path) -> None:
    env_file = write(
        tmp_path / ".env",
        "# written for `source .env` too\n"
        f"export CHATBOT_JWT_SECRET={SECRET}\n"
        "export CHATBOT_PORT=8123  # the chat server\n"
        "CHATBOT_SYSTEM_PROMPT='Answer in French.'\n"
        'CHATBOT_DATA_DIR="/srv/chat bot"\n'
        "CHATBOT_JWT_AUDIENCE=a$b\n",
    )
    settings = Settings.from_env(environ={}, env_file=env_file)
    assert str(settings.jwt_secret) == SECRET
    assert settings.port == 8123
    assert settings.system_prompt == "Answer in French."
    assert settings.data_dir == Path("/srv/chat bot")
    # Nothing is interpolated: a $ in a value stays a $.
    assert settings.jwt_audience == "a$b"


def test_an_empty_variable_does_not_hide_the_dotenv_value(tmp_path: Path) -> None:
    env_file = write(tmp_path / ".env", "CHATBOT_PORT=8123\nCHATBOT_JWT_LEEWAY=5\n")
    settings = Settings.from_env(
        environ={"CHATBOT_PORT": "", "CHATBOT_JWT_LEEWAY": "7"}, env_file=env_file
    )
    assert settings.port == 8123
    assert settings.jwt_leeway == 7


def test_an_empty_dotenv_value_counts_as_unset(tmp_path: Path) -> None:
    env_file = write(tmp_path / ".env", "CHATBOT_PORT=\nCHATBOT_JWT_SECRET\n")
    settings = Settings.from_env(environ={}, env_file=env_file)
    assert settings.port == 8000
    assert settings.jwt_secret is None


def test_the_dotenv_file_holds_no_vendor_key(tmp_path: Path) -> None:
    env_file = write(tmp_path / ".env", "OPENAI_API_KEY=sk-from-the-file\nCHATBOT_PORT=8123\n")
    environ: dict[str, str] = {}
    Settings.from_env(environ=environ, env_file=env_file)
    # Vendor keys come from the process environment only; the file does not reach it.
    assert environ == {}
    assert os.environ.get("OPENAI_API_KEY") != "sk-from-the-file"


@pytest.mark.parametrize("level", ["info", "DEBUG", "Warning", "trace", "critical", "error"])
def test_log_levels_are_uvicorns(level: str) -> None:
    assert from_env(CHATBOT_LOG_LEVEL=level).log_level == level


def test_an_unknown_log_level_lists_the_valid_ones() -> None:
    assert config_error(CHATBOT_LOG_LEVEL="verbose") == (
        "CHATBOT_LOG_LEVEL 'verbose' is not a log level; choose one of critical, error, "
        "warning, info, debug, trace"
    )


def test_without_backends_a_broken_backends_file_is_not_read(scratch_cwd: Path) -> None:
    write(scratch_cwd / "chatbot.toml", "this is not toml [\n")
    assert "cannot read chatbot.toml" in config_error()
    settings = Settings.from_env(
        environ={"CHATBOT_BACKEND": "claude", "CHATBOT_PORT": "9000"},
        env_file=None,
        with_backends=False,
    )
    assert settings.port == 9000
    assert dict(settings.backends) == {"echo": BackendConfig(name="echo", type="echo")}


# -- every declared variable ---------------------------------------------------------------


def _public_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


NAME = operator.attrgetter("name")
OIDC = {
    "CHATBOT_OIDC_ISSUER": "https://id.example.com",
    "CHATBOT_OIDC_CLIENT_ID": "chat-page",
    "CHATBOT_JWT_AUDIENCE": "chat-api",
}
PEM = _public_pem()
#: For each variable: a value other than the default, the field's value it gives, and the
#: other variables it needs.
SAMPLES: dict[str, tuple[str, object, dict[str, str]]] = {
    "CHATBOT_JWT_SECRET": (SECRET, SECRET, {}),
    "CHATBOT_JWT_ALGORITHMS": ("HS384,HS512", ("HS384", "HS512"), {}),
    "CHATBOT_JWT_AUDIENCE": ("chat", "chat", {}),
    "CHATBOT_JWT_ISSUER": ("https://id.example.com", "https://id.example.com", {}),
    "CHATBOT_JWT_LEEWAY": ("12.5", 12.5, {}),
    "CHATBOT_JWT_USER_CLAIM": ("email", "email", {}),
    "CHATBOT_JWT_PUBLIC_KEY": (PEM, PEM, {"CHATBOT_JWT_ALGORITHMS": "ES256"}),
    "CHATBOT_JWT_JWKS_URL": (
        "https://id.example.com/jwks",
        "https://id.example.com/jwks",
        {"CHATBOT_JWT_ALGORITHMS": "RS256"},
    ),
    "CHATBOT_JWT_JWKS_REFRESH_SECONDS": ("300", 300.0, {}),
    "CHATBOT_DATABASE_URL": ("sqlite:///elsewhere.db", "sqlite:///elsewhere.db", {}),
    "CHATBOT_DATABASE_POOL_SIZE": ("25", 25, {}),
    "CHATBOT_DATA_DIR": ("/srv/chatbot", Path("/srv/chatbot"), {}),
    "CHATBOT_MAX_MESSAGE_CHARS": ("100", 100, {}),
    "CHATBOT_MAX_FRAME_BYTES": ("2048", 2048, {}),
    "CHATBOT_CONTEXT_MESSAGES": ("7", 7, {}),
    "CHATBOT_PROCESS_TIMEOUT": ("30", 30.0, {}),
    "CHATBOT_SESSION_QUEUE_SIZE": ("1", 1, {}),
    "CHATBOT_SHUTDOWN_GRACE": ("0", 0.0, {}),
    "CHATBOT_SYSTEM_PROMPT": ("Answer in French.", "Answer in French.", {}),
    "CHATBOT_AUTO_MIGRATE": ("false", False, {}),
    "CHATBOT_HOST": ("0.0.0.0", "0.0.0.0", {}),  # noqa: S104 (a value, not a bind)
    "CHATBOT_PORT": ("9000", 9000, {}),
    "CHATBOT_FORWARDED_ALLOW_IPS": ("127.0.0.1, 10.0.0.0/8", ("127.0.0.1", "10.0.0.0/8"), {}),
    "CHATBOT_LOG_LEVEL": ("debug", "debug", {}),
    "CHATBOT_LOG_FORMAT": ("json", "json", {}),
    "CHATBOT_LOG_CONTENT": ("true", True, {}),
    "CHATBOT_METRICS": ("false", False, {}),
    "CHATBOT_METRICS_TOKEN": (SECRET, SECRET, {}),
    "CHATBOT_ALLOWED_ORIGINS": ("https://a.example,*", ("https://a.example", "*"), {}),
    "CHATBOT_MAX_BODY_BYTES": ("1000", 1000, {}),
    "CHATBOT_MAX_IMPORT_BYTES": ("2000", 2000, {}),
    "CHATBOT_RATE_LIMIT_PER_MINUTE": ("5", 5, {}),
    "CHATBOT_FLOOD_TOLERANCE": ("0", 0, {}),
    "CHATBOT_MAX_SOCKETS_PER_USER": ("2", 2, {}),
    "CHATBOT_MAX_SESSIONS_PER_USER": ("3", 3, {}),
    "CHATBOT_QUOTA_TOKENS_PER_DAY": ("0", 0, {}),
    "CHATBOT_QUOTA_TOKENS_PER_MONTH": ("2000000", 2_000_000, {}),
    "CHATBOT_QUOTA_CLAIM": ("plan", "plan", {}),
    "CHATBOT_IDLE_TIMEOUT": ("2.5", 2.5, {}),
    "CHATBOT_MAX_PENDING_BYTES": ("4096", 4096, {}),
    "CHATBOT_SEND_TIMEOUT": ("1", 1.0, {}),
    "CHATBOT_WEB_UI": ("no", False, {}),
    "CHATBOT_FRAME_ANCESTORS": ("'self'", "'self'", {}),
    "CHATBOT_LINK_TTL": ("600", 600.0, {}),
    "CHATBOT_OIDC_ISSUER": ("https://id.example.com", "https://id.example.com", OIDC),
    "CHATBOT_OIDC_CLIENT_ID": ("chat-page", "chat-page", OIDC),
    "CHATBOT_OIDC_SCOPES": ("openid", "openid", {}),
    "CHATBOT_OIDC_TOKEN": ("id", "id", {}),
}


@pytest.mark.parametrize("raw", ["127.0.0.1", "::1", "10.0.0.0/8", "fd00::/8", "*"])
def test_forwarded_allow_ips_takes_addresses_networks_or_any(raw: str) -> None:
    assert from_env(CHATBOT_FORWARDED_ALLOW_IPS=raw).forwarded_allow_ips == (raw,)


@pytest.mark.parametrize("raw", ["localhost", "10.0.0.0/33", "127.0.0.1:8000"])
def test_forwarded_allow_ips_refuses_what_is_no_address(raw: str) -> None:
    assert config_error(CHATBOT_FORWARDED_ALLOW_IPS=f"127.0.0.1,{raw}") == (
        f"CHATBOT_FORWARDED_ALLOW_IPS: {raw!r} is not an IP address or network; write e.g. "
        "127.0.0.1, ::1 or 10.0.0.0/8, or * for any"
    )


def test_every_parsed_variable_has_a_sample() -> None:
    parsed = {variable.name for variable in variables() if variable.parse is not None}
    assert parsed == set(SAMPLES)
    by_hand = {variable.name for variable in variables() if variable.parse is None}
    assert by_hand == {"CHATBOT_CONFIG", "CHATBOT_BACKEND", "CHATBOT_TITLE_BACKEND"}


@pytest.mark.parametrize("variable", [v for v in variables() if v.parse is not None], ids=NAME)
def test_every_declared_variable_is_read(variable: Variable) -> None:
    raw, expected, needs = SAMPLES[variable.name]
    assert expected != variable.default
    value = getattr(from_env(**{**needs, variable.name: raw}), variable.field)
    assert (str(value) if isinstance(value, Secret) else value) == expected


@pytest.mark.parametrize(
    "variable", [v for v in variables() if isinstance(v.bound, AtLeast)], ids=NAME
)
def test_every_whole_number_bound_is_checked(variable: Variable) -> None:
    assert isinstance(variable.bound, AtLeast)
    low = variable.bound.low
    assert getattr(from_env(**{variable.name: str(low)}), variable.field) == low
    assert config_error(**{variable.name: str(low - 1)}) == (
        f"{variable.name} must be at least {low}"
    )


@pytest.mark.parametrize(
    "variable", [v for v in variables() if isinstance(v.bound, Seconds)], ids=NAME
)
def test_every_duration_is_checked(variable: Variable) -> None:
    assert isinstance(variable.bound, Seconds)
    if variable.bound.zero:
        assert config_error(**{variable.name: "-0.5"}) == (
            f"{variable.name} must be a number of seconds >= 0"
        )
    else:
        for raw in ("0", "-1", "inf", "nan"):
            assert config_error(**{variable.name: raw}) == (
                f"{variable.name} must be a number of seconds above 0"
            )


def test_a_choice_lists_the_choices() -> None:
    assert config_error(CHATBOT_OIDC_TOKEN="refresh") == (
        "CHATBOT_OIDC_TOKEN 'refresh' is not a kind of token; choose one of access, id"
    )


def test_a_flag_that_is_not_one_names_the_variable() -> None:
    assert config_error(CHATBOT_WEB_UI="maybe") == (
        "CHATBOT_WEB_UI must be true or false, got 'maybe'"
    )


def test_the_public_key_stays_out_of_repr() -> None:
    settings = from_env(CHATBOT_JWT_ALGORITHMS="ES256", CHATBOT_JWT_PUBLIC_KEY=PEM)
    assert settings.jwt_public_key == PEM
    assert "jwt_public_key" not in repr(settings)


# -- the documentation is made of the declarations ------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def test_the_configuration_doc_shows_every_variable_as_declared() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert with_table(doc) == doc, (
        "docs/configuration.md differs from the declarations in chatbot/settings.py; "
        "run: python -m chatbot.settings docs/configuration.md"
    )
    for variable in variables():
        assert f"| `{variable.name}` | {variable.shown_default} |" in doc


def test_the_readme_rows_are_the_declarations() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `CHATBOT_")]
    assert len(rows) >= 5
    by_name = {variable.name: variable for variable in variables()}
    for row in rows:
        name = row.split("`")[1]
        assert row == table_row(by_name[name], "docs/"), f"regenerate the row of {name}"
    assert "[docs/configuration.md](docs/configuration.md)" in section


def test_the_table_links_to_pages_that_exist() -> None:
    for variable in variables():
        for target in re.findall(r"\]\(([^)#]+)", variable.doc):
            assert (ROOT / "docs" / target).is_file(), f"{variable.name} links to {target}"


def test_python_m_chatbot_settings_prints_and_rewrites_the_table(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-W", "error", "-m", "chatbot.settings", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    printed = run()
    assert printed.stdout == markdown_table() + "\n"
    assert printed.stderr == ""
    page = tmp_path / "page.md"
    page.write_text(f"# Title\n\n{TABLE_START}\n| stale |\n{TABLE_END}\n\nAfter.\n")
    run(str(page))
    assert (
        page.read_text() == f"# Title\n\n{TABLE_START}\n{markdown_table()}\n{TABLE_END}\n\nAfter.\n"
    )


# -- imports -----------------------------------------------------------------------------


def chatbot_modules_after_importing(module: str) -> set[str]:
    """The chatbot modules a fresh interpreter holds after importing ``module``."""
    code = (
        f"import sys, {module}; print(*sorted(m for m in sys.modules if m.startswith('chatbot')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(result.stdout.split())


def test_settings_do_not_import_the_limits() -> None:
    loaded = chatbot_modules_after_importing("chatbot.settings")
    assert {"chatbot.limits", "chatbot.middleware"}.isdisjoint(loaded)
    assert "chatbot.origins" in loaded


def test_origins_import_nothing_of_ours() -> None:
    assert chatbot_modules_after_importing("chatbot.origins") == {"chatbot", "chatbot.origins"}


# -- the echo backend's own options ------------------------------------------------------


def test_echo_takes_a_delay() -> None:
    assert EchoBackend("slow", {"delay": 0.25}).delay == 0.25
    assert EchoBackend("fast", {}).delay == 0.0


def test_echo_refuses_an_unknown_option() -> None:
    with pytest.raises(ConfigError) as raised:
        EchoBackend("demo", {"temperature": 0.2})
    assert str(raised.value) == (
        "[backends.demo]: the echo backend has no option 'temperature'; it takes: delay, model"
    )


@pytest.mark.parametrize("delay", [-0.5, -1, "fast", True, None])
def test_echo_refuses_a_bad_delay(delay: object) -> None:
    with pytest.raises(ConfigError) as raised:
        EchoBackend("demo", {"delay": delay})
    assert str(raised.value) == "[backends.demo]: delay must be a number of seconds >= 0"
