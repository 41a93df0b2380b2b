"""Full-text search over a user's messages: what the search box accepts, and the excerpts.

The store indexes messages in an SQLite FTS5 table (``message_search``, tokenizer
``unicode61 remove_diacritics 2``) whose ``scope`` column holds one token per row,
``'u' || hex(owner)``; the PostgreSQL store indexes :func:`folded_words` in a ``tsvector``
the same way (:mod:`chatbot.stores.postgres_search`). This module holds the pure functions
around them:

* :func:`parse_query` reads what a user typed into a :class:`SearchQuery`: plain words and
  ``"quoted phrases"``. Nothing else is syntax: ``*``, ``:``, ``^``, ``(``, ``-``, ``NEAR``,
  ``AND``, ``OR``, ``NOT``... are text, so no input is ever an FTS5 syntax error.
* :func:`match_expression` turns a query into the string bound to ``message_search MATCH ?``:
  every word is a prefix, every phrase exact, and all of them must occur in one message of
  one owner.
* :func:`snippet` cuts the excerpt shown under a result and says where the hits are in it.

Words are split roughly as ``unicode61`` splits them: letters, digits and private-use
characters make words (an accent written as a separate combining character, U+0300 to
U+036F, stays in its word); everything else separates, ``_`` included. Words are compared
as FTS5 compares them, ignoring case and accents: "ÉCOLE" finds "école" and "ecole".
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from chatbot.errors import InvalidRequest

#: The longest query accepted, in characters.
MAX_QUERY_CHARS = 500
#: The most words and phrases one query may hold (every one is a term FTS5 must look up).
MAX_QUERY_TERMS = 32

_WORD_CHAR = r"[^\W_]|[\ue000-\uf8ff\U000f0000-\U0010ffff]"
_ACCENT = r"[\u0300-\u036f]"
# A word starts with a letter, a digit or a private-use character; accents written as
# combining characters stay in it, as unicode61 with remove_diacritics keeps them.
_TOKEN = re.compile(rf"(?:{_WORD_CHAR})(?:{_WORD_CHAR}|{_ACCENT})*")
# The start of a whole word: a search from the middle of a word finds the next one instead.
_TOKEN_START = re.compile(rf"(?<!{_WORD_CHAR}|{_ACCENT}){_TOKEN.pattern}")
_LINE_BREAKS = str.maketrans(dict.fromkeys("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029", " "))

Span = tuple[int, int]
_Token = tuple[int, int, str]  # start, end, folded text


@dataclass(frozen=True)
class SearchQuery:
    """What a user searches for: every word (as a prefix) and every phrase must occur."""

    words: tuple[str, ...] = ()
    phrases: tuple[tuple[str, ...], ...] = ()

    @property
    def empty(self) -> bool:
        """True when the query holds no word at all: it matches nothing."""
        return not self.words and not self.phrases


def parse_query(text: str) -> SearchQuery:
    """Read a search box's text: words, and phrases between double quotes.

    A quote left open is ignored and what follows it read as plain words. A word or phrase
    given twice counts once. Raises :class:`~chatbot.errors.InvalidRequest`
    (``invalid_query``) for more than :data:`MAX_QUERY_CHARS` characters or more than
    :data:`MAX_QUERY_TERMS` words and phrases.
    """
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidRequest(
            "invalid_query",
            f"a search query may hold at most {MAX_QUERY_CHARS} characters, this one has "
            f"{len(text)}: shorten it",
        )
    # Composed, "e" + U+0301 is "é": the one word FTS5 indexes for it.
    parts = unicodedata.normalize("NFC", text).split('"')
    words: dict[str, None] = {}
    phrases: dict[tuple[str, ...], None] = {}
    for index, part in enumerate(parts):
        tokens = _TOKEN.findall(part)
        # Odd parts lie between two quotes, except the last one when a quote is left open.
        if index % 2 and index < len(parts) - 1:
            if tokens:
                phrases.setdefault(tuple(tokens))
        else:
            words.update(dict.fromkeys(tokens))
    if len(words) + len(phrases) > MAX_QUERY_TERMS:
        raise InvalidRequest(
            "invalid_query",
            f"a search query may hold at most {MAX_QUERY_TERMS} words and quoted phrases, "
            f"this one has {len(words) + len(phrases)}: remove some",
        )
    return SearchQuery(tuple(words), tuple(phrases))


def match_expression(query: SearchQuery, owner: str) -> str:
    """The FTS5 MATCH string for ``query`` over the messages of ``owner``.

    Every word is quoted and prefix-matched (but a single character, which would match most
    of everything: it is matched as a whole word), every phrase quoted and matched exactly, so the
    user's text is never read as FTS5 syntax; the owner's scope token is outside the user's
    reach. Raises ValueError for an empty query, which matches nothing and needs no search.
    """
    if query.empty:
        raise ValueError("an empty query matches nothing: answer it without searching")
    terms = [_quoted(word) + ("*" if is_prefix(word) else "") for word in query.words]
    terms += [_quoted(" ".join(phrase)) for phrase in query.phrases]
    scope = _quoted("u" + owner.encode().hex().upper())
    return f"scope : {scope} AND content : ( {' AND '.join(terms)} )"


def is_prefix(word: str) -> bool:
    """Whether a query word matches the words it starts (all but one-character words)."""
    return len(word) > 1


def folded_words(text: str) -> Iterator[str]:
    """The words of ``text`` as they are compared: split as :func:`parse_query` splits a
    query, without case or accents. A store that indexes words itself (rather than through
    FTS5's tokenizer) indexes these, and looks up :func:`fold` of each query word."""
    for match in _TOKEN.finditer(unicodedata.normalize("NFC", text)):
        word = _fold(match.group())
        if word:
            yield word


def fold(word: str) -> str:
    """A query word or phrase word as :func:`folded_words` yields it (may be empty)."""
    return _fold(word)


def _quoted(text: str) -> str:
    """``text`` as an FTS5 string: in double quotes, a double quote inside doubled."""
    return '"' + text.replace('"', '""') + '"'


def snippet(content: str, query: SearchQuery, width: int = 160) -> tuple[str, list[Span]]:
    """An excerpt of ``content`` around the first hit of ``query``, and the hits in it.

    The excerpt is the whole content when it is at most ``width`` characters; otherwise at
    most ``width`` characters cut between words, with "…" where text was cut (when a single
    word is longer, it is cut inside). Line breaks become spaces. The hits are ``[start,
    end)`` offsets into the excerpt, each spanning whole words: a word that starts with a
    query word, or consecutive words equal to a query phrase, ignoring case and accents.
    When no hit is found (FTS5 and this module may split a text differently), the excerpt
    is the start of the content and the list is empty.
    """
    if width < 3:
        raise ValueError(f"width must be at least 3 (a character and two '…'), not {width}")
    terms = _Terms(query)
    if len(content) <= width:
        start, end = 0, len(content)
    else:
        first = next(_hits(_tokens(content), terms), None)
        start, end = _bounds(content, first, width - 2)
    hits = _merged(
        (max(hit_start, start), min(hit_end, end))
        for hit_start, hit_end in _hits(_window_tokens(content, start, end, terms), terms)
        if hit_start < end and hit_end > start
    )
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(content) else ""
    shift = len(prefix) - start
    excerpt = prefix + content[start:end].translate(_LINE_BREAKS) + suffix
    return excerpt, [(hit_start + shift, hit_end + shift) for hit_start, hit_end in hits]


class _Terms:
    """A query's words and phrases, folded as the content's words are."""

    def __init__(self, query: SearchQuery) -> None:
        self.words = tuple(word for word in map(_fold, query.words) if word)
        folded = (tuple(map(_fold, phrase)) for phrase in query.phrases)
        self.phrases = tuple(phrase for phrase in folded if all(phrase))
        self.longest = max(map(len, self.phrases), default=1)


def _fold(text: str) -> str:
    """``text`` without case or accents: casefolded, decomposed, combining marks dropped."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def _tokens(content: str, pos: int = 0) -> Iterator[_Token]:
    """The words of ``content`` from ``pos`` on (``pos`` must not be inside a word)."""
    for match in _TOKEN.finditer(content, pos):
        yield match.start(), match.end(), _fold(match.group())


def _hits(tokens: Iterable[_Token], terms: _Terms) -> Iterator[Span]:
    """The spans of the hits among ``tokens``, in the order of the word each one ends on."""
    recent: deque[_Token] = deque(maxlen=terms.longest)
    for token in tokens:
        start, end, folded = token
        recent.append(token)
        if any(
            folded.startswith(word) if is_prefix(word) else folded == word for word in terms.words
        ):
            yield start, end
        for phrase in terms.phrases:
            first = len(recent) - len(phrase)
            if first >= 0 and all(
                candidate[2] == word
                for candidate, word in zip(
                    itertools.islice(recent, first, None), phrase, strict=True
                )
            ):
                yield recent[first][0], end


def _bounds(content: str, hit: Span | None, budget: int) -> Span:
    """The excerpt's ``[start, end)`` in ``content``: ``hit`` roughly in the middle, at most
    ``budget`` characters, starting at a word and ending after one where possible."""
    hit_start, hit_end = hit or (0, 0)
    if hit_end - hit_start >= budget:
        return hit_start, hit_start + budget
    slack = budget - (hit_end - hit_start)
    start = max(0, min(hit_start - slack // 2, len(content) - budget))
    if start > 0:
        following = _TOKEN_START.search(content, start)
        start = min(following.start(), hit_start) if following else hit_start
    end = min(len(content), start + budget)
    if end < len(content):
        # The last word that ends inside the excerpt; a word longer than it is cut.
        word_ends = itertools.takewhile(
            lambda word_end: word_end <= end,
            (match.end() for match in _TOKEN.finditer(content, start)),
        )
        end = max(word_ends, default=end)
    return start, end


def _window_tokens(content: str, start: int, end: int, terms: _Terms) -> list[_Token]:
    """The words that start in ``[start, end)``, and enough after them to complete a phrase
    that starts inside."""
    tokens: list[_Token] = []
    beyond = 0
    for token in _tokens(content, start):
        if token[0] >= end:
            beyond += 1
            if beyond >= terms.longest:
                break
        tokens.append(token)
    return tokens


def _merged(spans: Iterable[Span]) -> list[Span]:
    """``spans`` in order, overlapping ones joined (a word hit inside a phrase hit)."""
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
