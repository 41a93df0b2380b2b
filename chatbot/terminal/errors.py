"""The errors of ``chatbot chat``: each is shown as one line, never as a traceback."""

from __future__ import annotations


class ChatError(Exception):
    """Something the user has to know: printed as one line, never as a traceback."""


class Unreachable(ChatError):
    """No server answered at the URL; trying again later may work."""


class Refused(ChatError):
    """The server closed the socket with ``code``; reopening it would not help."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)
