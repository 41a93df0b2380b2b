"""``branches``: a page of 50 messages of one branch, over HTTP, in a session of 10,000
messages where the user went back 500 times (an edited question or a regenerated reply
each time, leaving an older branch of a few messages), against the bare stack's JSON page
of 50 objects, and against the same pages of a session of 10,000 messages in one branch.

Three pages of each session: the newest of the current branch (what a client opens
with), one further up (``before=`` a message halfway down the branch), and the newest of
an older branch (``leaf_id=``; in the single-branch session, the branch ending halfway).
A page is a walk up from its last message, 50 steps whatever the session holds: its cost
should not grow with the number of branches.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from typing import Any

from bench.context import Context
from bench.http import HttpError, KeepAliveClient, gets
from bench.report import Outcome, Row
from bench.scenarios.common import across, load_rows, summaries, watched
from bench.seed import BranchPages, seed_branches
from bench.stats import interleaved

PAGE = 50
#: A page of the branched session within this factor of the single branch's (p50).
BRANCH_FACTOR = 1.5

#: What each page is, for the table.
PAGES = {
    "newest": "newest page of the current branch",
    "up": "page further up (before=)",
    "older": "newest page of an older branch (leaf_id=)",
}

Check = Callable[[list[dict[str, Any]]], str | None]


def _paths(pages: BranchPages) -> dict[str, tuple[str, Check]]:
    """The path of each page of a session, and what its messages must show."""
    base = f"/api/sessions/{pages.session_id}/messages?limit={PAGE}"

    def above(messages: list[dict[str, Any]]) -> str | None:
        if all(m["id"] < pages.middle for m in messages):
            return None
        return f"a message at or below {pages.middle}"

    def ends_at(messages: list[dict[str, Any]]) -> str | None:
        return None if messages[-1]["id"] == pages.older_leaf else f"not {pages.older_leaf} last"

    return {
        "newest": (base, lambda _messages: None),
        "up": (f"{base}&before={pages.middle}", above),
        "older": (f"{base}&leaf_id={pages.older_leaf}", ends_at),
    }


async def _check(port: int, path: str, headers: dict[str, str], check: Check) -> None:
    """One request before measuring: a full page, of the branch it should be."""
    async with KeepAliveClient("127.0.0.1", port, headers) as client:
        status, body = await client.get(path)
    messages = json.loads(body).get("messages") if status == 200 else None
    if not isinstance(messages, list) or len(messages) != PAGE:
        raise HttpError(f"GET {path}: {status}, not {PAGE} messages: {body[:200]!r}")
    problem = check(messages)
    if problem:
        raise HttpError(f"GET {path}: {problem}")


async def run(ctx: Context) -> Outcome:
    profile = ctx.profile
    folder = ctx.folder("branches")
    seeded = seed_branches(ctx.migrated(folder), profile.branch_messages, profile.branch_forks)
    bare, chatbot = ctx.bare(folder), ctx.chatbot(folder, seeded.database)
    headers = ctx.tokens.header(seeded.owner)
    paths = {"bare": f"/json?items={PAGE}"}
    checks: list[tuple[str, Check]] = []
    for side, pages in (("branched", seeded.branched), ("linear", seeded.linear)):
        for page, (path, check) in _paths(pages).items():
            paths[f"{side} {page}"] = path
            checks.append((path, check))
    with ctx.running(bare, chatbot):
        for path, check in checks:
            await _check(chatbot.port, path, headers, check)
        results = await interleaved(
            profile.rounds,
            {
                name: watched(
                    server,
                    partial(gets, "127.0.0.1", server.port, path, hdrs, profile.duration),
                )
                for name, path in paths.items()
                for server, hdrs in [(bare, {}) if name == "bare" else (chatbot, headers)]
            },
        )
    session = f"{seeded.messages:,}-message session"
    rows: list[Row] = []
    for page, what in PAGES.items():
        rows += load_rows(
            "branches",
            f"{what}, {session} with {seeded.forks:,} older branches",
            results[f"branched {page}"],
            results["bare"],
        )
    for page, what in PAGES.items():
        rows.append(
            Row(
                "branches",
                f"{what} p50, {seeded.forks:,} older branches vs none",
                "ms",
                chatbot=across(results[f"branched {page}"], "p50_ms"),
                bare=across(results[f"linear {page}"], "p50_ms"),
                reference="no branch",
            ).at_most(BRANCH_FACTOR)
        )
    return Outcome(rows, summaries(results))
