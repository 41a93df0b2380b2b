"""Message texts for the search benchmark: words drawn from a fixed vocabulary with a
Zipf-like distribution, as in real writing, plus a few set phrases and rare words.

A full-text search costs what the index holds for its terms: a frequent word has a long
list of postings, a rare one a short list, a prefix the lists of every word it starts. So
the texts need the shape of real text more than its meaning. Rank ``r`` of the vocabulary
is drawn with a weight of ``1 / r``: the first word ("the") is about one word in ten and in
nine messages out of ten, as in English prose, and most words are rare. The first ranks
are real English words, in roughly their order of frequency; the long tail is made of
pronounceable invented words (names, terms of art), built from syllables.

Everything comes from one seeded :class:`random.Random`: the same seed, the same texts.
"""

from __future__ import annotations

import random

#: The most frequent words, most frequent first (English prose and chat about work).
_COMMON = """
the of and to a in is it you that for on was with as have be at not this are but from
or by i they we an he she his her can will one all would there their what so up out if
about who get which go me when make like time no just him know take people into year
your good some could them see other than then now look only come its over think also
back after use two how our work first well way even new want because any these give day
most us is code file error data test function value problem question answer help need
does should where why here more very much many such those each system number used make
same different between while before under again never always often still every part
place case point group company world hand week thing long great little own old right big
high small large next early young important few public bad able last find tell ask seem
feel try leave call keep let begin show hear play run move live believe bring happen
write provide sit stand lose pay meet include continue set learn change lead understand
watch follow stop create speak read allow add spend grow open walk win offer remember
love consider appear buy wait serve die send expect build stay fall cut reach kill
remain suggest raise pass sell require report decide pull program project process
product property protect provide probably proper proposal protocol prompt profile
python server client request response message session model user list page table
query index search result string object class method module package library version
update release branch commit merge review issue feature bug fix deploy build config
setting option default example document note idea reason plan team meeting email
account password login token key access network connection database store cache memory
disk file folder path line column row field type format text image video audio link
"""
COMMON = _COMMON.split()

#: Word pairs written together often ("machine learning"), each in about one message of
#: a hundred: what a quoted phrase search looks for.
PHRASES = (
    ("machine", "learning"),
    ("error", "message"),
    ("unit", "test"),
    ("pull", "request"),
    ("data", "model"),
    ("command", "line"),
)
PHRASE_CHANCE = 0.01

#: Words that appear in about one message of 200 each, anywhere in the corpus.
RARE = ("zeppelin", "quasar", "saffron", "marzipan", "obsidian")
RARE_CHANCE = 0.005

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "ch", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "t", "m")


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


def invented_words(count: int, rng: random.Random, taken: set[str]) -> list[str]:
    """``count`` distinct pronounceable words of two or three syllables, none in ``taken``."""
    words: list[str] = []
    seen = set(taken)
    while len(words) < count:
        syllables = rng.choice((2, 2, 3))
        word = "".join(_syllable(rng) for _ in range(syllables))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def vocabulary(size: int, rng: random.Random) -> list[str]:
    """``size`` words by rank: the common ones (each once), then invented ones."""
    common = list(dict.fromkeys(COMMON))
    return (common + invented_words(size - len(common), rng, set(common) | set(RARE)))[:size]


def zipf_pool(words: list[str], size: int, rng: random.Random) -> list[str]:
    """About ``size`` words in random order, the word of rank ``r`` in proportion to
    ``1 / r`` (each at least once).

    Drawing every word of a million messages one by one takes minutes in Python; slices
    of this shuffled pool at random offsets take seconds, and follow the same law.
    """
    weight = size / sum(1.0 / rank for rank in range(1, len(words) + 1))
    pool = [
        word
        for rank, word in enumerate(words, start=1)
        for _ in range(max(1, round(weight / rank)))
    ]
    rng.shuffle(pool)
    return pool


class TextMaker:
    """Texts of chat messages: short questions, longer answers."""

    def __init__(self, seed: int, vocabulary_size: int = 20_000, pool_size: int = 2**21) -> None:
        self.rng = random.Random(seed)  # noqa: S311 (the same texts every run, not secrets)
        self.words = vocabulary(vocabulary_size, self.rng)
        self.pool = zipf_pool(self.words, pool_size, self.rng)

    def text(self, user: bool) -> str:
        """A user's message of 4 to 20 words, or a reply of 10 to 60."""
        rng = self.rng
        length = rng.randint(4, 20) if user else rng.randint(10, 60)
        at = rng.randrange(len(self.pool) - length)
        words = self.pool[at : at + length]
        if rng.random() < PHRASE_CHANCE * len(PHRASES):
            at = rng.randrange(length - 1)
            words[at : at + 2] = rng.choice(PHRASES)
        if rng.random() < RARE_CHANCE * len(RARE):
            words[rng.randrange(length)] = rng.choice(RARE)
        words[0] = words[0].capitalize()
        return " ".join(words) + ("?" if user else ".")
