"""``python -m bench.memory_limits serve ...``: ``python -m chatbot``, whose per-user limits
are counted in its own memory whatever the store, as a one-process SQLite server counts them.

Only the benchmark runs this, beside the real server on the same PostgreSQL schema: the
difference between the two is what counting the limits in the database costs a message (one
statement of :mod:`chatbot.limits_postgres` per message, four per socket opened). It is not
a configuration to run: each process would count on its own.
"""

from __future__ import annotations

from chatbot import limits
from chatbot.cli import main

if __name__ == "__main__":
    # No shared limits for any database: limits_for() falls back to MemoryLimits.
    limits.SHARED_LIMITS.clear()
    raise SystemExit(main())
