"""Export to JSON and Markdown, and import from our format and from ChatGPT exports."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot.errors import InvalidRequest
from chatbot.stores.base import Message, Session
from chatbot.transfer import (
    FORMAT,
    MAX_IMPORT_MESSAGES,
    MAX_IMPORT_SESSIONS,
    ImportedMessage,
    ImportedSession,
    close_code_fence,
    export_json,
    export_markdown,
    parse_import,
)

FIXTURE = Path(__file__).parent / "fixtures" / "chatgpt" / "conversations.json"


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# What tests/fixtures/chatgpt/conversations.json holds, as a reader of ChatGPT saw it.
LINEAR = ImportedSession(
    title="Autumn rain haiku",
    backend=None,
    model=None,
    system_prompt=None,
    created_at=at(2024, 7, 12, 14, 0, 0, 83311),
    messages=(
        ImportedMessage(
            key="aaa2d4c6-1e3f-4a5b-8c7d-9e0f1a2b3c4d",
            parent_key=None,
            role="user",
            content="Write a haiku about autumn rain.",
            status="complete",
            created_at=at(2024, 7, 12, 14, 0, 2, 583311),
            backend=None,
            model=None,
            usage=None,
        ),
        ImportedMessage(
            key="52dee013-922e-483d-b562-ef90967f27ff",
            parent_key="aaa2d4c6-1e3f-4a5b-8c7d-9e0f1a2b3c4d",
            role="assistant",
            content="Cold rain on the roof\nmaple leaves let go at last\nthe gutter runs red",
            status="complete",
            created_at=at(2024, 7, 12, 14, 0, 4, 833311),
            backend=None,
            model="gpt-4o-mini",
            usage=None,
        ),
        ImportedMessage(
            key="aaa27e9f-0a1b-4c2d-9e3f-4a5b6c7d8e9f",
            parent_key="52dee013-922e-483d-b562-ef90967f27ff",
            role="user",
            content="Now one about the first snow.",
            status="complete",
            created_at=at(2024, 7, 12, 14, 0, 40, 208311),
            backend=None,
            model=None,
            usage=None,
        ),
        ImportedMessage(
            key="2e611874-2ab3-4d06-9498-f2e8b1234167",
            parent_key="aaa27e9f-0a1b-4c2d-9e3f-4a5b6c7d8e9f",
            role="assistant",
            content=(
                "First snow, no footprints\nthe whole street holds its breath white\n"
                "until the dog wakes"
            ),
            status="complete",
            created_at=at(2024, 7, 12, 14, 0, 42, 145811),
            backend=None,
            model="gpt-4o-mini",
            usage=None,
        ),
    ),
    leaf_key="2e611874-2ab3-4d06-9498-f2e8b1234167",
)

# The first question, then its edit (a sibling under the same hidden parents), whose reply
# was regenerated (two sibling replies); the second reply was followed by a question with
# a screenshot, a code call and its output (dropped), and the reply after them.
FIRST_QUESTION = "aaa2f6b1-0c3e-4d5e-9b1a-7c8d9e0f1a2b"
EDITED_QUESTION = "aaa21c07-5d4e-4f6a-8b9c-0d1e2f3a4b5c"
REGENERATED = "dd19c846-3400-49d3-b941-410c8e033384"
SCREENSHOT_QUESTION = "aaa2b8e4-7f6a-4b3c-9d2e-1f0a9b8c7d6e"
LAST_REPLY = "7b5cb82f-39af-4bf8-8cab-78c21418585f"
BRANCHING = ImportedSession(
    title="Reverse list in Python",
    backend=None,
    model=None,
    system_prompt=None,
    created_at=at(2024, 6, 10, 16, 0, 0, 512345),
    messages=(
        ImportedMessage(
            key=FIRST_QUESTION,
            parent_key=None,
            role="user",
            content="How do I reverse a list in Python?",
            status="complete",
            created_at=at(2024, 6, 10, 16, 0, 4, 722533),
            backend=None,
            model=None,
            usage=None,
        ),
        ImportedMessage(
            key=EDITED_QUESTION,
            parent_key=None,
            role="user",
            content="How do I reverse a list in Python without making a copy?",
            status="complete",
            created_at=at(2024, 6, 10, 16, 1, 1, 516896),
            backend=None,
            model=None,
            usage=None,
        ),
        ImportedMessage(
            key="968a101a-ec54-4771-80e9-c09e08c87bca",
            parent_key=FIRST_QUESTION,
            role="assistant",
            content=(
                "Use slicing: `items[::-1]` returns a new list with the items in reverse "
                "order, and `reversed(items)` gives an iterator over them."
            ),
            status="complete",
            created_at=at(2024, 6, 10, 16, 0, 8, 405357),
            backend=None,
            model="gpt-4o",
            usage=None,
        ),
        ImportedMessage(
            key="91c57ce8-1a87-4e38-ac6b-ab2540a1a459",
            parent_key=EDITED_QUESTION,
            role="assistant",
            content="Call `items.reverse()`: it reverses the list in place and returns `None`.",
            status="complete",
            created_at=at(2024, 6, 10, 16, 1, 4, 849564),
            backend=None,
            model="gpt-4o",
            usage=None,
        ),
        ImportedMessage(
            key=REGENERATED,
            parent_key=EDITED_QUESTION,
            role="assistant",
            content=(
                "Use the list's own method:\n\n```python\nitems = [1, 2, 3]\nitems.reverse()\n"
                "print(items)  # [3, 2, 1]\n```\n\nIt changes `items` in place and returns "
                "`None`, so do not write `items = items.reverse()`."
            ),
            status="complete",
            created_at=at(2024, 6, 10, 16, 1, 35, 632349),
            backend=None,
            model="gpt-4o",
            usage=None,
        ),
        ImportedMessage(
            key=SCREENSHOT_QUESTION,
            parent_key=REGENERATED,
            role="user",
            content="I tried it on my data and got this error. What does it mean?",
            status="complete",
            created_at=at(2024, 6, 10, 16, 2, 33, 262345),
            backend=None,
            model=None,
            usage=None,
        ),
        ImportedMessage(
            key=LAST_REPLY,
            parent_key=SCREENSHOT_QUESTION,
            role="assistant",
            content=(
                "Your screenshot shows `items` is a tuple, not a list: tuples cannot change, "
                "so they have no `reverse()` method.\n\nMake a list first with "
                "`items = list(items)`, or keep the tuple and write `items = items[::-1]`."
            ),
            status="complete",
            created_at=at(2024, 6, 10, 16, 2, 41, 800751),
            backend=None,
            model="gpt-4o",
            usage=None,
        ),
    ),
    leaf_key=LAST_REPLY,
)


def load_fixture() -> Any:
    return json.loads(FIXTURE.read_text(encoding="utf-8"))


# ChatGPT -----------------------------------------------------------------------------------


def test_a_chatgpt_export_keeps_the_tree_a_reader_saw() -> None:
    assert parse_import(load_fixture()) == [LINEAR, BRANCHING]


def test_one_chatgpt_conversation_imports_on_its_own() -> None:
    assert parse_import(load_fixture()[1]) == [BRANCHING]


def test_an_empty_chatgpt_export_imports_nothing() -> None:
    assert parse_import([]) == []


def node(
    key: str,
    parent: str | None,
    role: str | None = None,
    parts: list[Any] | None = None,
    create_time: float | None = None,
    **message: Any,
) -> dict[str, Any]:
    """A mapping node as ChatGPT writes it (the root when ``role`` is None)."""
    body = None
    if role is not None:
        body = {
            "id": key,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": create_time,
            "content": {"content_type": "text", "parts": parts or []},
            "status": "finished_successfully",
            "metadata": {},
            "recipient": "all",
            **message,
        }
    return {"id": key, "message": body, "parent": parent, "children": []}


T0 = 1700000000.0  # 2023-11-14T22:13:20Z


def conversation(*nodes: dict[str, Any], current: str | None) -> dict[str, Any]:
    return {
        "title": "Test",
        "create_time": T0,
        "mapping": {n["id"]: n for n in nodes},
        "current_node": current,
    }


def test_dropped_messages_pass_their_children_and_the_current_node_up() -> None:
    data = conversation(
        node("root", None),
        node("q", "root", "user", ["Plot this", {"content_type": "image_asset_pointer"}], T0 + 10),
        node("call", "q", "assistant", ["{}"], T0 + 11, recipient="dalle.text2im"),
        node("tool", "call", "tool", ["image made"], T0 + 12),
        node("blank", "tool", "assistant", ["", " \n"], T0 + 13),
        node("a", "blank", "assistant", ["Here it is", "", "Anything else?"]),
        node(
            "hidden",
            "a",
            "user",
            ["x"],
            T0 + 14,
            metadata={"is_visually_hidden_from_conversation": True},
        ),
        current="hidden",
    )
    assert parse_import(data) == [
        ImportedSession(
            title="Test",
            backend=None,
            model=None,
            system_prompt=None,
            created_at=at(2023, 11, 14, 22, 13, 20),
            messages=(
                ImportedMessage(
                    "q", None, "user", "Plot this", "complete", at(2023, 11, 14, 22, 13, 30),
                    None, None, None,
                ),
                # No create_time: the conversation's.
                ImportedMessage(
                    "a", "q", "assistant", "Here it is\n\nAnything else?", "complete",
                    at(2023, 11, 14, 22, 13, 20), None, None, None,
                ),
            ),
            leaf_key="a",
        )
    ]  # fmt: skip


def test_siblings_come_oldest_first_and_a_missing_current_node_means_the_newest() -> None:
    data = conversation(
        node("late", None, "user", ["second"], T0 + 20),
        node("early", None, "user", ["first"], T0 + 10),
        node("reply", "early", "assistant", ["reply"], T0 + 30),
        current=None,
    )
    (session,) = parse_import(data)
    assert [(m.key, m.parent_key) for m in session.messages] == [
        ("early", None),
        ("late", None),
        ("reply", "early"),
    ]
    assert session.leaf_key == "reply"


# Export ------------------------------------------------------------------------------------

SESSION = Session(
    id="s1",
    owner="alice",
    title="Lists",
    backend="echo",
    model="echo-1",
    system_prompt="Be brief.",
    created_at=at(2026, 11, 24, 10, 0, 0),
    updated_at=at(2026, 11, 24, 10, 5, 0, 250000),
    message_count=6,
    leaf_id=6,
)
# 1 -> 2 (failed), 1 -> 3 (regenerated) -> 4 -> 5 (cancelled); 6 edits 1.
TREE = [
    Message(1, "s1", "user", "How do I reverse a list?", "complete",
            at(2026, 11, 24, 10, 0, 1), client_id="c-1"),
    Message(2, "s1", "assistant", "Use", "error", at(2026, 11, 24, 10, 0, 2),
            reply_to=1, backend="echo", model="echo-1", parent_id=1),
    Message(3, "s1", "assistant", "Use `items.reverse()`.", "complete",
            at(2026, 11, 24, 10, 1, 0, 123456), reply_to=1, backend="echo", model="echo-2",
            usage={"input_tokens": 12, "output_tokens": 7}, parent_id=1),
    Message(4, "s1", "user", "And a copy?", "complete", at(2026, 11, 24, 10, 2, 0),
            client_id="c-2", parent_id=3),
    Message(5, "s1", "assistant", "```python\nitems[::-1]", "cancelled",
            at(2026, 11, 24, 10, 2, 1), reply_to=4, backend="echo", model="echo-1",
            parent_id=4),
    Message(6, "s1", "user", "How do I reverse a tuple?", "complete",
            at(2026, 11, 24, 10, 5, 0, 250000), client_id="c-3"),
]  # fmt: skip


def test_export_json_holds_the_whole_tree_in_id_order() -> None:
    exported = export_json(SESSION, [TREE[5], TREE[2], TREE[0], TREE[1], TREE[4], TREE[3]])
    assert exported == {
        "format": "chatbot.session.v1",
        "session": {
            "title": "Lists",
            "backend": "echo",
            "model": "echo-1",
            "system_prompt": "Be brief.",
            "created_at": "2026-11-24T10:00:00.000000Z",
            "updated_at": "2026-11-24T10:05:00.250000Z",
            "leaf_id": 6,
        },
        "messages": [
            {"id": 1, "role": "user", "content": "How do I reverse a list?",
             "status": "complete", "created_at": "2026-11-24T10:00:01.000000Z",
             "client_id": "c-1", "parent_id": None},
            {"id": 2, "role": "assistant", "content": "Use", "status": "error",
             "created_at": "2026-11-24T10:00:02.000000Z", "in_reply_to": 1,
             "backend": "echo", "model": "echo-1", "parent_id": 1},
            {"id": 3, "role": "assistant", "content": "Use `items.reverse()`.",
             "status": "complete", "created_at": "2026-11-24T10:01:00.123456Z",
             "in_reply_to": 1, "backend": "echo", "model": "echo-2",
             "usage": {"input_tokens": 12, "output_tokens": 7}, "parent_id": 1},
            {"id": 4, "role": "user", "content": "And a copy?", "status": "complete",
             "created_at": "2026-11-24T10:02:00.000000Z", "client_id": "c-2",
             "parent_id": 3},
            {"id": 5, "role": "assistant", "content": "```python\nitems[::-1]",
             "status": "cancelled", "created_at": "2026-11-24T10:02:01.000000Z",
             "in_reply_to": 4, "backend": "echo", "model": "echo-1", "parent_id": 4},
            {"id": 6, "role": "user", "content": "How do I reverse a tuple?",
             "status": "complete", "created_at": "2026-11-24T10:05:00.250000Z",
             "client_id": "c-3", "parent_id": None},
        ],
    }  # fmt: skip


def test_an_export_imports_back_as_the_same_tree() -> None:
    text = json.dumps(export_json(SESSION, TREE))
    assert parse_import(json.loads(text)) == [
        ImportedSession(
            title="Lists",
            backend="echo",
            model="echo-1",
            system_prompt="Be brief.",
            created_at=at(2026, 11, 24, 10, 0, 0),
            messages=(
                ImportedMessage("1", None, "user", "How do I reverse a list?", "complete",
                                at(2026, 11, 24, 10, 0, 1), None, None, None),
                ImportedMessage("2", "1", "assistant", "Use", "error",
                                at(2026, 11, 24, 10, 0, 2), "echo", "echo-1", None),
                ImportedMessage("3", "1", "assistant", "Use `items.reverse()`.", "complete",
                                at(2026, 11, 24, 10, 1, 0, 123456), "echo", "echo-2",
                                {"input_tokens": 12, "output_tokens": 7}),
                ImportedMessage("4", "3", "user", "And a copy?", "complete",
                                at(2026, 11, 24, 10, 2, 0), None, None, None),
                ImportedMessage("5", "4", "assistant", "```python\nitems[::-1]", "cancelled",
                                at(2026, 11, 24, 10, 2, 1), "echo", "echo-1", None),
                ImportedMessage("6", None, "user", "How do I reverse a tuple?", "complete",
                                at(2026, 11, 24, 10, 5, 0, 250000), None, None, None),
            ),
            leaf_key="6",
        )
    ]  # fmt: skip


def test_markdown_is_the_current_branch_with_failed_replies_marked() -> None:
    branch = TREE[0:1] + TREE[2:5]
    assert export_markdown(SESSION, branch, exported_at=at(2026, 11, 25, 8, 30, 59)) == (
        "# Lists\n"
        "\n"
        "Exported on 2026-11-25 08:30 UTC.\n"
        "\n"
        "## User\n"
        "\n"
        "How do I reverse a list?\n"
        "\n"
        "## Assistant\n"
        "\n"
        "Use `items.reverse()`.\n"
        "\n"
        "## User\n"
        "\n"
        "And a copy?\n"
        "\n"
        "## Assistant (cancelled)\n"
        "\n"
        "```python\n"
        "items[::-1]\n"
        "```\n"
    )


def test_markdown_of_an_untitled_session_with_an_empty_failed_reply() -> None:
    session = Session("s2", "alice", None, "echo", None, None, at(2026, 1, 1), at(2026, 1, 1))
    branch = [
        Message(1, "s2", "user", "Hi\n\n# not a title", "complete", at(2026, 1, 1)),
        Message(2, "s2", "assistant", "", "error", at(2026, 1, 1), parent_id=1),
        Message(3, "s2", "assistant", "Hel", "in_progress", at(2026, 1, 1), parent_id=1),
    ]
    assert export_markdown(session, branch) == (
        "# Untitled conversation\n\n## User\n\nHi\n\n# not a title\n\n## Assistant (error)\n\n"
        "## Assistant (in progress)\n\nHel\n"
    )


@pytest.mark.parametrize(
    ("text", "closed"),
    [
        ("no code", "no code"),
        ("```\ndone\n```", "```\ndone\n```"),
        ("```python\nopen", "```python\nopen\n```"),
        ("````\nx\n```\nstill open\n", "````\nx\n```\nstill open\n````"),
        ("~~~\nx\n```", "~~~\nx\n```\n~~~"),
        ("``` not `a` fence\n", "``` not `a` fence\n"),
        ("   ```\nindented open", "   ```\nindented open\n```"),
        ("    ```\nan indented code line", "    ```\nan indented code line"),
        ("```\nx\n``` not a close", "```\nx\n``` not a close\n```"),
    ],
)
def test_a_reply_cut_inside_a_code_block_gets_it_closed(text: str, closed: str) -> None:
    assert close_code_fence(text) == closed


# Our format: what it accepts ----------------------------------------------------------------


def ours(*messages: dict[str, Any], **session: Any) -> dict[str, Any]:
    """A chatbot.session.v1 export; ``session`` overrides its session fields."""
    fields = {
        "title": None,
        "backend": "echo",
        "model": None,
        "system_prompt": None,
        "created_at": "2026-11-24T10:00:00Z",
        "updated_at": "2026-11-24T10:00:00Z",
        "leaf_id": None,
    }
    return {"format": FORMAT, "session": fields | session, "messages": list(messages)}


def message(ident: int, parent: int | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "id": ident,
        "parent_id": parent,
        "role": "user",
        "content": f"message {ident}",
        "status": "complete",
        "created_at": "2026-11-24T10:00:00Z",
    } | fields


def test_in_progress_imports_as_cancelled_and_no_leaf_means_the_newest() -> None:
    (session,) = parse_import(
        ours(
            message(7, created_at="2026-11-24T11:00:00+01:00"),
            message(3, 7, role="assistant", status="in_progress", usage={}),
            message(9, None, created_at="2026-11-24T09:59:59.999999999z"),
        )
    )
    assert [(m.key, m.status, m.created_at) for m in session.messages] == [
        ("7", "complete", at(2026, 11, 24, 10, 0, 0)),
        ("3", "cancelled", at(2026, 11, 24, 10, 0, 0)),
        ("9", "complete", at(2026, 11, 24, 9, 59, 59, 999999)),
    ]
    assert session.messages[1].usage == {}
    assert session.leaf_key == "3"  # as old as 7, and listed later


def test_an_empty_session_imports_with_no_leaf() -> None:
    (session,) = parse_import(ours())
    assert (session.messages, session.leaf_key) == ((), None)


# What each import refuses --------------------------------------------------------------------

CHATGPT = load_fixture()[1]


def chatgpt_with(path: str, value: Any) -> dict[str, Any]:
    """The branching fixture conversation with the value at ``a/b/c`` replaced."""
    data = copy.deepcopy(CHATGPT)
    *parents, last = path.split("/")
    target = data
    for name in parents:
        target = target[name]
    target[last] = value
    return data


ROOT = "37ed17df-a7ae-492e-beb4-5171f538345a"
NODE = f"mapping/{FIRST_QUESTION}"
BAD_IMPORTS: list[tuple[Any, str]] = [
    (42, 'the import is neither a chatbot.session.v1 export (an object with "format") nor a '
         'ChatGPT conversation (an object with "mapping") nor an array of ChatGPT conversations'),
    ({"title": "x"}, 'the import is neither a chatbot.session.v1 export (an object with '
                     '"format") nor a ChatGPT conversation (an object with "mapping") nor an '
                     'array of ChatGPT conversations'),
    ([CHATGPT, "x"], 'conversations[1] is neither a chatbot.session.v1 export (an object with '
                     '"format") nor a ChatGPT conversation (an object with "mapping") nor an '
                     'array of ChatGPT conversations'),
    ({"format": "chatbot.session.v2"}, 'format "chatbot.session.v2" is not one this server '
     "reads: export as chatbot.session.v1, or import a ChatGPT export"),
    ({"format": ["x"]}, "format of this type is not one this server reads: export as "
     "chatbot.session.v1, or import a ChatGPT export"),
    ({"format": FORMAT, "messages": []}, "session must be an object"),
    ({"format": FORMAT, "session": {}, "messages": {}}, "messages must be an array"),
    (ours(created_at=None), "session.created_at must be an RFC 3339 time such as "
     "2026-11-24T10:00:00Z"),
    (ours(title=5), "session.title must be a string or null"),
    (ours(system_prompt="\ud800"), "session.system_prompt holds a lone surrogate, which is "
     "not text"),
    (ours(updated_at="2026-11-24"), "session.updated_at must be an RFC 3339 time such as "
     "2026-11-24T10:00:00Z"),
    (ours(leaf_id="1"), "session.leaf_id must be a message id or null"),
    (ours(message(1), leaf_id=2), "session.leaf_id 2 is not the id of a message in messages"),
    (ours(message(1), "x"), "messages[1] must be an object"),
    (ours(message(True)), "messages[0].id must be a positive integer"),
    (ours(message(0)), "messages[0].id must be a positive integer"),
    (ours(message(2**63)), "messages[0].id must be a positive integer"),
    (ours(message(1), message(1)), "messages[1].id 1 is the id of an earlier message too"),
    (ours({"id": 1, "role": "user"}), "messages[0].parent_id is missing: give the id of the "
     "message it follows, or null for a first message"),
    (ours(message(1, 1.0)), "messages[0].parent_id must be a message id or null"),
    (ours(message(1, 1)), "messages[0].parent_id 1 is not the id of an earlier message: list "
     "every message after the one it follows"),
    (ours(message(1, 2), message(2, 1)), "messages[0].parent_id 2 is not the id of an earlier "
     "message: list every message after the one it follows"),
    (ours(message(1), message(2, 1, role="system")), "messages[1].role must be user or "
     "assistant"),
    (ours(message(1, status="done")), "messages[0].status must be complete, cancelled, error "
     "or in_progress"),
    (ours(message(1, status=["complete"])), "messages[0].status must be complete, cancelled, "
     "error or in_progress"),
    (ours(message(1, content=None)), "messages[0].content must be a string"),
    (ours(message(1, content="a\udc00b")), "messages[0].content holds a lone surrogate, which "
     "is not text"),
    ({"format": FORMAT, "session": ours()["session"], "messages": [{"id": 1, "parent_id": None,
      "role": "user", "content": "", "status": "complete"}]},
     "messages[0].created_at is missing: give an RFC 3339 time such as 2026-11-24T10:00:00Z"),
    (ours(message(1, created_at="yesterday")), "messages[0].created_at must be an RFC 3339 "
     "time such as 2026-11-24T10:00:00Z"),
    (ours(message(1, created_at="2026-11-24T10:00:00")), "messages[0].created_at must be an "
     "RFC 3339 time such as 2026-11-24T10:00:00Z"),
    (ours(message(1, created_at="2026-02-30T10:00:00Z")), "messages[0].created_at must be an "
     "RFC 3339 time such as 2026-11-24T10:00:00Z"),
    (ours(message(1, created_at="0001-01-01T00:00:00+01:00")), "messages[0].created_at must "
     "be an RFC 3339 time such as 2026-11-24T10:00:00Z"),
    (ours(message(1, created_at=1764000000)), "messages[0].created_at must be an RFC 3339 "
     "time such as 2026-11-24T10:00:00Z"),
    (ours(message(1, model=3)), "messages[0].model must be a string or null"),
    (ours(message(1, usage=12)), "messages[0].usage must be an object of token counts or null"),
    (ours(message(1, usage={"input_tokens": -1})), "messages[0].usage.input_tokens must be a "
     "non-negative integer"),
    (ours(message(1, usage={"output_tokens": 1.5})), "messages[0].usage.output_tokens must be "
     "a non-negative integer"),
    (ours(message(1, usage={"a b": True})), 'messages[0].usage["a b"] must be a non-negative '
     "integer"),
    (ours(message(1, usage={"input_tokens": {"nested": 1}})), "messages[0].usage.input_tokens "
     "must be a non-negative integer"),
    (chatgpt_with("mapping", []), "mapping must be an object of nodes"),
    (chatgpt_with("title", {"text": "x"}), "title must be a string or null"),
    (chatgpt_with("create_time", None), "create_time must be a number of seconds since 1970"),
    (chatgpt_with("create_time", "1718035200"), "create_time must be a number of seconds "
     "since 1970"),
    (chatgpt_with("create_time", float("nan")), "create_time must be a number of seconds "
     "since 1970"),
    (chatgpt_with("create_time", 1e300), "create_time must be a number of seconds since 1970"),
    (chatgpt_with("current_node", 7), "current_node must be a node id or null"),
    (chatgpt_with("current_node", "gone"), 'current_node "gone" is not a node of mapping'),
    (chatgpt_with(NODE, None), f'mapping["{FIRST_QUESTION}"] must be an object'),
    (chatgpt_with(f"{NODE}/parent", ["x"]), f'mapping["{FIRST_QUESTION}"].parent must be a '
     "node id or null"),
    (chatgpt_with(f"{NODE}/parent", "x" * 50), f'mapping["{FIRST_QUESTION}"].parent "'
     + "x" * 40 + '..." is not a node of mapping'),
    (chatgpt_with(f"mapping/{ROOT}/parent", LAST_REPLY), f'mapping has a cycle: node "{ROOT}" '
     "is its own ancestor"),
    (chatgpt_with(f"{NODE}/message", "hi"), f'mapping["{FIRST_QUESTION}"].message must be an '
     "object or null"),
    (chatgpt_with(f"{NODE}/message/author", None), f'mapping["{FIRST_QUESTION}"].message.author '
     "must be an object"),
    (chatgpt_with(f"{NODE}/message/author/role", 1), f'mapping["{FIRST_QUESTION}"].message.'
     "author.role must be a string"),
    (chatgpt_with(f"{NODE}/message/metadata", []), f'mapping["{FIRST_QUESTION}"].message.'
     "metadata must be an object or null"),
    (chatgpt_with(f"{NODE}/message/content", "text"), f'mapping["{FIRST_QUESTION}"].message.'
     "content must be an object"),
    (chatgpt_with(f"{NODE}/message/content/parts", "hi"), f'mapping["{FIRST_QUESTION}"].'
     "message.content.parts must be an array or null"),
    (chatgpt_with(f"{NODE}/message/content/parts", ["\ud83d"]), f'mapping["{FIRST_QUESTION}"]'
     ".message.content.parts holds a lone surrogate, which is not text"),
    (chatgpt_with(f"{NODE}/message/create_time", "now"), f'mapping["{FIRST_QUESTION}"].'
     "message.create_time must be a number of seconds since 1970 or null"),
    (chatgpt_with(f"{NODE}/message/create_time", -1e12), f'mapping["{FIRST_QUESTION}"].'
     "message.create_time must be a number of seconds since 1970 or null"),
    ([CHATGPT, chatgpt_with("mapping", None)], "conversations[1].mapping must be an object of "
     "nodes"),
    ({"mapping": {"\ud800": {}}, "create_time": 0}, 'mapping["\\ud800"] has a node id that is '
     "not text"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "problem"), BAD_IMPORTS)
def test_bad_imports_name_the_problem_and_where(data: Any, problem: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_import(data)
    assert (raised.value.code, raised.value.message, raised.value.status) == (
        "invalid_import",
        problem,
        422,
    )


def test_more_conversations_than_one_import_takes() -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_import([{}] * (MAX_IMPORT_SESSIONS + 1))
    assert raised.value.message == (
        "the import holds 1001 conversations; at most 1000 are imported at once: "
        "split it into smaller files"
    )
    assert len(parse_import([CHATGPT] * MAX_IMPORT_SESSIONS)) == MAX_IMPORT_SESSIONS


def test_more_messages_than_one_import_takes_across_conversations() -> None:
    linear = [message(n, n - 1 or None) for n in range(1, 60_001)]
    first, second = ours(*linear), ours(*linear[: MAX_IMPORT_MESSAGES - 60_000])
    assert [len(s.messages) for s in parse_import([first, second])] == [60_000, 40_000]
    second["messages"].append(message(100_001, 1))
    with pytest.raises(InvalidRequest) as raised:
        parse_import([first, second])
    assert raised.value.message == (
        "the import holds more than 100000 messages, the most imported at once: "
        "split it into smaller files"
    )


def test_chatgpt_messages_count_against_the_same_limit() -> None:
    chain = {
        f"n{n}": node(f"n{n}", f"n{n - 1}" if n else None, "user", ["hi"], 1.0)
        for n in range(MAX_IMPORT_MESSAGES + 1)
    }
    with pytest.raises(InvalidRequest) as raised:
        parse_import({"create_time": 0, "mapping": chain, "current_node": None})
    assert raised.value.message == (
        "the import holds more than 100000 messages, the most imported at once: "
        "split it into smaller files"
    )


# Hostile input ----------------------------------------------------------------------------------


def nested(depth: int, leaf: Any = None) -> Any:
    """``[[[...leaf...]]]`` built without recursion, deeper than any stack."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


DEEP = nested(200_000)
NEITHER = (
    'is neither a chatbot.session.v1 export (an object with "format") nor a ChatGPT '
    'conversation (an object with "mapping") nor an array of ChatGPT conversations'
)
HOSTILE_IMPORTS: list[tuple[Any, str]] = [
    (DEEP, f"conversations[0] {NEITHER}"),
    ([DEEP], f"conversations[0] {NEITHER}"),
    ({"format": DEEP}, "format of this type is not one this server reads: export as "
     "chatbot.session.v1, or import a ChatGPT export"),
    (ours(DEEP), "messages[0] must be an object"),
    (ours(title=DEEP), "session.title must be a string or null"),
    (ours(message(1, content=DEEP)), "messages[0].content must be a string"),
    (ours(message(1, usage={"input_tokens": DEEP})), "messages[0].usage.input_tokens must be "
     "a non-negative integer"),
    (ours(message(1, created_at=DEEP)), "messages[0].created_at must be an RFC 3339 time such "
     "as 2026-11-24T10:00:00Z"),
    (ours(message(10**4000)), "messages[0].id must be a positive integer"),
    (chatgpt_with("mapping", DEEP), "mapping must be an object of nodes"),
    (chatgpt_with("create_time", 10**4000), "create_time must be a number of seconds since "
     "1970"),
    (chatgpt_with(f"{NODE}/parent", DEEP), f'mapping["{FIRST_QUESTION}"].parent must be a '
     "node id or null"),
    (chatgpt_with(f"{NODE}/message/author/role", DEEP), f'mapping["{FIRST_QUESTION}"].'
     "message.author.role must be a string"),
]  # fmt: skip


@pytest.mark.parametrize(("data", "problem"), HOSTILE_IMPORTS, ids=range(len(HOSTILE_IMPORTS)))
def test_hostile_input_is_refused_without_running_out_of_stack(data: Any, problem: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        parse_import(data)
    assert (raised.value.code, raised.value.message) == ("invalid_import", problem)


def test_deep_values_where_they_are_not_read_do_not_matter() -> None:
    # Parts that are not strings (images) are skipped, however deep; so is the recipient
    # of a user's message (only an assistant's message can be a call to a tool).
    (session,) = parse_import(chatgpt_with(f"{NODE}/message/content/parts", [DEEP, "x"]))
    assert session.messages[0] == replace(BRANCHING.messages[0], content="x")
    assert parse_import(chatgpt_with(f"{NODE}/message/recipient", DEEP)) == [BRANCHING]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


def places(data: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in ``data``, found without recursion."""
    found: list[tuple[Any, Any]] = []
    stack = [data]
    while stack:
        value = stack.pop()
        keys = value.keys() if isinstance(value, dict) else range(len(value))
        for key in keys:
            found.append((value, key))
            if isinstance(value[key], dict | list):
                stack.append(value[key])
    return found


def assert_imports_or_is_refused(data: Any) -> None:
    """``data`` is refused as invalid, or imports as trees with parents first."""
    try:
        sessions = parse_import(data)
    except InvalidRequest as error:
        assert error.code == "invalid_import"
        return
    for session in sessions:
        keys: list[str] = []
        for message in session.messages:
            assert message.parent_key is None or message.parent_key in keys
            assert message.key not in keys
            keys.append(message.key)
        assert session.leaf_key in (keys or [None])


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(data=JSON)
def test_any_json_imports_or_is_refused_as_invalid(data: Any) -> None:
    assert_imports_or_is_refused(data)


@FUZZ
@given(choice=st.integers(min_value=0), value=JSON)
def test_a_chatgpt_export_with_any_value_replaced_imports_or_is_refused(
    choice: int, value: Any
) -> None:
    data = copy.deepcopy(CHATGPT)
    targets = places(data)
    container, key = targets[choice % len(targets)]
    container[key] = value
    assert_imports_or_is_refused(data)


@FUZZ
@given(choice=st.integers(min_value=0), value=JSON)
def test_an_export_with_any_value_replaced_imports_or_is_refused(choice: int, value: Any) -> None:
    data = export_json(SESSION, TREE)
    targets = places(data)
    container, key = targets[choice % len(targets)]
    container[key] = value
    assert_imports_or_is_refused(data)
