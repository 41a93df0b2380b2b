"""The stores' tables as rows, for copying a database to another store (``chatbot
copy-store``): every table the stores share, its columns, and the two things each store
does with rows.

A row is a dict of plain Python values, the same whichever store it comes from: text is
``str``, a timestamp an aware ``datetime``, a day a ``date``, JSON a Python object, a number
``int``. Each store turns them into its own columns (SQLite's ISO text and JSON text,
PostgreSQL's ``timestamptz``, ``date`` and ``jsonb``) and adds what it derives
(PostgreSQL's search vectors).

A table added to both stores' schemas is copied once it is one more :class:`Table` in
:data:`TABLES`, after the tables it refers to. The per-user limits' tables are not there:
they hold the last minute's counts and the open sockets of running servers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast, get_args

Kind = Literal["text", "int", "time", "day", "json"]
Row = dict[str, Any]


@dataclass(frozen=True)
class Table:
    """A table copied as it is: its rows in ``key`` order (its primary key's columns), each
    one inserted unless the target holds its key already."""

    name: str
    key: tuple[str, ...]
    columns: tuple[tuple[str, Kind], ...]
    #: The key is a number the database counts up (a message id): after a copy, the
    #: target's next one must be above every copied one.
    counted: bool = False

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def key_kinds(self) -> list[Kind]:
        kinds = dict(self.columns)
        return [kinds[name] for name in self.key]

    def key_of(self, row: Row) -> tuple[Any, ...]:
        return tuple(row[name] for name in self.key)


def _columns(spec: str) -> tuple[tuple[str, Kind], ...]:
    """``"id text, created_at time"`` as ``(("id", "text"), ("created_at", "time"))``."""
    columns = []
    for column in spec.split(","):
        name, kind = column.split()
        if kind not in get_args(Kind):
            raise ValueError(f"{name}: no kind {kind!r}")
        columns.append((name, cast(Kind, kind)))
    return tuple(columns)


TABLES: tuple[Table, ...] = (
    Table(
        "sessions",
        key=("id",),
        columns=_columns(
            "id text, owner text, title text, backend text, model text, system_prompt text, "
            "created_at time, updated_at time, message_count int, leaf_id int"
        ),
    ),
    # In id order, a message comes after its parent and after the message it answers.
    Table(
        "messages",
        key=("id",),
        counted=True,
        columns=_columns(
            "id int, session_id text, parent_id int, role text, content text, status text, "
            "client_id text, reply_to int, backend text, model text, usage json, "
            "created_at time"
        ),
    ),
    Table(
        "shares",
        key=("id",),
        columns=_columns(
            "id text, session_id text, owner text, title text, created_at time, messages json"
        ),
    ),
    Table(
        "usage_totals",
        key=("owner", "day", "backend", "model"),
        columns=_columns(
            "owner text, day day, backend text, model text, input_tokens int, "
            "output_tokens int, replies int"
        ),
    ),
    Table(
        "quota_overrides",
        key=("user_id",),
        columns=_columns("user_id text, tokens_per_day int, tokens_per_month int, updated_at time"),
    ),
)


class Rows(Protocol):
    """What copying needs of a store: its rows out, rows in."""

    async def pending_migrations(self) -> list[str]:
        """The store's migrations its database has not applied."""
        ...

    async def read(self, table: Table, after: tuple[Any, ...] | None, limit: int) -> list[Row]:
        """At most ``limit`` rows of ``table`` whose key is above ``after`` (``None``: from
        the first), in key order."""
        ...

    async def write(self, table: Table, rows: list[Row]) -> int:
        """Insert, in one transaction, those of ``rows`` whose key the table does not
        hold; how many that was."""
        ...

    async def finish(self, table: Table) -> None:
        """After the last rows of ``table``: move what counts its keys past them."""
        ...
