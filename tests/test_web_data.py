"""The chat page's conversations as data, in Chromium: search from the sidebar, export as
JSON and Markdown, import of a ChatGPT export, shared links and the read-only page they open
(and, over plain HTTP, the headers and status of that page)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from chatbot.settings import Settings
from chatbot.web import Assets, content_security_policy
from tests.browser import ConsoleLog, open_chat, screenshot, send_message, wait_for_replies
from tests.conftest import (
    GENEROUS_LIMITS,
    LiveServer,
    ServerFactory,
    make_token,
    recv_json,
)
from tests.conversations import api, seed

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.browser"]

ALICE = make_token("alice")
CHATGPT_EXPORT = Path(__file__).parent / "fixtures" / "chatgpt" / "conversations.json"
MISSING = "This shared conversation does not exist or was revoked."
#: Markup that would run script if a page took it for HTML.
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture
def roomy(start_server: ServerFactory) -> LiveServer:
    """A server whose limits let a test write many messages quickly."""
    return start_server(start_server.settings(**GENEROUS_LIMITS))


def search_box(page: Page) -> Locator:
    return page.get_by_role("searchbox", name="Search conversations")


def results(page: Page) -> Locator:
    """The search results' links."""
    return page.get_by_role("region", name="Search results").get_by_role("link")


def sessions_nav(page: Page) -> Locator:
    return page.get_by_role("navigation", name="Sessions")


def dark(page: Page, name: str) -> None:
    """Screenshot ``page`` in dark mode as ``name``-dark, then go back to light."""
    page.emulate_media(color_scheme="dark")
    screenshot(page, f"{name}-dark")
    page.emulate_media(color_scheme="light")


def record_dialogs(page: Page) -> list[str]:
    """The messages of every alert() the page opens from now on (each is dismissed)."""
    opened: list[str] = []

    def dismiss(dialog: Any) -> None:
        opened.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    return opened


# Search -------------------------------------------------------------------------------------


def test_search_opens_an_older_session_at_the_message(roomy: LiveServer, page: Page) -> None:
    # The hit is the first of 60 messages: older than the first page the session opens with.
    garden = ["🌸 planted a rhododendron by the gate, day 0"]
    garden += [f"watered the beans, day {n}" for n in range(1, 30)]
    garden_id = seed(roomy, "Garden notes", garden)
    seed(roomy, "Trip planning", ["Paris in May"])
    seed(roomy, None, ["leek soup"])
    open_chat(page, roomy.url, ALICE)
    expect(sessions_nav(page).get_by_role("link")).to_have_count(3)

    search_box(page).fill("rhodo")
    found = results(page)
    expect(found).to_have_count(2)  # the message and its echo
    expect(sessions_nav(page)).to_be_hidden()
    mine = found.filter(has=page.locator(".search-role", has_text="You"))
    expect(mine.locator(".search-title")).to_have_text("Garden notes")
    expect(mine.locator(".search-text")).to_have_text(
        "🌸 planted a rhododendron by the gate, day 0"
    )
    # The hit is highlighted, and only the hit (the emoji before it shifts nothing).
    expect(mine.locator("mark")).to_have_text(["rhododendron"])
    screenshot(page, "search-results")
    dark(page, "search-results")

    mine.click()
    expect(page).to_have_url(re.compile(f"#session={garden_id}$"))
    log = page.get_by_role("log")
    target = log.locator("article.message.found")
    expect(target).to_have_count(1)
    expect(target).to_contain_text("🌸 planted a rhododendron by the gate, day 0")
    expect(target).to_have_class(re.compile(r"\buser\b"))
    expect(target).to_be_in_viewport()
    screenshot(page, "search-opened")
    expect(page.get_by_role("heading", level=1)).to_have_text("Garden notes")
    # The results stay while the box holds text; Escape empties it and the sessions return.
    expect(found).to_have_count(2)
    search_box(page).press("Escape")
    expect(search_box(page)).to_have_value("")
    expect(sessions_nav(page).get_by_role("link")).to_have_count(3)
    expect(page.get_by_role("region", name="Search results")).to_be_hidden()


def test_search_switches_to_the_branch_of_the_message(server: LiveServer, page: Page) -> None:
    session_id = seed(server, "Two questions", ["alpaca wool question"])
    # An edit of the first message: a second branch, which becomes current.
    with server.ws(ALICE, session_id=session_id) as ws:
        ws.send(json.dumps({"message": "llama fleece question", "parent_id": None}))
        frames = [recv_json(ws), recv_json(ws)]
    assert [f["type"] for f in frames] == ["branch", "message"], frames
    open_chat(page, server.url, ALICE)
    log = page.get_by_role("log")
    page.get_by_role("link", name="Two questions").click()
    expect(log).to_contain_text("Echo: llama fleece question")

    search_box(page).fill("alpaca")
    expect(results(page)).to_have_count(2)
    results(page).filter(has=page.locator(".search-role", has_text="You")).click()
    target = log.locator("article.message.found")
    expect(target).to_contain_text("alpaca wool question")
    expect(log).to_contain_text("Echo: alpaca wool question")
    expect(log).not_to_contain_text("llama")
    with api(server) as http:
        messages = http.get(f"/api/sessions/{session_id}/messages").json()["messages"]
    assert [m["content"] for m in messages] == [
        "alpaca wool question",
        "Echo: alpaca wool question",
    ]


def test_search_pages_with_load_more(roomy: LiveServer, page: Page) -> None:
    seed(roomy, "Fruit", [f"kiwi number {n}" for n in range(13)])
    open_chat(page, roomy.url, ALICE)
    search_box(page).fill("kiwi")
    expect(results(page)).to_have_count(20)
    more = page.get_by_role("button", name="Load more")
    more.click()
    expect(results(page)).to_have_count(26)
    expect(more).to_be_hidden()


def test_queries_that_mean_nothing_or_too_much(
    server: LiveServer, page: Page, console: ConsoleLog
) -> None:
    console.allow(r"status of 422")
    seed(server, "Notes", ["by the river"])
    open_chat(page, server.url, ALICE)
    box = search_box(page)
    status = page.get_by_role("region", name="Search results").get_by_role("status")
    # Not FTS5 syntax here: words to look for, and none of them is in a message.
    box.fill('"NEAR(*')
    expect(status).to_have_text('No messages match “"NEAR(*”.')
    box.fill("*(:^)-")
    expect(status).to_have_text("No messages match “*(:^)-”.")
    expect(results(page)).to_have_count(0)
    # Refused by the server (422): its words, where the query was typed.
    box.fill(" ".join(f"w{n}" for n in range(33)))
    expect(status).to_have_text(
        "a search query may hold at most 32 words and quoted phrases, this one has 33: remove some"
    )
    expect(status).to_have_class(re.compile("error-text"))
    expect(page.get_by_role("alert")).to_be_hidden()  # not the page's error toast
    box.fill("river")
    expect(results(page)).to_have_count(2)
    expect(status).to_be_hidden()


# Export and import ---------------------------------------------------------------------------


def test_export_json_and_markdown(server: LiveServer, page: Page, tmp_path: Path) -> None:
    session_id = seed(server, "Packing list", ["socks", "a *warm* hat"])
    open_chat(page, server.url, ALICE)
    page.get_by_role("link", name="Packing list").click()
    expect(page.get_by_role("log")).to_contain_text("Echo: a warm hat")

    export = page.locator("#export-menu summary")
    export.click()
    screenshot(page, "export-menu")
    with page.expect_download() as info:
        page.get_by_role("button", name="Export JSON").click()
    download = info.value
    assert download.suggested_filename == f"chatbot-{session_id}.json"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    exported = json.loads(saved.read_text(encoding="utf-8"))
    assert exported["format"] == "chatbot.session.v1"
    assert exported["session"]["title"] == "Packing list"
    assert [(m["role"], m["content"]) for m in exported["messages"]] == [
        ("user", "socks"),
        ("assistant", "Echo: socks"),
        ("user", "a *warm* hat"),
        ("assistant", "Echo: a *warm* hat"),
    ]
    # The menu closed after the choice.
    expect(page.get_by_role("button", name="Export JSON")).to_be_hidden()

    export.click()
    with page.expect_download() as info:
        page.get_by_role("button", name="Export Markdown").click()
    download = info.value
    assert download.suggested_filename == f"chatbot-{session_id}.md"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    markdown = saved.read_text(encoding="utf-8")
    with api(server) as http:
        response = http.get(f"/api/sessions/{session_id}/export?format=markdown")
    assert markdown == response.text
    assert markdown.startswith("# Packing list\n")
    assert "a *warm* hat" in markdown and "Echo: socks" in markdown


def choose_file(page: Page, path: Path) -> None:
    """Press Import and pick ``path`` in the file chooser."""
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Import").click()
    chooser.value.set_files(str(path))


def test_import_a_chatgpt_export(server: LiveServer, page: Page, console: ConsoleLog) -> None:
    seed(server, "Already here", ["hello"])
    open_chat(page, server.url, ALICE)
    choose_file(page, CHATGPT_EXPORT)
    links = sessions_nav(page).get_by_role("link")
    expect(links).to_have_text(["Autumn rain haiku", "Reverse list in Python", "Already here"])
    # The first conversation of the file opens.
    log = page.get_by_role("log")
    expect(page.get_by_role("heading", level=1)).to_have_text("Autumn rain haiku")
    expect(log).to_contain_text("until the dog wakes")
    # The other one shows the branch its current_node ends: the edited question and the
    # regenerated reply, not the first question or the first reply to the edit.
    page.get_by_role("link", name="Reverse list in Python").click()
    expect(log).to_contain_text("How do I reverse a list in Python without making a copy?")
    expect(log).to_contain_text("Use the list's own method:")
    expect(log).to_contain_text("Your screenshot shows items is a tuple")
    expect(log.locator("article.message")).to_have_count(4)
    expect(log).not_to_contain_text("Use slicing")
    expect(log).not_to_contain_text("it reverses the list in place and returns")


def test_a_refused_import_says_why(
    start_server: ServerFactory, page: Page, console: ConsoleLog, tmp_path: Path
) -> None:
    server = start_server(max_import_bytes=2_000)
    open_chat(page, server.url, ALICE)
    console.allow(r"status of 4(13|22)")
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"format": "nope"}', encoding="utf-8")
    choose_file(page, wrong)
    toast = page.get_by_role("alert")
    expect(toast).to_have_text(
        'format "nope" is not one this server reads: export as chatbot.session.v1, '
        "or import a ChatGPT export"
    )
    choose_file(page, CHATGPT_EXPORT)  # larger than 2,000 bytes
    expect(toast).to_contain_text("2000 bytes")
    expect(sessions_nav(page).get_by_role("link")).to_have_count(0)
    expect(page.get_by_role("button", name="Import")).to_be_enabled()


def share_of(server: LiveServer, messages: Sequence[str]) -> str:
    """A share of a new session holding ``messages``; its id."""
    session_id = seed(server, "Shared", messages)
    with api(server) as http:
        response = http.post(f"/api/sessions/{session_id}/shares")
    assert response.status_code == 201, response.text
    share_id: str = response.json()["share_id"]
    return share_id


# Shared links -------------------------------------------------------------------------------


def test_share_then_revoke(
    server: LiveServer, new_page: Callable[..., Page], console: ConsoleLog
) -> None:
    session_id = seed(
        server, "Bread recipe", ["flour, water, salt", "then:\n\n```\nbake 40 min\n```"]
    )
    page = new_page(
        viewport={"width": 1280, "height": 800}, permissions=["clipboard-read", "clipboard-write"]
    )
    open_chat(page, server.url, ALICE)
    page.get_by_role("link", name="Bread recipe").click()
    expect(page.get_by_role("log")).to_contain_text("Echo: flour, water, salt")
    page.get_by_role("button", name="Share").click()
    dialog = page.get_by_role("dialog", name="Share this chat")
    expect(dialog).to_be_visible()
    link = dialog.get_by_role("textbox", name="Link")
    expect(link).to_have_value(re.compile(re.escape(server.url) + r"/s/[\w-]{32}$"))
    expect(link).to_have_attribute("readonly", "")
    url = link.input_value()
    shares = dialog.get_by_role("listitem")
    expect(shares).to_have_count(1)
    expect(shares).to_contain_text("4 messages · this link")
    dialog.get_by_role("button", name="Copy link").click()
    expect(dialog.get_by_role("button", name="Copy link")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == url
    screenshot(page, "share-dialog")
    dark(page, "share-dialog")

    # Anyone with the link reads it: a browser that never signed in.
    reader = new_page(viewport={"width": 1024, "height": 700})
    response = reader.goto(url)
    assert response is not None and response.status == 200
    conversation = reader.get_by_role("region", name="Conversation")
    expect(reader.get_by_role("heading", level=1)).to_have_text("Bread recipe")
    expect(conversation.locator("article.message")).to_have_count(4)
    expect(conversation.locator("article.message.user")).to_have_text(
        [re.compile("flour, water, salt"), re.compile("bake 40 min")]
    )
    expect(conversation).to_contain_text("Echo: flour, water, salt")
    # Replies are Markdown: the fenced code is a code block.
    expect(conversation.locator(".code-block pre")).to_have_text("bake 40 min")
    expect(reader.get_by_role("textbox")).to_have_count(0)
    expect(reader.get_by_role("navigation")).to_have_count(0)
    assert "sessionStorage" not in reader.content()
    screenshot(reader, "share-page")
    dark(reader, "share-page")

    # A second link, then revoke the first: it leaves the list, and its page says so.
    dialog.get_by_role("button", name="Close").click()
    page.get_by_role("button", name="Share").click()
    expect(shares).to_have_count(2)
    second = link.input_value()
    assert second != url
    first = shares.filter(has_text=url.rsplit("/", 1)[1])
    first.get_by_role("button", name="Revoke").click()
    expect(shares).to_have_count(1)
    expect(shares).to_contain_text(second.rsplit("/", 1)[1])
    expect(link).to_have_value(second)
    console.allow(r"status of 404")
    response = reader.goto(url)
    assert response is not None and response.status == 404
    expect(reader.get_by_role("alert")).to_have_text(MISSING)
    expect(reader.get_by_role("region", name="Conversation")).to_be_hidden()
    screenshot(reader, "share-page-revoked")
    # Revoking the link shown empties the field.
    shares.get_by_role("button", name="Revoke").click()
    expect(shares).to_have_count(0)
    expect(link).to_be_hidden()
    expect(dialog.get_by_role("status")).to_have_text(
        "No links to this chat: nobody can read it without signing in."
    )
    with api(server) as http:
        assert http.get(f"/api/sessions/{session_id}/shares").json() == {"shares": []}


def test_the_share_page_shows_the_conversation_read_only(server: LiveServer, page: Page) -> None:
    share_id = share_of(server, ["**not bold** here", "a list:\n\n- one\n- two"])
    page.goto(f"{server.url}/s/{share_id}")
    expect(page).to_have_title("Shared · Shared chat")
    expect(page.get_by_role("heading", level=1)).to_have_text("Shared")
    conversation = page.get_by_role("region", name="Conversation")
    expect(conversation.locator("article.message .message-role")).to_have_text(
        ["You", "Assistant", "You", "Assistant"]
    )
    # The user's words as typed; the replies as Markdown.
    expect(conversation.locator("article.message.user .message-body")).to_have_text(
        ["**not bold** here", "a list:\n\n- one\n- two"]
    )
    expect(conversation.locator("article.message.assistant strong")).to_have_text("not bold")
    expect(conversation.locator("article.message.assistant li")).to_have_text(["one", "two"])
    expect(page.locator("#share-meta")).to_have_text(re.compile(r"^Shared .+ · 4 messages$"))
    assert page.get_by_role("textbox").count() == 0
    assert page.get_by_role("navigation").count() == 0


def test_an_unknown_share_shows_that_it_does_not_exist(
    server: LiveServer, page: Page, console: ConsoleLog
) -> None:
    console.allow(r"status of 404")
    response = page.goto(server.url + "/s/no-such-share-at-all")
    assert response is not None and response.status == 404
    expect(page.get_by_role("alert")).to_have_text(MISSING)


def test_markup_in_a_message_is_text_in_search_and_on_the_share_page(
    server: LiveServer, new_page: Callable[..., Page]
) -> None:
    page = new_page(viewport={"width": 1280, "height": 800})
    alerts = record_dialogs(page)
    open_chat(page, server.url, ALICE)
    send_message(page, HOSTILE)
    wait_for_replies(page, 1)

    search_box(page).fill("onerror")
    found = results(page)
    expect(found).to_have_count(2)
    expect(found.locator(".search-role")).to_have_text(["You", "Assistant"])
    expect(found.locator(".search-text")).to_have_text([HOSTILE, f"Echo: {HOSTILE}"])
    expect(found.locator("mark")).to_have_text(["onerror", "onerror"])
    panel = page.get_by_role("region", name="Search results")
    assert panel.locator("img").count() == 0

    page.get_by_role("button", name="Share").click()
    url = page.get_by_role("dialog").get_by_role("textbox", name="Link").input_value()
    reader = new_page(viewport={"width": 1024, "height": 700})
    reader_alerts = record_dialogs(reader)
    reader.goto(url)
    conversation = reader.get_by_role("region", name="Conversation")
    expect(conversation.locator("article.message .message-body")).to_have_text(
        [HOSTILE, f"Echo: {HOSTILE}"]
    )
    assert conversation.locator("img, [onerror]").count() == 0
    assert alerts == [] and reader_alerts == []


# The shared page over HTTP ------------------------------------------------------------------


def test_the_share_page_needs_no_token_and_holds_no_data(server: LiveServer) -> None:
    share_id = share_of(server, ["a secret recipe"])
    response = httpx.get(f"{server.url}/s/{share_id}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == content_security_policy(Settings())
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-robots-tag"] == "noindex"
    html = response.text
    # The same page for every share: the messages come from api/shares/<id>, by script.
    assert share_id not in html and "secret recipe" not in html
    assert response.content == Assets.load().share_html
    assert "config.json" not in html and "app.js" not in html
    assert "<script>" not in html and "style=" not in html
    version = Assets.load().version
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and all(u.startswith(f"../static/{version}/") for u in urls), urls
    for url in urls:
        asset = httpx.get(f"{server.url}/s/{url}")
        assert asset.status_code == 200, url


@pytest.mark.parametrize("share_id", ["unknown", "x" * 65])
def test_the_page_of_an_unknown_share_is_404(server: LiveServer, share_id: str) -> None:
    response = httpx.get(f"{server.url}/s/{share_id}")
    assert response.status_code == 404
    assert response.content == Assets.load().share_html
    assert response.headers["cache-control"] == "no-store"


def test_the_page_of_a_revoked_share_is_404(server: LiveServer) -> None:
    share_id = share_of(server, ["soon gone"])
    assert httpx.get(f"{server.url}/s/{share_id}").status_code == 200
    with api(server) as http:
        sessions = http.get("/api/sessions").json()["sessions"]
        response = http.delete(f"/api/sessions/{sessions[0]['session_id']}/shares/{share_id}")
        assert response.status_code == 204
    assert httpx.get(f"{server.url}/s/{share_id}").status_code == 404


def test_no_share_page_without_the_web_ui(start_server: ServerFactory) -> None:
    server = start_server(web_ui=False)
    share_id = share_of(server, ["api only"])
    assert httpx.get(f"{server.url}/s/{share_id}").status_code == 404
    assert httpx.get(f"{server.url}/api/shares/{share_id}").status_code == 200
