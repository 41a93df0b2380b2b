"""The quota gate of a turn: a message from a user who has used up their quota goes no
further. It is checked when the message's turn comes (after the replies queued before it
are in the ledger), before anything is stored: the message is not stored, no model is
called, and the socket that sent it gets ``quota_exceeded`` with ``retry_after``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from chatbot.hub.base import Event, Failure, Reply
from chatbot.quotas import QuotaCheck
from chatbot.stores.base import SessionStore

if TYPE_CHECKING:
    from chatbot.chat.turn import Job


async def refused(
    check: QuotaCheck,
    store: SessionStore,
    job: Job,
    session_id: str,
    publish: Callable[[Event], None],
) -> bool:
    """Whether ``job`` is refused for its user's quota; the asking socket has been told.

    A message sent again with an id that was answered before still gets its stored reply,
    quota or not: delivering it uses no tokens. (A regeneration's id is looked up by the
    turn before it asks.)"""
    over = await check(job.owner, job.plan)
    if over is None:
        return False
    if job.client_id is not None and not job.regenerate:
        known = await store.find_user_message(job.owner, session_id, job.client_id)
        earlier = None if known is None else await store.find_reply(job.owner, session_id, known.id)
        if earlier is not None and earlier.status != "error":
            publish(Reply(session_id, earlier, job.client_id, only=job.asker))
            return True
    publish(
        Failure(
            session_id,
            "quota_exceeded",
            over.message,
            retryable=over.retry_after is not None,
            reply_to=job.client_id,
            retry_after=over.retry_after,
            only=job.asker,
        )
    )
    return True
