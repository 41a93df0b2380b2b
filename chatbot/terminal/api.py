"""The HTTP API calls that the commands of ``chatbot chat`` make."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from chatbot.terminal.endpoint import Credentials, Server
from chatbot.terminal.errors import ChatError, Unreachable
from chatbot.terminal.screen import printable

HTTP_TIMEOUT = 10.0
#: Messages read per request when looking for the last one the user wrote.
PAGE = 10
#: The most messages the server lists per request.
MAX_PAGE = 100


def _session_path(session_id: str) -> str:
    # One path segment whatever the user typed: "../sessions" or "." would otherwise name
    # the list (clients drop "." and ".." segments, so those dots are escaped too).
    return "/sessions/" + quote(session_id, safe="").replace(".", "%2E")


def why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class Api:
    """The HTTP API calls the commands make."""

    def __init__(self, server: Server, credentials: Credentials) -> None:
        self.server = server
        self.credentials = credentials
        self._http = httpx.Client(timeout=HTTP_TIMEOUT)

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON body; ``None`` for a 404 of the API (no such session for this
        user). Raises ChatError for any other error, with the server's message for a 422."""
        response = self._request(method, path, **kwargs)
        if response is None:
            return None
        try:
            return response.json()
        except ValueError:
            raise self._unexpected(
                method, path, response.status_code, "with a body that is not JSON"
            ) from None

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        """A successful response, or ``None`` for a 404 of the API; raises ChatError."""
        headers = {"Authorization": f"Bearer {self.credentials.token()}"}
        try:
            response = self._http.request(
                method, f"{self.server.base}/api{path}", headers=headers, **kwargs
            )
        except httpx.TransportError as exc:
            raise Unreachable(self.server.unreachable(why(exc))) from None
        if response.is_success:
            return response
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        message = error.get("message", "") if isinstance(error, dict) else response.reason_phrase
        if response.status_code == 401:
            raise ChatError(self.credentials.refused(message))
        if response.status_code == 404 and error is not None:
            return None
        if response.status_code == 422 and isinstance(message, str) and message:
            raise ChatError(printable(message))  # what was asked makes no sense: say why
        raise self._unexpected(method, path, response.status_code, str(message))

    def _unexpected(self, method: str, path: str, status: int, message: str) -> ChatError:
        return ChatError(
            f"{method} {self.server.base}/api{path} answered {status} "
            f"{printable(message)}; is --url the chatbot server's base URL?"
        )

    def session(self, session_id: str) -> dict[str, Any] | None:
        """One of the user's sessions, ``None`` if there is no such session for them."""
        result: dict[str, Any] | None = self._call("GET", _session_path(session_id))
        return result

    def sessions(self, limit: int = 20) -> tuple[list[dict[str, Any]], bool]:
        """The newest sessions, and whether there are older ones."""
        page = self._call("GET", "/sessions", params={"limit": limit})
        return page["sessions"], page["next_cursor"] is not None

    def recent(self, session_id: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """A session's newest messages, oldest first, and whether there are older ones."""
        page = self._call("GET", f"{_session_path(session_id)}/messages", params={"limit": limit})
        if page is None:
            return [], False
        return page["messages"], page["has_more"]

    def rename(self, session_id: str, title: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call(
            "PATCH", _session_path(session_id), json={"title": title}
        )
        return result

    def last_user_message(self, session_id: str) -> dict[str, Any] | None:
        """The newest message the user wrote on the session's current branch (the one an
        edit replaces), ``None`` when there is none or no such session."""
        params: dict[str, Any] = {"limit": PAGE}
        while True:
            page = self._call("GET", f"{_session_path(session_id)}/messages", params=params)
            if page is None or not page["messages"]:
                return None
            for message in reversed(page["messages"]):
                if message["role"] == "user":
                    result: dict[str, Any] = message
                    return result
            if not page["has_more"]:
                return None
            params["before"] = page["messages"][0]["id"]

    def branch_length(self, session_id: str) -> int:
        """How many messages the session's current branch holds."""
        params: dict[str, Any] = {"limit": MAX_PAGE}
        count = 0
        while True:
            page = self._call("GET", f"{_session_path(session_id)}/messages", params=params)
            if page is None:
                return count
            count += len(page["messages"])
            if not page["has_more"] or not page["messages"]:
                return count
            params["before"] = page["messages"][0]["id"]

    def search(self, query: str, limit: int = 20) -> tuple[list[dict[str, Any]], bool]:
        """The user's messages that match ``query``, best first, and whether more match."""
        page = self._call("GET", "/search", params={"q": query, "limit": limit})
        return page["results"], page["next_cursor"] is not None

    def export_json(self, session_id: str) -> dict[str, Any] | None:
        """The whole session in the ``chatbot.session.v1`` format, ``None`` if it is gone."""
        path = f"{_session_path(session_id)}/export"
        result: dict[str, Any] | None = self._call("GET", path, params={"format": "json"})
        return result

    def export_markdown(self, session_id: str) -> bytes | None:
        """The current branch as a Markdown document, ``None`` if the session is gone."""
        path = f"{_session_path(session_id)}/export"
        response = self._request("GET", path, params={"format": "markdown"})
        return None if response is None else response.content
