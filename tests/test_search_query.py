"""Search queries: what the search box accepts, the FTS5 expression it becomes, excerpts.

The expressions run against a real in-memory SQLite FTS5 table declared as the store
declares ``message_search``, with a plain table standing in for the rows it indexes. Alice
and Bob own copies of the same messages (Bob's ids are Alice's plus 100), so a query that
escaped Alice's scope would return one of Bob's ids.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator

import hypothesis.core
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.vendor import pretty

from chatbot.errors import InvalidRequest
from chatbot.search import (
    MAX_QUERY_CHARS,
    MAX_QUERY_TERMS,
    SearchQuery,
    match_expression,
    parse_query,
    snippet,
)

# Importing schemathesis replaces Hypothesis' printer of failing examples with one that
# prints nothing, for the whole test run; put the original back.
hypothesis.core.RepresentationPrinter = pretty.RepresentationPrinter  # type: ignore[attr-defined]

MESSAGES = {
    1: "Un Café noir",
    2: "L'école ferme à midi",
    3: "NEAR a bridge AND gate, OR NOT x",
    4: "col:abc content:x scope:u41",
    5: "a b c",
    6: "你好世界",
    7: "party 🎉 time",
    8: "שלום עולם",
    9: "ecole primaire",
    10: "ÉCOLE DES BEAUX-ARTS",
    11: "e\u0301cole maternelle",
}
ALICE, BOB = "alice", "bob"
BOB_HEX = "u626F62"
#: A one-character word is matched whole (as a prefix it would match most of everything).
WORD_A = {2, 3, 5}
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None)


@pytest.fixture(scope="module")
def index() -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(":memory:")
    db.executescript(
        """
        CREATE TABLE message_search_rows (id INTEGER PRIMARY KEY, content TEXT, scope TEXT);
        CREATE VIRTUAL TABLE message_search USING fts5(
            content, scope, content='message_search_rows', content_rowid='id',
            tokenize='unicode61 remove_diacritics 2');
        """
    )
    for owner, offset in ((ALICE, 0), (BOB, 100)):
        db.executemany(
            "INSERT INTO message_search_rows VALUES (?, ?, 'u' || hex(?))",
            [(offset + id_, text, owner) for id_, text in MESSAGES.items()],
        )
    db.execute("INSERT INTO message_search(message_search) VALUES ('rebuild')")
    yield db
    db.close()


def search(db: sqlite3.Connection, text: str, owner: str = ALICE) -> set[int]:
    """The ids of ``owner``'s messages that ``text`` finds, as the server would search."""
    query = parse_query(text)
    if query.empty:
        return set()
    rows = db.execute(
        "SELECT rowid FROM message_search WHERE message_search MATCH ?",
        (match_expression(query, owner),),
    )
    return {rowid for (rowid,) in rows}


# --- parse_query ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words", "phrases"),
    [
        ("hello world", ("hello", "world"), ()),
        ('"the cat" sat', ("sat",), (("the", "cat"),)),
        ('a"b"c', ("a", "c"), (("b",),)),
        ('"abc', ("abc",), ()),
        ('sat "the cat', ("sat", "the", "cat"), ()),
        ('"one" "two', ("two",), (("one",),)),
        ("NEAR(a b)", ("NEAR", "a", "b"), ()),
        ("a AND b OR NOT c", ("a", "AND", "b", "OR", "NOT", "c"), ()),
        ("col:abc ^x -y +z (w) v*", ("col", "abc", "x", "y", "z", "w", "v"), ()),
        ("snake_case", ("snake", "case"), ()),
        ("x² Ⅻ", ("x²", "Ⅻ"), ()),
        ("l'école", ("l", "école"), ()),
        ("e\u0301cole", ("école",), ()),
        ("你好 世界", ("你好", "世界"), ()),
        ("a a A", ("a", "A"), ()),
        ('"b c" x "b c"', ("x",), (("b", "c"),)),
        ("caf\x00e", ("caf", "e"), ()),
        ("🎉party🎉", ("party",), ()),
    ],
)
def test_words_and_phrases(text: str, words: tuple[str, ...], phrases: tuple[str, ...]) -> None:
    assert parse_query(text) == SearchQuery(words, phrases)


@pytest.mark.parametrize("text", ["", "   ", '"', '""', '" "', "*", "!?.,;:()[]{}*^-+_'\"", "🎉"])
def test_text_without_words_is_an_empty_query(text: str) -> None:
    query = parse_query(text)
    assert query == SearchQuery()
    assert query.empty


def test_a_query_of_500_characters_is_accepted_and_one_more_is_refused() -> None:
    assert parse_query("a" * MAX_QUERY_CHARS) == SearchQuery(("a" * 500,))
    for length in (MAX_QUERY_CHARS + 1, 10_000):
        with pytest.raises(InvalidRequest) as caught:
            parse_query("a" * length)
        assert caught.value.code == "invalid_query"
        assert caught.value.status == 422
        assert caught.value.message == (
            f"a search query may hold at most 500 characters, this one has {length}: shorten it"
        )


def test_a_query_of_32_terms_is_accepted_and_33_are_refused() -> None:
    words = [f"w{n}" for n in range(MAX_QUERY_TERMS)]
    assert parse_query(" ".join(words)).words == tuple(words)
    assert len(parse_query(" ".join(words[1:]) + ' "two words"').phrases) == 1
    with pytest.raises(InvalidRequest) as caught:
        parse_query(" ".join(words) + ' "one more"')
    assert caught.value.code == "invalid_query"
    assert caught.value.status == 422
    assert caught.value.message == (
        "a search query may hold at most 32 words and quoted phrases, this one has 33: remove some"
    )


def test_a_repeated_word_counts_once() -> None:
    assert parse_query("same " * 100) == SearchQuery(("same",))


# --- match_expression -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("cafe", 'scope : "u616C696365" AND content : ( "cafe"* )'),
        (
            'w1 w2 "p1 p2"',
            'scope : "u616C696365" AND content : ( "w1"* AND "w2"* AND "p1 p2" )',
        ),
        (
            "NEAR(a OR b)",
            'scope : "u616C696365" AND content : ( "NEAR"* AND "a" AND "OR"* AND "b" )',
        ),
        (
            f'x" OR scope:"{BOB_HEX}',
            f'scope : "u616C696365" AND content : ( "x" AND "{BOB_HEX}"* AND "OR scope" )',
        ),
        ("ÉCOLE", 'scope : "u616C696365" AND content : ( "ÉCOLE"* )'),
    ],
)
def test_expression(text: str, expression: str) -> None:
    assert match_expression(parse_query(text), ALICE) == expression


def test_the_scope_is_the_owners_utf8_bytes_in_upper_case_hex() -> None:
    query = SearchQuery(("x",))
    assert match_expression(query, "zoë") == 'scope : "u7A6FC3AB" AND content : ( "x" )'
    assert match_expression(query, "") == 'scope : "u" AND content : ( "x" )'


def test_double_quotes_inside_a_term_are_doubled() -> None:
    query = SearchQuery(('say"hi',), (('a"', "b"),))
    assert match_expression(query, "a") == (
        'scope : "u61" AND content : ( "say""hi"* AND "a"" b" )'
    )


def test_an_empty_query_has_no_expression() -> None:
    with pytest.raises(ValueError, match="an empty query matches nothing"):
        match_expression(SearchQuery(), ALICE)


# --- against FTS5 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('"', set()),
        ('""', set()),
        ('"abc', {4}),
        ('a"b"c', {5}),
        ("*", set()),
        ("a*", WORD_A),
        ("NEAR(a b)", set()),  # "b" is a whole word: message 3 holds "bridge"
        ("a AND", {3}),
        ("OR", {3}),
        ("NOT x", {3}),
        ("col:abc", {4}),
        ("content:x", {4}),
        ("scope:u41", {4}),
        ("^a", WORD_A),
        ("(a", WORD_A),
        ("a)", WORD_A),
        ("-a", WORD_A),
        ("+a", WORD_A),
        ("!?.,;:()[]{}*^-+_'\"", set()),
        ("🎉", set()),
        ("party 🎉", {7}),
        ("noir\x00un", {1}),
        ("שלום", {8}),
        ("עולם", {8}),
        ("ÉCOLE", {2, 9, 10, 11}),
        ("你好", {6}),
        ("你好世界", {6}),
        ('"{NEAR}" ^ (x)', {3}),
    ],
)
def test_hostile_text_finds_the_right_messages(
    index: sqlite3.Connection, text: str, found: set[int]
) -> None:
    assert search(index, text) == found
    assert search(index, text, BOB) == {id_ + 100 for id_ in found}


def test_ten_thousand_characters_are_refused_before_searching(index: sqlite3.Connection) -> None:
    with pytest.raises(InvalidRequest) as caught:
        search(index, "NEAR(" * 2000)
    assert caught.value.code == "invalid_query"


@pytest.mark.parametrize("text", ["ecole", "école", "ÉCOLE", "Ecole", "e\u0301cole", "ECO"])
def test_case_and_accents_do_not_matter(index: sqlite3.Connection, text: str) -> None:
    assert search(index, text) == {2, 9, 10, 11}


def test_words_are_prefixes_and_phrases_exact(index: sqlite3.Connection) -> None:
    assert search(index, "caf") == {1}
    assert search(index, "caf noi") == {1}
    assert search(index, '"cafe noir"') == {1}
    assert search(index, '"CAFÉ NOIR" un') == {1}
    assert search(index, '"caf noir"') == set()
    assert search(index, '"noir cafe"') == set()
    assert search(index, "cafe école") == set()


@pytest.mark.parametrize(
    "text",
    [
        f'x" OR scope:"{BOB_HEX}',
        f'" OR scope : "{BOB_HEX}" OR "',
        f'cafe" OR scope:{BOB_HEX} OR "x',
        f"cafe OR scope:{BOB_HEX}",
        f'cafe) OR (scope:"{BOB_HEX}"',
        f'{{scope content}}: "{BOB_HEX}"',
        f'NOT scope:"u616C696365" AND scope:"{BOB_HEX}"',
        f'- scope : "{BOB_HEX}" *',
        'cafe" OR "',
        'noir"*',
    ],
)
def test_crafted_text_never_reaches_another_owners_messages(
    index: sqlite3.Connection, text: str
) -> None:
    found = search(index, text)
    assert all(id_ < 100 for id_ in found), found
    assert search(index, text, BOB) == {id_ + 100 for id_ in found}


SYNTAX = st.sampled_from(
    [
        *('"', "*", ":", "^", "(", ")", "{", "}", "+", "-", " ", "NEAR", "AND", "OR", "NOT"),
        *("scope", "content", BOB_HEX, "u616C696365", "cafe", "a", "x", "\x00", "é", "\u0301"),
    ]
)


@FUZZ
@given(st.lists(SYNTAX | st.text(max_size=2), max_size=MAX_QUERY_TERMS).map("".join))
def test_no_text_is_a_syntax_error_or_finds_another_owners_messages(
    index: sqlite3.Connection, text: str
) -> None:
    found = search(index, text)
    assert all(id_ < 100 for id_ in found), found


# --- snippet --------------------------------------------------------------------------------

LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"
STORY = (
    "Before the meeting we talked about the weather, the trains and the price of coffee. "
    "Then Zoë said the Crème brûlée was the best dessert she had eaten this year,\n"
    "and everyone agreed that the café on the corner deserves a visit before summer ends."
)


@pytest.mark.parametrize(
    ("content", "text", "excerpt", "hits"),
    [
        ("Un Café noir", "cafe", "Un Café noir", [(3, 7)]),
        ("Un Café noir", "CAF", "Un Café noir", [(3, 7)]),
        ("Caféine et café", "cafe", "Caféine et café", [(0, 7), (11, 15)]),
        ("first line\nsecond Line\r\n", "line", "first line second Line  ", [(6, 10), (18, 22)]),
        ("the black cat and the cat", '"the cat"', "the black cat and the cat", [(18, 25)]),
        ("the cat", 'cat "the cat"', "the cat", [(0, 7)]),
        ("the cat", '"the ca"', "the cat", []),
        ("snake_case", "case", "snake_case", [(6, 10)]),
        ("e\u0301cole maternelle", "ecole", "e\u0301cole maternelle", [(0, 6)]),
        ("STRASSE Straße", "straße", "STRASSE Straße", [(0, 7), (8, 14)]),
        ("🎉 party 🎉", "party", "🎉 party 🎉", [(2, 7)]),
        ("你好世界", "你好", "你好世界", [(0, 4)]),
        ("nothing here", "absent", "nothing here", []),
        ("anything", "", "anything", []),
    ],
)
def test_short_content_is_whole(
    content: str, text: str, excerpt: str, hits: list[tuple[int, int]]
) -> None:
    assert snippet(content, parse_query(text)) == (excerpt, hits)


@pytest.mark.parametrize(
    ("text", "excerpt", "hits"),
    [
        ("creme", "…coffee. Then Zoë said the Crème brûlée was the best…", [(27, 32)]),
        ("summer", "…café on the corner deserves a visit before summer ends.", [(44, 50)]),
        ("before", "Before the meeting we talked about the weather, the trains…", [(0, 6)]),
        (
            '"brulee was" best',
            "…Then Zoë said the Crème brûlée was the best dessert she…",
            [(25, 35), (40, 44)],
        ),
        (
            "year everyone",
            "…dessert she had eaten this year, and everyone agreed that…",
            [(28, 32), (38, 46)],
        ),
        ("zzz", "Before the meeting we talked about the weather, the trains…", []),
    ],
)
def test_long_content_is_cut_between_words_around_the_first_hit(
    text: str, excerpt: str, hits: list[tuple[int, int]]
) -> None:
    assert snippet(STORY, parse_query(text), width=60) == (excerpt, hits)


def test_a_word_longer_than_the_excerpt_is_cut_inside() -> None:
    assert snippet("supercalifragilistic", parse_query("super"), width=10) == (
        "supercal…",
        [(0, 8)],
    )
    assert snippet("supercalifragilistic is long", parse_query("long"), width=10) == (
        "…is long",
        [(4, 8)],
    )


def test_the_default_width_is_160() -> None:
    excerpt, hits = snippet(STORY, parse_query("the"))
    assert excerpt == STORY[:154].replace("\n", " ") + "…"
    assert [excerpt[start:end] for start, end in hits] == ["the"] * 4 + ["Then"] + ["the"] * 2


@FUZZ
@given(
    st.text(max_size=400),
    st.text(max_size=40),
    st.integers(min_value=3, max_value=200),
)
def test_excerpts_fit_and_hits_lie_inside_them(content: str, text: str, width: int) -> None:
    excerpt, hits = snippet(content, parse_query(text), width)
    if len(content) <= width:
        assert excerpt == content.translate(str.maketrans(dict.fromkeys(LINE_BREAKS, " ")))
    else:
        assert len(excerpt) <= width
    assert not set(excerpt) & set(LINE_BREAKS)
    assert all(0 <= start < end <= len(excerpt) for start, end in hits)
    assert all(left[1] <= right[0] for left, right in itertools.pairwise(hits))
