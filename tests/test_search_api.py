"""Search through the HTTP API, end to end against a real server: what a user finds, in
which order, the excerpts and where the hits are in them, and what no query can do."""

from __future__ import annotations

import base64
import json
import unicodedata
from typing import Any

import httpx
import pytest

from chatbot.search import MAX_QUERY_CHARS
from tests.conftest import LiveServer, make_token, wait_for
from tests.conversations import Conversation, import_session, linear_export

pytestmark = pytest.mark.e2e

ALICE = make_token("alice")
BOB = make_token("bob")
EMPTY: dict[str, Any] = {"results": [], "next_cursor": None}
BAD_CURSOR = {
    "error": {"code": "invalid_cursor", "message": "cursor is not one this server issued"}
}


def search(http: httpx.Client, q: str, **params: Any) -> dict[str, Any]:
    response = http.get("/api/search", params={"q": q, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    for result in body["results"]:
        assert_hits_are_query_words(result, q)
    return body


def contents(body: dict[str, Any]) -> list[str]:
    return [result["snippet"] for result in body["results"]]


def fold(text: str) -> str:
    """``text`` without case or accents, as a reader compares words."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def assert_hits_are_query_words(result: dict[str, Any], q: str) -> None:
    """Every ``[start, end)`` of ``matches`` is a word of the snippet that starts with a
    word of the query, or a quoted phrase of it, ignoring case and accents."""
    snippet = result["snippet"]
    quoted = q.split('"')[1::2] if q.count('"') >= 2 else []
    words = [fold(w) for w in "".join(c if c.isalnum() else " " for c in q).split()]
    for start, end in result["matches"]:
        assert 0 <= start < end <= len(snippet), (result, q)
        hit = fold(snippet[start:end])
        assert not snippet[start - 1 : start].isalnum() if start else True, (result, q)
        assert not snippet[end : end + 1].isalnum(), (result, q)
        assert hit in {fold(phrase) for phrase in quoted} or any(
            hit.startswith(word) for word in words
        ), (hit, result, q)


# -- whose messages --------------------------------------------------------------------------


def test_a_user_finds_only_their_own_messages(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        import_session(http, linear_export("My kiwi secret is 7212", "Kiwi noted"))
    with server.http(BOB) as http:
        import_session(http, linear_export("Bob likes kiwi too"))
        found = search(http, "kiwi")
        assert contents(found) == ["Bob likes kiwi too"]
        # Alice's exact words, and queries written to reach past the owner's scope: what
        # Bob types is only ever words of his own messages.
        owner_scope = "u" + b"alice".hex().upper()
        for q in [
            "My kiwi secret is 7212",
            '"My kiwi secret is 7212"',
            "7212",
            "secret",
            "alice",
            owner_scope,
            f'scope : "{owner_scope}"',
            f"scope:{owner_scope} OR secret",
            f'secret" OR scope : "{owner_scope}',
            "secret OR kiwi NOT bob",
            "* OR secret",
            "content: secret",
            "{scope content}: secret",
        ]:
            body = search(http, q)
            assert all("secret" not in r["snippet"] for r in body["results"]), q
            assert {r["snippet"] for r in body["results"]} <= {"Bob likes kiwi too"}, q
    with server.http(ALICE) as http:
        assert contents(search(http, "kiwi")) == ["Kiwi noted", "My kiwi secret is 7212"]
        assert search(http, "bob") == EMPTY


def test_a_user_whose_id_begins_another_ones_finds_only_their_own(server: LiveServer) -> None:
    ann, anna = make_token("ann"), make_token("anna")
    with server.http(anna) as http:
        import_session(http, linear_export("anna writes about quinces"))
    with server.http(ann) as http:
        assert search(http, "quinces") == EMPTY
        import_session(http, linear_export("ann writes about quinces"))
        assert contents(search(http, "quinces")) == ["ann writes about quinces"]


# -- ranking ---------------------------------------------------------------------------------


def test_more_hits_and_shorter_messages_rank_first_then_newer(server: LiveServer) -> None:
    once = "the lychee tastes sweet today"
    with server.http(ALICE) as http:
        import_session(
            http,
            linear_export(
                once,
                "the lychee lychee tastes sweet",  # as long, the word twice
                "lychee now",  # shorter, the word once
                once,  # the same as the first, newer
                "an unrelated message",
            ),
        )
        body = search(http, "lychee")
    found = body["results"]
    assert len(found) == 4
    order = [(r["snippet"], r["created_at"]) for r in found]
    first_once = order.index((once, "2025-03-01T10:00:01.000000Z"))
    newer_once = order.index((once, "2025-03-01T10:00:04.000000Z"))
    twice = order.index(("the lychee lychee tastes sweet", "2025-03-01T10:00:02.000000Z"))
    shorter = order.index(("lychee now", "2025-03-01T10:00:03.000000Z"))
    # bm25: more occurrences in a message of the same length rank higher, and so does the
    # same count in a shorter message; equal scores go newest first.
    assert twice < first_once
    assert shorter < first_once
    assert newer_once == first_once - 1
    assert [len(r["matches"]) for r in found][twice] == 2


def test_messages_sent_over_the_socket_are_found_with_their_session(server: LiveServer) -> None:
    with Conversation(server, ALICE) as chat:
        reply = chat.send("Where is the durian market?")
        session_id = chat.session_id
    with server.http(ALICE) as http:
        title = wait_for(
            lambda: http.get(f"/api/sessions/{session_id}").json()["title"], "the title"
        )
        body = search(http, "durian")
    user_message, answer = body["results"]
    assert user_message == {
        "session_id": session_id,
        "message_id": reply["message_id"] - 1,
        "role": "user",
        "created_at": user_message["created_at"],
        "title": title,
        "snippet": "Where is the durian market?",
        "matches": [[13, 19]],
    }
    assert title == "Where is the durian market?"
    assert answer["message_id"] == reply["message_id"]
    assert answer["role"] == "assistant"
    assert answer["created_at"] == reply["created_at"]
    assert answer["snippet"] == "Echo: Where is the durian market?"
    assert answer["matches"] == [[19, 25]]
    assert body["next_cursor"] is None


# -- what matches ----------------------------------------------------------------------------


def test_words_match_by_prefix_ignoring_case_and_accents(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        import_session(http, linear_export("Un Café crème à l'École", "ÉCOLE NORMALE"))
        for q in ["cafe", "CAFÉ", "caf", "cafe\u0301", "creme", "CRÈME"]:
            body = search(http, q)
            assert contents(body) == ["Un Café crème à l'École"], q
        body = search(http, "ecole")
        assert sorted(contents(body)) == ["Un Café crème à l'École", "ÉCOLE NORMALE"]
        hits = {r["snippet"]: r["matches"] for r in body["results"]}
        assert hits == {"Un Café crème à l'École": [[18, 23]], "ÉCOLE NORMALE": [[0, 5]]}
        # Every word must be found in the same message.
        assert contents(search(http, "café normale")) == []
        assert contents(search(http, "école normale")) == ["ÉCOLE NORMALE"]


def test_quoted_words_match_as_a_phrase(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        import_session(
            http,
            linear_export("I ate a red apple today", "an apple that is red", "Red, Apple!"),
        )
        phrase = search(http, '"red apple"')
        words = search(http, "red apple")
        open_quote = search(http, '"red apple')
    assert sorted(contents(phrase)) == ["I ate a red apple today", "Red, Apple!"]
    assert {r["snippet"]: r["matches"] for r in phrase["results"]} == {
        "I ate a red apple today": [[8, 17]],
        "Red, Apple!": [[0, 10]],
    }
    assert len(words["results"]) == 3
    # An unbalanced quote is ignored: plain words.
    assert sorted(contents(open_quote)) == sorted(contents(words))


def test_snippets_are_plain_text_cut_around_the_hit(server: LiveServer) -> None:
    long = " ".join(["filler"] * 60) + " the <b>guava</b> & co " + " ".join(["padding"] * 60)
    with server.http(ALICE) as http:
        import_session(http, linear_export(long, "line one\nguava\r\nline three"))
        body = search(http, "guava")
    snippets = {r["snippet"][:4]: r for r in body["results"]}
    cut = snippets["…fil"]
    assert cut["snippet"].endswith("…")
    assert len(cut["snippet"]) <= 162
    # Not HTML: the text as written, the hit inside it.
    assert "the <b>guava</b> & co" in cut["snippet"]
    [[start, end]] = cut["matches"]
    assert cut["snippet"][start:end] == "guava"
    lines = snippets["line"]
    assert lines["snippet"] == "line one guava  line three"
    assert lines["matches"] == [[9, 14]]


# -- paging ----------------------------------------------------------------------------------


def test_pages_hold_every_result_once_newest_first_among_equals(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        session = import_session(http, linear_export(*(f"mango {n}" for n in range(1, 26))))
        pages, cursor = [], None
        while True:
            params = {"limit": 10} | ({"cursor": cursor} if cursor else {})
            body = search(http, "mango", **params)
            pages.append(body["results"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
    assert [len(page) for page in pages] == [10, 10, 5]
    found = [r["snippet"] for page in pages for r in page]
    assert found == [f"mango {n}" for n in range(25, 0, -1)]
    ids = [r["message_id"] for page in pages for r in page]
    assert ids == sorted(set(ids), reverse=True)
    assert {r["session_id"] for page in pages for r in page} == {session["session_id"]}


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "!!!",
        _cursor({"offset": 0}),
        _cursor({"offset": -10}),
        _cursor({"offset": "10"}),
        _cursor({"offset": True}),
        _cursor({"offset": 2.5}),
        _cursor([10]),
        _cursor("10"),
        _cursor({"position": 10}),
        "A" * 65,
    ],
)
def test_a_bad_cursor_is_422(server: LiveServer, cursor: str) -> None:
    with server.http(ALICE) as http:
        import_session(http, linear_export("mango"))
        response = http.get("/api/search", params={"q": "mango", "cursor": cursor})
    assert response.status_code == 422
    assert response.json() == BAD_CURSOR


@pytest.mark.parametrize("limit", ["0", "101", "ten", "-1", "1e1"])
def test_a_bad_limit_is_422(server: LiveServer, limit: str) -> None:
    with server.http(ALICE) as http:
        response = http.get("/api/search", params={"q": "mango", "limit": limit})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_limit"


# -- hostile queries -------------------------------------------------------------------------

HOSTILE = [
    "NEAR(a b)",
    "NEAR(kiwi secret, 2)",
    "a AND",
    "AND",
    "kiwi OR",
    "NOT kiwi",
    "*",
    "kiwi*",
    '"',
    '""',
    '"""',
    "col:x",
    "content:kiwi",
    "^a",
    "^kiwi",
    "-kiwi",
    "+kiwi",
    "(kiwi",
    "kiwi)",
    "{content}: kiwi",
    "kiwi'; DROP TABLE messages; --",
    "%",
    "_",
    "\\",
    "'",
    "🍎",
    "kiwi 🍎",
    "\x00",
    "kiwi\x00secret",
    "\u200b",
    "\ufeffkiwi",
    "\uff4b\uff49\uff57\uff49",  # fullwidth
    "x" * MAX_QUERY_CHARS,
    " ".join(["kiwi"] * 32),
    " ".join(f"w{n}" for n in range(33)),
    "x" * (MAX_QUERY_CHARS + 1),
    "x" * 10_000,
]


@pytest.mark.parametrize("q", HOSTILE, ids=range(len(HOSTILE)))
def test_any_query_is_answered_200_or_422_never_500(server: LiveServer, q: str) -> None:
    with server.http(ALICE) as http:
        import_session(http, linear_export("My kiwi secret is near", "a b c"))
        response = http.get("/api/search", params={"q": q})
    assert response.status_code in (200, 422), (q, response.text)
    if response.status_code == 422:
        assert response.json()["error"]["code"] == "invalid_query"
    else:
        body = response.json()
        assert set(body) == {"results", "next_cursor"}
        for result in body["results"]:
            assert_hits_are_query_words(result, q)


def test_what_each_hostile_query_finds(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        import_session(http, linear_export("My kiwi secret is near", "a b c"))
        for q in ["?!.,;:", "🍎", "\x00", '"', '""', "*", "^", "()", "\u200b"]:
            assert search(http, q) == EMPTY, q
        # FTS5's operators are words like any other, and every word must be found.
        found = ["My kiwi secret is near"]
        for q, expected in [
            ("kiwi\x00secret", found),
            ("^kiwi", found),
            ("kiwi*", found),
            ("(kiwi", found),
            ("NOT kiwi", []),
            ("kiwi OR", []),
        ]:
            assert contents(search(http, q)) == expected, q
        assert contents(search(http, "NEAR(a b)")) == []
        assert contents(search(http, "near kiwi")) == ["My kiwi secret is near"]
        too_long = http.get("/api/search", params={"q": "x" * 10_000})
        assert too_long.status_code == 422
        assert too_long.json() == {
            "error": {
                "code": "invalid_query",
                "message": "a search query may hold at most 500 characters, this one has "
                "10000: shorten it",
            }
        }
        invalid_utf8 = http.get("/api/search?q=%FF%FEkiwi")
        assert invalid_utf8.status_code == 200


# -- deleted -----------------------------------------------------------------------------------


def test_deleted_messages_and_sessions_are_not_found(server: LiveServer) -> None:
    with server.http(ALICE) as http:
        kept = import_session(http, linear_export("papaya first", "papaya second", "papaya third"))
        gone = import_session(http, linear_export("papaya elsewhere"))
        assert len(search(http, "papaya")["results"]) == 4
        second = search(http, '"papaya second"')["results"][0]["message_id"]
        # The second message and everything below it.
        response = http.delete(f"/api/sessions/{kept['session_id']}/messages/{second}")
        assert response.status_code == 204
        assert contents(search(http, "papaya")) == ["papaya elsewhere", "papaya first"]
        assert http.delete(f"/api/sessions/{gone['session_id']}").status_code == 204
        assert contents(search(http, "papaya")) == ["papaya first"]


def test_equal_matches_come_newest_first_by_when_they_were_written(server: LiveServer) -> None:
    with Conversation(server, ALICE) as chat:
        chat.send("feijoa")
        session_id = chat.session_id
    with server.http(ALICE) as http:
        # Imported after it, history from an earlier year: stored later, written earlier.
        import_session(http, linear_export("feijoa", start="2021-05-04T12:00:"))
        today, imported, reply = search(http, "feijoa")["results"]
    assert (today["snippet"], today["session_id"]) == ("feijoa", session_id)
    assert (imported["snippet"], imported["created_at"]) == (
        "feijoa",
        "2021-05-04T12:00:01.000000Z",
    )
    assert imported["message_id"] > today["message_id"]
    assert today["created_at"] > imported["created_at"]
    assert reply["snippet"] == "Echo: feijoa"
