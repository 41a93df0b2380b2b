"""The PostgreSQL store's escape of U+0000: any string and any JSON value round trip, and
nothing stored holds U+0000. Pure functions: no server needed."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from chatbot.stores.postgres_codecs import MARK, decode_json, encode_json, escape, unescape

# Strings rich in the characters that matter, and any other.
TEXT = st.text(alphabet=st.sampled_from(["\x00", MARK, "0", "m", "a", "\\", "é"])) | st.text()
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


@given(TEXT)
def test_any_string_round_trips_without_nul(text: str) -> None:
    stored = escape(text)
    assert "\x00" not in stored
    assert unescape(stored) == text


def test_plain_text_is_stored_unchanged() -> None:
    assert escape("plain text, ünïcode 🙂") == "plain text, ünïcode 🙂"
    assert escape("a\x00b") == f"a{MARK}0b"
    assert escape(f"{MARK}0") == f"{MARK}m0"


def _stored_json(value: Any) -> str:
    """What PostgreSQL would keep of encode_json's text (it refuses \\u0000)."""
    text = encode_json(value)
    assert "\\u0000" not in text.replace("\\\\", "")
    return json.dumps(json.loads(text), ensure_ascii=False)


@given(JSON)
def test_any_json_value_round_trips_without_nul(value: Any) -> None:
    assert decode_json(_stored_json(value)) == value
