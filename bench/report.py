"""Rows of figures, their targets, and the two ways out: a JSON file and a Markdown table."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One figure of chatbot beside its reference (the bare stack's unless ``reference``
    says otherwise), and the target it is held to, if any."""

    scenario: str
    what: str
    unit: str
    chatbot: float
    bare: float | None = None
    #: What the ``bare`` figure is: "bare", or another chatbot figure ("new session"...).
    reference: str | None = "bare"
    target: str | None = None
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        """chatbot / reference; None without a reference."""
        if self.bare is None:
            return None
        if self.bare == 0 or not math.isfinite(self.bare) or not math.isfinite(self.chatbot):
            return math.nan
        return self.chatbot / self.bare

    def at_least(self, fraction: float, shown: str | None = None) -> Row:
        """Target: chatbot >= ``fraction`` x the reference (rates); ``shown``: how to write
        the fraction, when not as a decimal."""
        ratio = self.ratio
        self.target = f"ratio >= {shown or format(fraction, 'g')}"
        self.met = ratio is not None and math.isfinite(ratio) and ratio >= fraction
        return self

    def at_most(self, fraction: float) -> Row:
        """Target: chatbot <= ``fraction`` x the reference (latencies, memory)."""
        ratio = self.ratio
        self.target = f"ratio <= {fraction:g}"
        self.met = ratio is not None and math.isfinite(ratio) and ratio <= fraction
        return self

    def held_to(self, target: str, met: bool) -> Row:
        """A target that is not a plain ratio, described in words."""
        self.target = target
        self.met = met
        return self

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        # JSON has no NaN: a figure that could not be measured is null.
        finite: dict[str, Any] = _finite(data)
        return finite


@dataclass
class Outcome:
    """What a scenario produced: its rows, and the raw figures of each round for the JSON."""

    rows: list[Row]
    details: dict[str, Any] = field(default_factory=dict)


def number(value: float | None, unit: str = "") -> str:
    """A figure for people: three significant digits or so, thousands separated."""
    if value is None:
        return ""
    if not math.isfinite(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 100:
        text = f"{value:,.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 0.1 or magnitude == 0:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".strip()


def markdown(rows: list[Row]) -> str:
    """The table: what, bare (or the reference named), chatbot, ratio, target, met."""
    lines = [
        "| what | bare (or reference) | chatbot | ratio | target | met |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in rows:
        bare = number(row.bare, row.unit)
        if bare and row.reference not in (None, "bare"):
            bare = f"{row.reference}: {bare}"
        ratio = "" if row.ratio is None else number(row.ratio)
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        chatbot = number(row.chatbot, row.unit)
        lines.append(
            f"| {row.scenario}: {row.what} | {bare} | {chatbot} | {ratio} | {row.target or ''} "
            f"| {met} |"
        )
    return "\n".join(lines) + "\n"


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity turned into null, which JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(document), indent=2, allow_nan=False) + "\n")
