"""The search benchmark's texts: drawn with the Zipf-like law they claim, the same for the
same seed."""

from __future__ import annotations

import random
import re
from collections import Counter

from bench.corpus import COMMON, PHRASES, TextMaker, vocabulary, zipf_pool


def test_the_pool_holds_each_word_in_proportion_to_one_over_its_rank() -> None:
    pool = zipf_pool(["a", "b", "c", "d"], 100, random.Random(1))

    # 100 / (1 + 1/2 + 1/3 + 1/4) = 48 for the first.
    assert Counter(pool) == {"a": 48, "b": 24, "c": 16, "d": 12}


def test_the_vocabulary_starts_with_the_common_words_then_invents_distinct_ones() -> None:
    words = vocabulary(2_000, random.Random(1))

    common = list(dict.fromkeys(COMMON))
    assert words[: len(common)] == common
    assert len(set(words)) == 2_000
    assert all(re.fullmatch(r"[a-z]{4,}", word) for word in words[len(common) :])


def test_texts_are_the_same_for_the_same_seed_and_sized_as_chat_messages() -> None:
    first, second = TextMaker(7, pool_size=2**16), TextMaker(7, pool_size=2**16)
    texts = [first.text(user=n % 2 == 0) for n in range(2_000)]

    assert texts == [second.text(user=n % 2 == 0) for n in range(2_000)]
    questions, answers = texts[::2], texts[1::2]
    assert all(4 <= len(q.split()) <= 20 and q.endswith("?") for q in questions)
    assert all(10 <= len(a.split()) <= 60 and a.endswith(".") for a in answers)
    words = Counter(word.strip(".?").lower() for text in texts for word in text.split())
    assert words.most_common(1)[0][0] == "the"
    # The set phrases appear, each in about one message of a hundred.
    for phrase in PHRASES:
        assert 5 <= sum(" ".join(phrase) in text.lower() for text in texts) <= 45
