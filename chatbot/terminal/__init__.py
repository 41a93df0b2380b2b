"""``chatbot chat``: chat with a server from a terminal, replies shown as they stream.

    errors.py     ChatError and its kinds: one line for the user, never a traceback
    endpoint.py   the server's base URL, and the token shown to it
    api.py        the HTTP calls of the slash commands
    screen.py     printing: streamed replies, lines above the prompt, inert control text
    results.py    /search's results: excerpts with their matches emphasised
    export.py     /export's file: its format, written without replacing one by mistake
    link.py       the chat socket: send (a message, an edit, a regeneration), stream,
                  cancel, reconnect and resume
    interrupt.py  Ctrl-C: one KeyboardInterrupt in the main thread per press, never lost
    prompt.py     the main thread: readline, Ctrl-C, the slash commands

The main thread reads lines with ``readline`` (line editing and history want it there) and
is where Ctrl-C is raised; an asyncio loop in a second thread holds the socket and prints the
reply as it streams, so a Ctrl-C only has to ask that loop to send a cancel.
"""

from __future__ import annotations

from chatbot.terminal.prompt import chat

__all__ = ["chat"]
