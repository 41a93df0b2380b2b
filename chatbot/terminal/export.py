"""``/export FILE``: which format a file name asks for, and writing the file without
replacing one that exists unless asked to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from chatbot.terminal.errors import ChatError
from chatbot.terminal.screen import printable

Format = Literal["json", "markdown"]
MARKDOWN_SUFFIXES = (".md", ".markdown")


def export_format(name: str) -> Format:
    """Markdown (the current branch) for a name ending in ``.md`` or ``.markdown``, in any
    case; JSON (the whole conversation, which imports back) for any other name."""
    return "markdown" if name.lower().endswith(MARKDOWN_SUFFIXES) else "json"


def json_text(export: dict[str, Any]) -> bytes:
    """A JSON export as it is written to a file: indented, so that it reads and diffs well,
    in UTF-8, ending with a line break."""
    return (json.dumps(export, ensure_ascii=False, indent=2) + "\n").encode()


def write_file(name: str, content: bytes, *, replace: bool) -> Path:
    """Write ``content`` to the file ``name`` (``~`` expanded) and return its path.

    An existing file is kept unless ``replace``: the error says how to replace it. Raises
    ChatError naming the file and what went wrong."""
    path = Path(name).expanduser()
    shown = printable(name)
    if path.is_dir():
        raise ChatError(f"cannot write {shown}: it is a directory; name a file in it")
    try:
        with path.open("wb" if replace else "xb") as file:
            file.write(content)
    except FileExistsError:
        raise ChatError(f"{shown} already exists; /export! {shown} replaces it") from None
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ChatError(f"cannot write {shown}: {why}") from None
    return path
