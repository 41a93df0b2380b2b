"""A queued job as its row holds it: everything the turn needs survives the trip through
the database, whichever process answers it."""

from __future__ import annotations

import json

from chatbot.chat.cluster import job_from_json, job_to_json
from chatbot.chat.turn import Job
from chatbot.stores.usage import Quota


def test_a_job_survives_its_row() -> None:
    edit = Job(
        "alice", "hello ✓", "c1", asker="socket-ab-3", parent=42, plan=Quota(1000, None),
        request_id="req-1",
    )  # fmt: skip
    regeneration = Job("bob", "", "r1", regenerate=True, reply_id=7)
    first = Job("carol", "first words", None, parent=None)
    for job in (edit, regeneration, first, Job("dave", "plain")):
        # As jsonb would hand it back: through JSON.
        assert job_from_json(json.loads(json.dumps(job_to_json(job)))) == job
