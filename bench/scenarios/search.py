"""``search``: one user's full-text searches over HTTP in a database of 1,000,000 messages
of 1,000 users (1,000 messages each, in words drawn with a Zipf-like law), against the
bare stack's JSON page of 20 objects (a page of search results holds 20).

Four queries a user types: the most common word, a rare word, a two-word phrase in
quotes, and the start of a word (every word of a query matches as a prefix, so the
prefix query finds every word it starts). The index holds every user's messages: what a
search costs depends on how many messages of all users hold its words, not only the
searching user's.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from functools import partial
from pathlib import Path
from urllib.parse import quote

from bench.context import Context
from bench.http import HttpError, KeepAliveClient, gets
from bench.report import Outcome, Row
from bench.scenarios.common import load_rows, summaries, watched
from bench.seed import seed_search
from bench.stats import interleaved
from chatbot.search import match_expression, parse_query

#: The API's default page of results.
PAGE = 20

#: What is searched for, by name: the text typed, and how the table names it.
QUERIES = {
    "common": ("the", 'the most common word ("the")'),
    "rare": ("zeppelin", 'a rare word ("zeppelin")'),
    "phrase": ('"error message"', 'a phrase ("error message")'),
    "prefix": ("pro", 'a prefix ("pro")'),
}


def matching(database: Path, owner: str, text: str) -> int:
    """How many of the owner's messages a query finds, counted in the database itself."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        row = db.execute(
            "SELECT COUNT(*) FROM message_search WHERE message_search MATCH ?",
            (match_expression(parse_query(text), owner),),
        ).fetchone()
    return int(row[0])


async def _check(port: int, path: str, headers: dict[str, str], found: int) -> None:
    """One request before measuring: a page of the results the database holds."""
    async with KeepAliveClient("127.0.0.1", port, headers) as client:
        status, body = await client.get(path)
    results = json.loads(body).get("results") if status == 200 else None
    if not isinstance(results, list) or len(results) != min(found, PAGE):
        raise HttpError(f"GET {path}: {status}, not {min(found, PAGE)} results: {body[:200]!r}")


async def run(ctx: Context) -> Outcome:
    profile = ctx.profile
    folder = ctx.folder("search")
    corpus = seed_search(
        ctx.migrated(folder),
        profile.search_users,
        profile.search_sessions,
        profile.search_session_messages,
    )
    found = {name: matching(corpus.database, corpus.owner, q) for name, (q, _) in QUERIES.items()}
    bare, chatbot = ctx.bare(folder), ctx.chatbot(folder, corpus.database)
    headers = ctx.tokens.header(corpus.owner)
    paths = {name: f"/api/search?q={quote(q)}" for name, (q, _) in QUERIES.items()}
    with ctx.running(bare, chatbot):
        for name, path in paths.items():
            await _check(chatbot.port, path, headers, found[name])
        results = await interleaved(
            profile.rounds,
            {
                name: watched(
                    server,
                    partial(gets, "127.0.0.1", server.port, path, hdrs, profile.duration),
                )
                for name, path in {"bare": f"/json?items={PAGE}", **paths}.items()
                for server, hdrs in [(bare, {}) if name == "bare" else (chatbot, headers)]
            },
        )
    corpus_size = f"{corpus.messages:,} messages of {corpus.users:,} users"
    rows: list[Row] = []
    for name, (_text, what) in QUERIES.items():
        label = f"{what}, {found[name]:,} of the user's {corpus.per_user:,} messages"
        rows += load_rows("search", f"{label}, {corpus_size}", results[name], results["bare"])
    details = summaries(results)
    return Outcome(rows, {"rounds": details, "matching": found})
