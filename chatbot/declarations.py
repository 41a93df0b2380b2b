"""Settings declared once: a dataclass field made by :func:`setting` carries its default,
its :class:`Bound` and a line of documentation; its type is the field's annotation.

:func:`declared_variables` resolves a dataclass's fields into :class:`Variable` objects,
from which the settings read the environment, check their bounds and write their
documentation's table.
"""

from __future__ import annotations

import ipaddress
import math
import re
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar, get_args, get_type_hints

from starlette.datastructures import Secret

from chatbot.errors import ConfigError
from chatbot.origins import ANY_ORIGIN, normalize_origin

T = TypeVar("T")


class Bound(Protocol):
    """A rule one setting's value must follow, and how the documentation states it."""

    @property
    def accepts(self) -> str:
        """The rule in the documentation's words."""
        ...

    def check(self, variable: str, value: Any) -> None:
        """Raise :class:`ConfigError` naming ``variable`` when ``value`` breaks the rule."""
        ...


@dataclass(frozen=True)
class AtLeast:
    """A whole number no smaller than ``low``."""

    low: int

    @property
    def accepts(self) -> str:
        return f"a whole number, at least {self.low}"

    def check(self, variable: str, value: Any) -> None:
        if not value >= self.low:
            raise ConfigError(f"{variable} must be at least {self.low}")


@dataclass(frozen=True)
class Between:
    """A number from ``low`` to ``high``, both included."""

    low: int
    high: int
    unit: str = ""

    @property
    def accepts(self) -> str:
        return f"{self.low} to {self.high}{self.unit}"

    def check(self, variable: str, value: Any) -> None:
        if not self.low <= value <= self.high:
            raise ConfigError(f"{variable} must be between {self.low} and {self.high}{self.unit}")


@dataclass(frozen=True)
class Seconds:
    """A duration: above 0 and finite, or with ``zero``, 0 or more."""

    zero: bool = False

    @property
    def accepts(self) -> str:
        return "seconds, 0 or more" if self.zero else "seconds, above 0"

    def check(self, variable: str, value: Any) -> None:
        if self.zero and not value >= 0:
            raise ConfigError(f"{variable} must be a number of seconds >= 0")
        if not self.zero and not 0 < value < math.inf:
            raise ConfigError(f"{variable} must be a number of seconds above 0")


@dataclass(frozen=True)
class OneOf:
    """One of ``choices``; ``what`` names them in the error message."""

    choices: tuple[str, ...]
    what: str
    ignore_case: bool = False

    @property
    def accepts(self) -> str:
        return ", ".join(f"`{choice}`" for choice in self.choices)

    def check(self, variable: str, value: Any) -> None:
        if (value.lower() if self.ignore_case else value) not in self.choices:
            raise ConfigError(
                f"{variable} {value!r} is not {self.what}; choose one of " + ", ".join(self.choices)
            )


@dataclass(frozen=True)
class LongSecret:
    """A secret of at least ``least`` bytes (UTF-8), never repeated in the message."""

    least: int

    @property
    def accepts(self) -> str:
        return f"at least {self.least} bytes"

    def check(self, variable: str, value: Any) -> None:
        if len(str(value).encode()) < self.least:
            raise ConfigError(
                f"{variable} is shorter than {self.least} bytes; generate one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )


@dataclass(frozen=True)
class Origins:
    """Browser origins, ``scheme://host[:port]``, or ``*`` for any."""

    @property
    def accepts(self) -> str:
        return "comma-separated origins (`https://chat.example.com`), or `*`"

    def check(self, variable: str, value: Any) -> None:
        for origin in value:
            if origin != ANY_ORIGIN and normalize_origin(origin) is None:
                raise ConfigError(
                    f"{variable}: {origin!r} is not an origin; write "
                    "scheme://host[:port], e.g. https://chat.example.com, or * for any"
                )


@dataclass(frozen=True)
class Addresses:
    """IP addresses or networks (``10.0.0.0/8``), or ``*`` for any."""

    @property
    def accepts(self) -> str:
        return "comma-separated IP addresses or networks (`127.0.0.1`, `10.0.0.0/8`), or `*`"

    def check(self, variable: str, value: Any) -> None:
        for address in value:
            if address == "*":
                continue
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ConfigError(
                    f"{variable}: {address!r} is not an IP address or network; write e.g. "
                    "127.0.0.1, ::1 or 10.0.0.0/8, or * for any"
                ) from None


@dataclass(frozen=True)
class Checked:
    """A value that ``function`` accepts; it raises :class:`ConfigError` itself."""

    function: Callable[[str], None]
    accepts: str

    def check(self, variable: str, value: Any) -> None:
        self.function(value)


_DECLARED = "chatbot.setting"


@dataclass(frozen=True)
class Declared:
    """What a :func:`setting` declares besides its default and type."""

    #: One line of Markdown for the documentation (links relative to docs/).
    doc: str
    bound: Bound | None = None
    #: The variable's name after the prefix, when it is not the field's name.
    variable: str | None = None
    #: Turns the variable's text into the value; by default the field's type does.
    parse: Callable[[str, str], Any] | None = None
    #: The documentation's words for the default and for what the variable accepts, when
    #: the value and the type or bound do not say it.
    shown_default: str | None = None
    accepts: str | None = None
    #: Read by the settings' own code (it needs other settings or files), not by its parser.
    by_hand: bool = False


def declared(doc: str, **details: Any) -> dict[str, Declared]:
    """A field's metadata declaring it as a setting (see :class:`Declared`)."""
    return {_DECLARED: Declared(doc, **details)}


def setting(default: T, doc: str, *, repr: bool = True, **details: Any) -> T:
    """A dataclass field declared as a setting: its default, one line of documentation and,
    optionally, a ``bound`` and the other :class:`Declared` details."""
    return field(default=default, repr=repr, metadata=declared(doc, **details))


@dataclass(frozen=True)
class Variable:
    """One environment variable, as :func:`declared_variables` resolves its declaration."""

    #: The field it sets, and its own name.
    field: str
    name: str
    default: Any
    #: Turns its text into the field's value; ``None``: read by hand (``by_hand``).
    parse: Callable[[str, str], Any] | None
    bound: Bound | None
    #: The documentation's words for the default and for what the variable accepts.
    shown_default: str
    accepts: str
    doc: str


def _number(kind: Callable[[str], Any]) -> Callable[[str, str], Any]:
    def parse(variable: str, raw: str) -> Any:
        try:
            return kind(raw)
        except ValueError:
            raise ConfigError(f"{variable} must be a number, got {raw!r}") from None

    return parse


def _flag(variable: str, raw: str) -> bool:
    if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise ConfigError(f"{variable} must be true or false, got {raw!r}")
    return raw.lower() in ("1", "true", "yes")


def _comma_separated(variable: str, raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


#: How a variable of each field type is read, and the documentation's words for it.
_TYPES: dict[object, tuple[Callable[[str, str], Any], str]] = {
    str: (lambda variable, raw: raw, "text"),
    int: (_number(int), "a whole number"),
    float: (_number(float), "a number"),
    bool: (_flag, "`true` or `false`"),
    Path: (lambda variable, raw: Path(raw), "a path"),
    Secret: (lambda variable, raw: Secret(raw), "text"),
    tuple[str, ...]: (_comma_separated, "a comma-separated list"),
}


def _type_of(hint: object) -> object:
    """``X`` for ``X | None``: a variable sets a value, never ``None`` (unset: the default)."""
    present = [arg for arg in get_args(hint) if arg is not type(None)]
    if isinstance(hint, types.UnionType) and len(present) == 1:
        return present[0]
    return hint


def _shown(value: Any) -> str:
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, tuple):
        value = ",".join(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def declared_variables(cls: type, prefix: str) -> tuple[Variable, ...]:
    """The variables of the dataclass ``cls``, in the order of its fields; every field must
    be declared with :func:`setting` (or carry :func:`declared` metadata)."""
    hints = get_type_hints(cls)
    found = []
    for spec in fields(cls):
        declared: Declared | None = spec.metadata.get(_DECLARED)
        if declared is None:
            raise TypeError(f"{cls.__name__}.{spec.name} is not declared with setting()")
        default = spec.default_factory() if callable(spec.default_factory) else spec.default
        parse, kind = _TYPES.get(_type_of(hints[spec.name]), (None, ""))
        if not declared.by_hand and declared.parse is None and parse is None:
            raise TypeError(f"{cls.__name__}.{spec.name}: no parser for {hints[spec.name]}")
        found.append(
            Variable(
                field=spec.name,
                name=prefix + (declared.variable or spec.name.upper()),
                default=default,
                parse=None if declared.by_hand else declared.parse or parse,
                bound=declared.bound,
                shown_default=declared.shown_default or _shown(default),
                accepts=declared.accepts
                or (declared.bound.accepts if declared.bound is not None else kind),
                doc=declared.doc,
            )
        )
    return tuple(found)


def table_row(variable: Variable, links_under: str = "") -> str:
    """``variable``'s row of the Markdown table; ``links_under`` prefixes relative links
    (``docs/`` for a page outside docs/)."""
    doc = re.sub(r"\]\((?![a-z]+:|#)", f"]({links_under}", variable.doc)
    cells = (f"`{variable.name}`", variable.shown_default, variable.accepts, doc)
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def markdown_table(variables: Sequence[Variable]) -> str:
    """The Markdown table of ``variables``: name, default, what it accepts, meaning."""
    lines = ["| variable | default | accepts | meaning |", "|---|---|---|---|"]
    lines += [table_row(variable) for variable in variables]
    return "\n".join(lines)
