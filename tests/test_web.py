"""chatbot.web: the page's Content-Security-Policy, its headers, versioned assets and
config.json, over HTTP against a real server (the browser tests are tests/test_web_*.py)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from chatbot.app import create_app
from chatbot.errors import ConfigError
from chatbot.settings import Settings
from chatbot.web import STATIC_DIR, Assets, content_security_policy, oidc_config
from tests.conftest import LiveServer, ServerFactory

BASE = Settings()
#: OpenID Connect needs the provider's public-key algorithms.
OIDC = replace(BASE, jwt_algorithms=("RS256",), jwt_audience="chat-api")


def test_csp_allows_only_the_page_itself() -> None:
    assert content_security_policy(BASE) == (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def test_csp_lets_the_page_reach_the_identity_provider_only_when_configured() -> None:
    settings = replace(
        OIDC, oidc_issuer="https://id.example.com:8443/realms/chat", oidc_client_id="chat"
    )
    csp = content_security_policy(settings)
    assert "connect-src 'self' https://id.example.com:8443;" in csp
    assert "unsafe" not in csp


def test_csp_frame_ancestors_comes_from_the_settings() -> None:
    settings = replace(BASE, frame_ancestors="'self'  https://intranet.example.com")
    assert content_security_policy(settings).endswith(
        "frame-ancestors 'self' https://intranet.example.com"
    )


@pytest.mark.parametrize("value", ["'self'; script-src *", "a,b", "x\r\nSet-Cookie: y", "  "])
def test_csp_refuses_a_frame_ancestors_that_would_change_other_directives(value: str) -> None:
    with pytest.raises(ConfigError, match="CHATBOT_FRAME_ANCESTORS"):
        content_security_policy(replace(BASE, frame_ancestors=value))


def test_oidc_config_holds_public_values_only() -> None:
    assert oidc_config(BASE) is None
    settings = replace(OIDC, oidc_issuer="https://id.example.com", oidc_client_id="chat")
    assert oidc_config(settings) == {
        "issuer": "https://id.example.com",
        "client_id": "chat",
        "scopes": "openid profile email",
        "token": "access",
    }


def test_the_version_changes_with_any_file(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text('<script src="{{static}}a.js"></script>')
    (tmp_path / "share.html").write_text('<script src="{{static}}b.js"></script>')
    (tmp_path / "a.js").write_text("one")
    first = Assets.load(tmp_path)
    assert first.html == f'<script src="static/{first.version}/a.js"></script>'.encode()
    # The shared page is at s/<share id>, a level below.
    assert first.share_html == f'<script src="../static/{first.version}/b.js"></script>'.encode()
    (tmp_path / "a.js").write_text("two")
    assert Assets.load(tmp_path).version != first.version


def _asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(static/[^"]+)"', html)


def test_page_headers_and_relative_asset_urls(server: LiveServer) -> None:
    response = httpx.get(server.url + "/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == content_security_policy(BASE)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-cache"
    html = response.text
    # No inline code for the CSP to refuse, and nothing from another server.
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    assert "http://" not in html and "https://" not in html
    urls = _asset_urls(html)
    assert {u.rsplit("/", 1)[1] for u in urls} >= {"app.js", "link.js", "app.css"}
    version = Assets.load().version
    assert all(u.startswith(f"static/{version}/") for u in urls)


def test_assets_are_cached_for_a_year_under_their_version(server: LiveServer) -> None:
    html = httpx.get(server.url + "/").text
    for url in _asset_urls(html):
        response = httpx.get(f"{server.url}/{url}")
        assert response.status_code == 200, url
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["x-content-type-options"] == "nosniff"
    app_js = next(u for u in _asset_urls(html) if u.endswith("app.js"))
    response = httpx.get(f"{server.url}/{app_js}")
    assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    assert response.content == (STATIC_DIR / "app.js").read_bytes()


def test_modules_import_each_other_from_the_same_version(server: LiveServer) -> None:
    version = Assets.load().version
    for name in ("vendor/markdown-it.esm.min.mjs", "vendor/purify.es.mjs", "oidc.js"):
        response = httpx.get(f"{server.url}/static/{version}/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"


@pytest.mark.parametrize(
    "path",
    [
        "/static/0000000000000000/app.js",  # another version: never cache today's bytes
        "/static/{version}/index.html",  # the templates are not assets
        "/static/{version}/share.html",
        "/static/{version}/nope.js",
        "/static/{version}/%2e%2e/web.py",
    ],
)
def test_unknown_assets_are_404(server: LiveServer, path: str) -> None:
    response = httpx.get(server.url + path.format(version=Assets.load().version))
    assert response.status_code == 404
    assert "immutable" not in response.headers.get("cache-control", "")


def test_config_json_without_oidc(server: LiveServer) -> None:
    response = httpx.get(server.url + "/config.json")
    assert response.status_code == 200
    assert response.json() == {"oidc": None}
    assert response.headers["cache-control"] == "no-cache"


def test_config_json_with_oidc_has_no_secret(start_server: ServerFactory) -> None:
    server = start_server(
        oidc_issuer="http://127.0.0.1:9/issuer",
        oidc_client_id="chat-page",
        oidc_token="id",
        jwt_secret=None,
        jwt_algorithms=("RS256",),
    )
    response = httpx.get(server.url + "/config.json")
    assert response.json() == {
        "oidc": {
            "issuer": "http://127.0.0.1:9/issuer",
            "client_id": "chat-page",
            "scopes": "openid profile email",
            "token": "id",
        }
    }
    page = httpx.get(server.url + "/")
    assert "connect-src 'self' http://127.0.0.1:9;" in page.headers["content-security-policy"]


def test_frame_ancestors_setting_reaches_the_header(start_server: ServerFactory) -> None:
    server = start_server(frame_ancestors="https://intranet.example.com")
    csp = httpx.get(server.url + "/").headers["content-security-policy"]
    assert csp.endswith("; frame-ancestors https://intranet.example.com")


def test_web_ui_off_leaves_the_page_unanswered(start_server: ServerFactory) -> None:
    server = start_server(web_ui=False)
    for path in ("/", "/config.json", f"/static/{Assets.load().version}/app.js"):
        response = httpx.get(server.url + path)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found"
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_mounted_under_a_prefix(start_server: ServerFactory) -> None:
    chat = create_app(start_server.settings())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, object]]:
        async with chat.router.lifespan_context(chat) as state:
            yield dict(state or {})

    host = LiveServer(Starlette(routes=[Mount("/chat", app=chat)], lifespan=lifespan)).start()
    try:
        # /chat redirects to /chat/, where the page's relative URLs resolve under the prefix.
        response = httpx.get(host.url + "/chat", follow_redirects=True)
        assert response.status_code == 200
        assert str(response.url) == host.url + "/chat/"
        for url in _asset_urls(response.text):
            assert httpx.get(f"{host.url}/chat/{url}").status_code == 200, url
        assert json.loads(httpx.get(host.url + "/chat/config.json").text) == {"oidc": None}
    finally:
        host.stop()
