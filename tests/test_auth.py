"""Authentication, end to end: every refusal of PROTOCOL.md section 1 on the socket and HTTP."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from tests.conftest import (
    OTHER_SECRET,
    SECRET,
    LiveServer,
    ServerFactory,
    expect_close,
    make_token,
    recv_json,
)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def unsigned_token(alg: str = "none") -> str:
    now = int(time.time())
    header = _b64({"alg": alg, "typ": "JWT"})
    payload = _b64({"sub": "alice", "iat": now, "exp": now + 3600})
    return f"{header}.{payload}."


BAD_TOKENS = {
    "expired": (make_token(ttl=-120), "token expired"),
    "wrong secret": (make_token(secret=OTHER_SECRET), "invalid token"),
    "alg none": (unsigned_token("none"), "invalid token"),
    "alg NONE": (unsigned_token("NONE"), "invalid token"),
    "disallowed algorithm": (make_token(algorithm="HS512"), "invalid token"),
    "missing exp": (make_token(drop=("exp",)), "invalid token"),
    "missing sub": (make_token(drop=("sub",)), "invalid token"),
    "non-string sub": (make_token(sub=42), "invalid token"),
    "empty sub": (make_token(sub=""), "invalid token"),
    "garbage": ("not-a-jwt", "invalid token"),
    "crit header": (make_token(headers={"crit": ["x-unknown"], "x-unknown": 1}), "invalid token"),
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_close_the_socket_4401(server: LiveServer, case: str) -> None:
    token, reason = BAD_TOKENS[case]
    with server.ws(token) as ws:
        assert expect_close(ws) == (4401, reason)


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_tokens_are_401_on_http(server: LiveServer, case: str) -> None:
    token, reason = BAD_TOKENS[case]
    with server.http(token) as http:
        response = http.get("/api/sessions")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json() == {"error": {"code": reason.replace(" ", "_"), "message": reason}}


def test_missing_token(server: LiveServer) -> None:
    with server.ws() as ws:
        assert expect_close(ws) == (4401, "missing token")
    with server.http() as http:
        response = http.get("/api/sessions")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "missing_token"


def test_non_bearer_scheme_counts_as_missing(server: LiveServer) -> None:
    with server.http() as http:
        response = http.get("/api/sessions", headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_token_in_query_string_is_not_accepted(server: LiveServer) -> None:
    token = make_token()
    for query in (f"?token={token}", f"?access_token={token}", f"?jwt={token}"):
        with server.ws(path="/ws/chat/" + query) as ws:
            assert expect_close(ws) == (4401, "missing token")
    with server.http() as http:
        assert http.get(f"/api/sessions?access_token={token}").status_code == 401


def test_subprotocol_auth_selects_chatbot_v1_and_never_echoes_the_token(
    server: LiveServer,
) -> None:
    token = make_token()
    with server.ws(subprotocols=["chatbot.v1", "bearer." + token]) as ws:
        assert ws.subprotocol == "chatbot.v1"
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Protocol"] == "chatbot.v1"
        assert token not in str(ws.response.headers)
        session_id = recv_json(ws)["session_id"]
        ws.send(json.dumps({"message": "hi"}))
        assert recv_json(ws)["message"] == "Echo: hi"
    with server.http(token) as http:
        assert http.get(f"/api/sessions/{session_id}").status_code == 200


def test_subprotocol_with_a_bad_token_closes_4401(server: LiveServer) -> None:
    token = make_token(secret=OTHER_SECRET)
    with server.ws(subprotocols=["chatbot.v1", "bearer." + token]) as ws:
        assert ws.subprotocol == "chatbot.v1"
        assert expect_close(ws) == (4401, "invalid token")


def test_audience_and_issuer_are_checked_when_configured(start_server: ServerFactory) -> None:
    server = start_server(jwt_audience="chat-api", jwt_issuer="https://id.example.com")
    good = make_token(aud="chat-api", iss="https://id.example.com")
    for bad in (
        make_token(iss="https://id.example.com"),
        make_token(aud="other", iss="https://id.example.com"),
        make_token(aud="chat-api", iss="https://id.example"),
        make_token(aud="chat-api"),
    ):
        with server.ws(bad) as ws:
            assert expect_close(ws) == (4401, "invalid token")
    with server.ws(good) as ws:
        assert "session_id" in recv_json(ws)


def test_expiry_closes_an_open_socket(start_server: ServerFactory) -> None:
    server = start_server(jwt_leeway=0)
    token = make_token(ttl=3)
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    with server.ws(token) as ws:
        recv_json(ws)
        ws.send('{"type": "ping"}')
        assert recv_json(ws) == {"type": "pong"}
        # The client sends nothing more: the server closes the socket on its own, once the
        # token has expired and not before.
        assert expect_close(ws, timeout=30) == (4401, "token expired")
        assert time.time() >= expires_at


def test_leeway_accepts_a_just_expired_token(start_server: ServerFactory) -> None:
    server = start_server(jwt_leeway=30)
    with server.ws(make_token(ttl=-5)) as ws:
        assert "session_id" in recv_json(ws)


def test_configurable_user_claim(start_server: ServerFactory) -> None:
    server = start_server(jwt_user_claim="uid")
    with server.ws(make_token(uid="carol")) as ws:
        session_id = recv_json(ws)["session_id"]
    with server.http(make_token(sub="mallory", uid="carol")) as http:
        assert http.get(f"/api/sessions/{session_id}").status_code == 200
    with server.http(make_token(sub="carol", uid="dave")) as http:
        assert http.get(f"/api/sessions/{session_id}").status_code == 404


def test_secret_is_not_in_any_response(server: LiveServer) -> None:
    with server.http(make_token()) as http:
        bodies = [
            http.get(path).text
            for path in ("/api/sessions", "/api/backends", "/openapi.json", "/healthz")
        ]
    assert all(SECRET not in body for body in bodies)
