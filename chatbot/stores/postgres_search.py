"""Full-text search on PostgreSQL: the ``tsvector`` stored with each message and the
``tsquery`` a search runs, both written out here rather than made by a text-search
configuration.

PostgreSQL's parser splits text its own way (``foo.example.com`` is one "host" token, ``a-b``
three) and its configurations keep accents, so words would match differently than on
SQLite and than :func:`chatbot.search.snippet` highlights them. Instead the words are
:func:`chatbot.search.folded_words` (split, lower-cased and accent-free as the SQLite index
has them) and go into the vector as a literal, each with its positions (phrases need them).
The GIN index on the vector then answers prefixes (``'cafe':*``) and phrases
(``'a' <-> 'b'``) without any configuration or extension.

Like the SQLite index, each vector also holds the owner's scope lexeme, weighted ``A``
while every word of the message is weighted ``D``; a query asks for the owner's scope
(``:A``) and for the user's words among the ``D`` lexemes only, so no word a user types
reaches another owner's scope, and the index itself narrows the search to one owner.
"""

from __future__ import annotations

import hashlib

from chatbot.search import SearchQuery, fold, folded_words, is_prefix

#: PostgreSQL's limits on a tsvector: a position, the positions kept per lexeme, the bytes
#: of one lexeme, and of all lexemes together (a little under the 1 MiB it accepts).
MAX_POSITION = 16_383
MAX_POSITIONS = 256
MAX_LEXEME_BYTES = 2_047
MAX_VECTOR_BYTES = 1_000_000
#: The lengths of the prefixes indexed as lexemes of their own (weight C).
PREFIXES = (2, 3, 4)


def scope(owner: str) -> str:
    """The lexeme that marks every message of ``owner`` (a digest: any owner id fits)."""
    return "u" + hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()


def search_vector(owner: str, content: str) -> str:
    """The ``tsvector`` literal of a message of ``owner``: its scope at position 1 (weight
    A), then each word of ``content`` at its position (weight D), and at the same position
    the word's first 2, 3 and 4 characters (weight C) when it is longer.

    The prefixes are what SQLite's ``prefix = '2 3 4'`` indexes: a short query word is then
    one lexeme to look up, not every word it starts merged (see docs/performance.md).

    Beyond PostgreSQL's limits a long text is indexed in part: positions past 16383 count as
    16383 (a phrase there may be missed), a lexeme's 256 first positions are kept, a word
    longer than 2047 bytes is cut, and what would take the vector past about 1 MB (its
    lexemes and their positions) is left out.
    """
    positions: dict[str, list[str]] = {}
    last: dict[str, int] = {}
    # What PostgreSQL counts against its limit: each lexeme's bytes (to an even number)
    # and two bytes per position, plus two for their count.
    size = 0
    for index, word in enumerate(folded_words(content), start=2):
        word = _cut(word)
        position = min(index, MAX_POSITION)
        lexemes = [(word, str(position))]
        lexemes += [(word[:n], f"{position}C") for n in PREFIXES if len(word) > n]
        for lexeme, place in lexemes:
            seen = positions.get(lexeme)
            if seen is None:
                cost = _even(len(lexeme.encode())) + 4
                if size + cost <= MAX_VECTOR_BYTES:
                    positions[lexeme] = [place]
                    last[lexeme] = position
                    size += cost
            elif (
                len(seen) < MAX_POSITIONS
                and last[lexeme] != position
                and size + 2 <= MAX_VECTOR_BYTES
            ):
                seen.append(place)
                last[lexeme] = position
                size += 2
    entries = [f"{_lexeme(scope(owner))}:1A"]
    entries += [f"{_lexeme(lexeme)}:{','.join(places)}" for lexeme, places in positions.items()]
    return " ".join(entries)


def search_query(owner: str, terms: str) -> str:
    """The ``tsquery`` literal that finds ``owner``'s messages that match ``terms`` (what
    :func:`terms_query` made of the user's query)."""
    return f"{_lexeme(scope(owner))}:A & ( {terms} )"


def terms_query(query: SearchQuery) -> str | None:
    """The user's words (each a prefix, but a one-character word whole) and phrases, all
    required, as a ``tsquery`` literal (also what matches are ranked by); ``None`` when the
    query holds no word, and matches nothing."""
    terms = []
    for word in query.words:
        folded = _cut(fold(word))
        if not folded:
            continue
        if not is_prefix(word) or len(folded) < min(PREFIXES):
            terms.append(_lexeme(folded) + ":D")
        elif len(folded) in PREFIXES:
            # The word itself, or a longer word's indexed prefix.
            terms.append(_lexeme(folded) + ":CD")
        else:
            terms.append(_lexeme(folded) + ":*D")
    for phrase in query.phrases:
        words = [fold(word) for word in phrase]
        if all(words):
            terms.append("( " + " <-> ".join(_lexeme(_cut(w)) + ":D" for w in words) + " )")
    return " & ".join(terms) if terms else None


def _even(size: int) -> int:
    return size + size % 2


def _cut(word: str) -> str:
    """``word`` within the longest lexeme PostgreSQL stores, cut between characters."""
    data = word.encode()
    if len(data) <= MAX_LEXEME_BYTES:
        return word
    return data[:MAX_LEXEME_BYTES].decode("utf-8", "ignore")


def _lexeme(word: str) -> str:
    """``word`` quoted as a lexeme of a tsvector or tsquery literal."""
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"
