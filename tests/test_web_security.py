"""The chat page's defences: its headers, versioned and cached assets, a switch that turns it
off, relative URLs that work under a mount prefix, and model output that can never become
HTML, script or a request to another server."""

from __future__ import annotations

import contextlib
import http.server
import re
import threading
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urljoin

import httpx
import pytest
from playwright.sync_api import Page, expect
from starlette.applications import Starlette
from starlette.routing import Mount

from chatbot.app import create_app
from tests.browser import (
    ConsoleLog,
    open_chat,
    screenshot,
    send_message,
    wait_for_replies,
)
from tests.conftest import LiveServer, ServerFactory, make_token

ALICE = make_token("alice")
#: A year: what "immutable" asset caching means in practice.
LONG_CACHE_SECONDS = 365 * 24 * 3600

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.browser"]


def csp_directives(header: str) -> dict[str, list[str]]:
    """A Content-Security-Policy header as ``{directive: [sources]}``."""
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def asset_urls(html: str) -> list[str]:
    """The scripts, stylesheets and icons a page references."""
    return re.findall(r"<(?:script|link)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", html)


# Headers, without a browser -----------------------------------------------------------------


def test_the_page_is_served_with_strict_headers(start_server: ServerFactory) -> None:
    server = start_server(frame_ancestors="https://intranet.example.com")
    response = httpx.get(server.url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    header = response.headers["content-security-policy"]
    assert "unsafe-inline" not in header
    assert "unsafe-eval" not in header
    csp = csp_directives(header)
    assert "'self'" in csp["connect-src"]
    assert csp["frame-ancestors"] == ["https://intranet.example.com"]
    # Scripts run only from the page's own files: no inline script, no other host.
    script_sources = csp.get("script-src", csp.get("default-src"))
    assert script_sources is not None
    assert all(s == "'self'" or s.startswith(("'sha256-", "'nonce-")) for s in script_sources), (
        header
    )


def test_frame_ancestors_default_to_none(server: LiveServer) -> None:
    csp = csp_directives(httpx.get(server.url + "/").headers["content-security-policy"])
    assert csp["frame-ancestors"] == ["'none'"]


def test_assets_are_versioned_and_cached_for_good(server: LiveServer) -> None:
    html = httpx.get(server.url + "/").text
    urls = asset_urls(html)
    assert urls, f"the page references no script or stylesheet:\n{html}"
    version = re.compile(r"[0-9a-f]{8,}|\d+\.\d+")
    for url in urls:
        # Relative, so that the page works under any mount prefix.
        assert not url.startswith(("/", "http:", "https:", "//")), url
        assert version.search(url), f"{url} carries no version or content hash"
        response = httpx.get(urljoin(server.url + "/", url))
        assert response.status_code == 200, url
        assert response.headers["x-content-type-options"] == "nosniff"
        cache = response.headers["cache-control"]
        assert "immutable" in cache, (url, cache)
        max_age = re.search(r"max-age=(\d+)", cache)
        assert max_age is not None and int(max_age.group(1)) >= LONG_CACHE_SECONDS, cache
    # The page itself is never cached for long: it names the current versions.
    page_cache = httpx.get(server.url + "/").headers.get("cache-control", "")
    assert "immutable" not in page_cache


def test_an_unknown_asset_is_404(server: LiveServer) -> None:
    html = httpx.get(server.url + "/").text
    first = asset_urls(html)[0]
    missing = urljoin(server.url + "/", first.rsplit("/", 1)[0] + "/no-such-file.js")
    assert httpx.get(missing).status_code == 404


def test_web_ui_false_turns_the_page_off(start_server: ServerFactory) -> None:
    on = start_server()
    assets = asset_urls(httpx.get(on.url + "/").text)
    off = start_server(web_ui=False)
    assert httpx.get(off.url + "/").status_code == 404
    for url in assets:
        assert httpx.get(urljoin(off.url + "/", url)).status_code == 404, url
    # The API is untouched.
    response = httpx.get(off.url + "/api/sessions", headers={"Authorization": f"Bearer {ALICE}"})
    assert response.status_code == 200


# In the browser -----------------------------------------------------------------------------


def mounted(start_server: ServerFactory) -> LiveServer:
    """The chat app mounted under ``/chat`` in a host Starlette app, as docs/embedding.md
    shows."""
    chat = create_app(start_server.settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        async with chat.router.lifespan_context(chat) as state:
            yield dict(state or {})

    host = Starlette(routes=[Mount("/chat", app=chat)], lifespan=lifespan)
    server = LiveServer(host).start()
    start_server.started.append(server)
    return server


@pytest.mark.parametrize("path", ["/chat/", "/chat"])
def test_the_page_works_under_a_mount_prefix(
    start_server: ServerFactory, page: Page, path: str
) -> None:
    server = mounted(start_server)
    open_chat(page, server.url + path, ALICE)
    send_message(page, "mounted")
    wait_for_replies(page, 1)
    expect(page.get_by_role("log")).to_contain_text("Echo: mounted")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ALICE}"}) as api:
        sessions = api.get("/chat/api/sessions").json()["sessions"]
        assert len(sessions) == 1
        messages = api.get(f"/chat/api/sessions/{sessions[0]['session_id']}/messages").json()
    assert [m["content"] for m in messages["messages"]] == ["mounted", "Echo: mounted"]


class LeakServer:
    """A loopback HTTP server that counts the requests a page makes to it."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        leak = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                leak.paths.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def leak() -> Iterator[LeakServer]:
    server = LeakServer()
    yield server
    server.close()


def injections(leak_port: int) -> list[str]:
    """Replies that would run script, or fetch from another server, if rendered as HTML."""
    return [
        '<img src=x onerror="window.__pwned=1">',
        "<script>window.__pwned=1</script>",
        "[click](javascript:window.__pwned=1)",
        f"![x](http://127.0.0.1:{leak_port}/leak)",
        f'<a href="http://127.0.0.1:{leak_port}/leak-link">tap</a>',
        "<iframe src=javascript:window.__pwned=1></iframe>",
        "<svg><animate onbegin=window.__pwned=1 attributeName=x dur=1s></svg>",
    ]


def test_model_output_never_becomes_html(server: LiveServer, page: Page, leak: LeakServer) -> None:
    open_chat(page, server.url, ALICE)
    payloads = injections(leak.port)
    for count, payload in enumerate(payloads, start=1):
        send_message(page, payload)
        wait_for_replies(page, count)
    log = page.get_by_role("log")
    shown = log.inner_text()
    # Raw HTML shows as the text it is.
    assert '<img src=x onerror="window.__pwned=1">' in shown
    assert "<script>window.__pwned=1</script>" in shown
    assert "<iframe src=javascript:window.__pwned=1></iframe>" in shown
    # Nothing from the replies became an element that loads or runs anything.
    assert log.locator("script, iframe, object, embed, svg animate").count() == 0
    assert log.locator("img[src='x'], img[src*='leak'], [onerror], [onbegin]").count() == 0
    assert log.locator("a[href^='javascript:' i]").count() == 0
    assert log.get_by_role("link", name="tap").count() == 0
    # Clicking whatever the link text became runs nothing.
    for element in log.get_by_text("click").all():
        element.click()
    expect(page.get_by_role("textbox", name="Message")).to_be_editable()
    assert page.evaluate("window.__pwned") is None
    screenshot(page, "injection")
    # Had an image loaded, the other server would have heard of it.
    assert leak.paths == []


def test_the_browser_enforces_the_policy(
    server: LiveServer, page: Page, console: ConsoleLog
) -> None:
    open_chat(page, server.url, ALICE)
    # Script that got into the page some other way than the page's own files does not run,
    # and the refusal reaches the console, where every browser test looks for errors.
    refusal = re.compile("Content Security Policy")
    with page.expect_console_message(lambda m: bool(refusal.search(m.text))):
        page.evaluate(
            """() => {
                const script = document.createElement('script');
                script.textContent = 'window.__pwned = 1';
                document.body.append(script);
            }"""
        )
    assert page.evaluate("window.__pwned") is None
    assert any(refusal.search(error) for error in console.errors), console.errors
    console.allow(refusal.pattern)
