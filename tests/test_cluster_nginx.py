"""Two ``chatbot serve`` processes sharing one PostgreSQL schema behind nginx, configured exactly as
docs/deployment.md tells operators (tests/nginx.py reads it from there): the protocol,
history and resume through it, replies crossing from one process to the sockets nginx gave
the other, and the chat page in Chromium.

nginx balances round robin with no stickiness, so consecutive requests go to both
processes; where a test needs to know which process served what, it reads their access
logs (tests/cluster.py).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from websockets.sync.client import ClientConnection, connect

from tests.browser import open_chat, screenshot, send_message, wait_for_replies
from tests.cluster import Cluster, cluster, drop, websocket_line
from tests.conftest import bearer, expect_close, make_token, recv_json, wait_for
from tests.postgres import fresh_schema

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.browser"]

ALICE = make_token("alice")
LONG = " ".join(f"w{n}" for n in range(30))


@contextlib.contextmanager
def shared_cluster(directory: Path) -> Iterator[Cluster]:
    """Two processes on one new PostgreSQL schema, nginx in front."""
    with fresh_schema() as database_url, cluster(directory, database_url) as started:
        yield started


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the module's tests that leave it as they found it: each works in
    sessions of its own."""
    with shared_cluster(tmp_path_factory.mktemp("cluster")) as started:
        yield started


def api(servers: Cluster) -> httpx.Client:
    return servers.nginx.client(headers=bearer(ALICE))


def history(servers: Cluster, session_id: str, token: str = ALICE) -> list[dict[str, Any]]:
    with servers.nginx.client(headers=bearer(token)) as http:
        response = http.get(f"/api/sessions/{session_id}/messages")
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def stream_until_reply(ws: Any) -> tuple[str, dict[str, Any]]:
    """The deltas' text, and the reply frame that ends them."""
    text = ""
    while (frame := recv_json(ws)).get("type") == "delta":
        text += frame["delta"]
    return text, frame


def test_chat_and_history_through_nginx_reach_both_processes(servers: Cluster) -> None:
    with servers.ws(ALICE) as ws:
        raw = ws.recv(timeout=10)
        session_id = json.loads(raw)["session_id"]
        assert raw == '{"session_id": "%s"}' % session_id
        ws.send(json.dumps({"message": "Hello AI!", "session_id": session_id}))
        assert ws.recv(timeout=10) == (
            '{"message": "Echo: Hello AI!", "session_id": "%s"}' % session_id
        )
    # Round robin: of two requests in a row, each process serves one, from the database.
    line = f'"GET /api/sessions/{session_id}/messages HTTP/1.1" 200'
    assert servers.counts(line) == [0, 0]
    for _ in range(4):
        stored = history(servers, session_id)
        assert [(m["role"], m["content"], m["status"]) for m in stored] == [
            ("user", "Hello AI!", "complete"),
            ("assistant", "Echo: Hello AI!", "complete"),
        ]
    assert servers.counts(line) == [2, 2]


def test_tokens_and_origins_are_checked_through_nginx(servers: Cluster) -> None:
    expired = make_token("alice", ttl=-3600)
    with servers.ws(expired) as ws:
        assert expect_close(ws) == (4401, "token expired")
    # nginx passes the Host the browser used, port included: the page's own origin matches
    # it, another does not.
    for origin, opens in ((servers.nginx.url, True), ("https://elsewhere.example", False)):
        with connect(
            servers.nginx.ws_url,
            ssl=servers.nginx.ssl_context(),
            additional_headers={**bearer(ALICE), "Origin": origin},
            open_timeout=10,
        ) as ws:
            if opens:
                assert "session_id" in recv_json(ws)
            else:
                assert expect_close(ws) == (4403, "origin not allowed")


def test_links_made_behind_nginx_are_https(servers: Cluster) -> None:
    with servers.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "share me"}))
        recv_json(ws)
    with api(servers) as http:
        response = http.post(f"/api/sessions/{session_id}/shares")
        assert response.status_code == 201, response.text
        share = response.json()
        # The address the browser used, port included, with the scheme nginx forwarded.
        assert share["url"] == f"{servers.nginx.url}/s/{share['share_id']}"
        assert http.get(share["url"]).status_code == 200


def test_plain_http_is_sent_to_https(servers: Cluster) -> None:
    response = httpx.get(f"{servers.nginx.http_url}/api/sessions?limit=5")
    assert response.status_code == 301
    assert response.headers["location"] == "https://127.0.0.1/api/sessions?limit=5"


def test_metrics_are_served_by_each_process_and_not_through_nginx(servers: Cluster) -> None:
    for process in servers.processes:
        scraped = httpx.get(f"{process.url}/metrics")
        assert scraped.status_code == 200
        assert "chatbot_open_sockets" in scraped.text
    with servers.nginx.client() as http:
        response = http.get("/metrics")
    # nginx's own page: the request never reached a process.
    assert response.status_code == 404
    assert response.headers["content-type"] == "text/html"
    assert "nginx" in response.text


def test_the_request_id_is_nginxs(servers: Cluster) -> None:
    with api(servers) as http:
        response = http.get("/api/sessions?limit=1")
    request_id = response.headers["x-request-id"]
    assert re.fullmatch("[0-9a-f]{32}", request_id), request_id
    # The same id in nginx's access log (written once the response is sent), by the request.
    line = f'"GET /api/sessions?limit=1 HTTP/1.1" 200 {request_id} 127.0.0.1:'
    wait_for(lambda: line in servers.nginx.access_log.read_text(), "nginx's access log line")


def test_each_process_is_ready(servers: Cluster) -> None:
    for process in servers.processes:
        response = httpx.get(f"{process.url}/readyz")
        assert (response.status_code, response.json()) == (200, {"status": "ready"})


def test_a_message_sent_again_after_a_drop_is_answered_once(servers: Cluster) -> None:
    with servers.ws(ALICE) as ws:
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": LONG, "id": "m1", "stream": True}))
        assert recv_json(ws)["type"] == "delta"
        drop(ws)
    # The reply goes on without its socket, and is stored whole.
    wait_for(
        lambda: [m["status"] for m in history(servers, session_id)] == ["complete"] * 2,
        "the reply to be stored",
    )
    # The client comes back (to either process) and sends its message again, with its id.
    with servers.ws(ALICE, f"session_id={session_id}") as again:
        again.send(json.dumps({"message": LONG, "id": "m1"}))
        reply = recv_json(again)
    user, answer = history(servers, session_id)
    assert (user["content"], answer["content"]) == (LONG, f"Echo: {LONG}")
    assert reply == {
        "type": "message",
        "message": f"Echo: {LONG}",
        "session_id": session_id,
        "message_id": answer["id"],
        "status": "complete",
        "created_at": answer["created_at"],
        "backend": "slow",
        "model": answer["model"],
        "usage": answer["usage"],
        "reply_to": "m1",
    }


def new_session(servers: Cluster) -> tuple[ClientConnection, str, int]:
    """A socket on a new session, the session's id, and which process nginx gave it to."""
    before = servers.counts(websocket_line())
    # Entered here, and left by the caller's ``with``.
    ws = servers.ws(ALICE).__enter__()
    session_id = recv_json(ws)["session_id"]
    return ws, session_id, servers.served_by(before, websocket_line())


def socket_away_from(servers: Cluster, home: int, query: str) -> ClientConnection:
    """A socket opened with ``query`` that nginx gave to the process other than ``home``
    (round robin does on the next connection; up to four are tried)."""
    for _ in range(4):
        before = servers.counts(websocket_line(query))
        ws = servers.ws(ALICE, query).__enter__()
        if servers.served_by(before, websocket_line(query)) != home:
            return ws
        ws.close()
    raise AssertionError(f"nginx sent every socket to process {home}")


def test_a_reply_reaches_the_sessions_socket_on_the_other_process(servers: Cluster) -> None:
    first, session_id, home = new_session(servers)
    second = socket_away_from(servers, home, f"session_id={session_id}")
    with first, second:
        # Asked on one process, answered there, and delivered on the other one too.
        second.send(json.dumps({"message": "across", "session_id": session_id}))
        assert recv_json(second) == {"message": "Echo: across", "session_id": session_id}
        assert recv_json(first) == {"message": "Echo: across", "session_id": session_id}
        first.send(json.dumps({"message": "and back", "session_id": session_id}))
        assert recv_json(first) == {"message": "Echo: and back", "session_id": session_id}
        assert recv_json(second) == {"message": "Echo: and back", "session_id": session_id}


def test_a_socket_reopened_on_the_other_process_picks_up_the_reply_in_progress(
    servers: Cluster,
) -> None:
    first, session_id, home = new_session(servers)
    with first:
        first.send(json.dumps({"message": LONG, "id": "long", "stream": True}))
        assert recv_json(first)["type"] == "delta"
        drop(first)
    # Reconnecting as the chat page does (?stream=1), on the process that is not generating
    # the reply: it sends the text so far, then the rest.
    with socket_away_from(servers, home, f"session_id={session_id}&stream=1") as again:
        caught_up = recv_json(again)
        text, reply = stream_until_reply(again)
    assert caught_up["type"] == "delta"
    assert caught_up["reply_to"] == "long"
    assert caught_up["delta"] + text == f"Echo: {LONG}"
    # This socket sent no message: the reply frame of the original document.
    assert reply == {"message": f"Echo: {LONG}", "session_id": session_id}
    assert [m["content"] for m in history(servers, session_id)] == [LONG, f"Echo: {LONG}"]


def test_a_process_stopping_mid_reply_loses_nothing(tmp_path: Path) -> None:
    with shared_cluster(tmp_path) as servers:
        ws, session_id, home = new_session(servers)
        stopping, other = servers.processes[home], servers.processes[1 - home]
        with ws:
            ws.send(json.dumps({"message": LONG, "id": "before", "stream": True}))
            assert recv_json(ws)["type"] == "delta"
            # A restart: the process finishes the reply in flight, then closes the socket.
            stopping.signal(signal.SIGTERM)
            reply = stream_until_reply(ws)[1]
            assert (reply["message"], reply["status"]) == (f"Echo: {LONG}", "complete")
            assert expect_close(ws) == (1001, "server shutting down")
        stopping.wait()
        # While it is down, nginx gives everything to the other process: sockets, reads, and
        # requests that change something (a POST is passed on when the refusal came first).
        line = websocket_line(f"session_id={session_id}")
        for n in range(3):
            with servers.ws(ALICE, f"session_id={session_id}") as again:
                again.send(json.dumps({"message": f"during {n}", "id": f"during-{n}"}))
                assert recv_json(again)["message"] == f"Echo: during {n}"
        assert other.log.read_text().count(line) == 3
        with api(servers) as http:
            for _ in range(3):
                assert http.post("/api/sessions", json={"title": "new"}).status_code == 201
        stored = history(servers, session_id)
    assert [m["content"] for m in stored] == [
        LONG,
        f"Echo: {LONG}",
        *[text for n in range(3) for text in (f"during {n}", f"Echo: during {n}")],
    ]
    assert all(m["status"] == "complete" for m in stored)


def test_the_chat_page_works_through_nginx(servers: Cluster, new_page: Callable[..., Page]) -> None:
    # The browser trusts no test certificate: it is told to go on, as a user would click.
    page = new_page(viewport={"width": 1280, "height": 800}, ignore_https_errors=True)
    carol = make_token("carol")
    before = servers.counts('"GET /')
    open_chat(page, servers.nginx.url, carol)
    send_message(page, "hello through nginx")
    wait_for_replies(page, 1)
    log = page.get_by_role("log")
    expect(log).to_contain_text("Echo: hello through nginx")
    screenshot(page, "cluster-nginx-chat")
    page.reload()
    expect(log).to_contain_text("Echo: hello through nginx")
    expect(log).to_contain_text("hello through nginx")
    # The page's files and API calls came from both processes.
    after = servers.counts('"GET /')
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    with servers.nginx.client(headers=bearer(carol)) as http:
        (session,) = http.get("/api/sessions").json()["sessions"]
    stored = history(servers, session["session_id"], carol)
    assert [(m["content"], m["status"]) for m in stored] == [
        ("hello through nginx", "complete"),
        ("Echo: hello through nginx", "complete"),
    ]


def test_the_chat_page_carries_on_when_its_process_stops(
    tmp_path: Path, new_page: Callable[..., Page]
) -> None:
    page = new_page(viewport={"width": 1280, "height": 800}, ignore_https_errors=True)
    with shared_cluster(tmp_path) as servers:
        open_chat(page, servers.nginx.url, ALICE)
        send_message(page, "before the restart")
        wait_for_replies(page, 1)
        # The process holding the page's socket stops, as in a rolling restart.
        [holder] = [i for i, n in enumerate(servers.counts('"WebSocket /ws/chat/')) if n]
        servers.processes[holder].stop()
        send_message(page, "after the restart")
        wait_for_replies(page, 2)
        log = page.get_by_role("log")
        expect(log).to_contain_text("Echo: after the restart")
        page.reload()  # every file and request from the process that is left
        expect(log).to_contain_text("Echo: after the restart")
        expect(log).to_contain_text("Echo: before the restart")
        assert log.inner_text().count("Echo:") == 2
        page.close()  # before nginx stops, or the page would try to reconnect
