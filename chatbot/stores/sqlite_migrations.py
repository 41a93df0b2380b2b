"""The SQLite schema, as ordered, named migrations recorded in ``chatbot_migrations``.

Never edit one that has been released: add the next.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, list[str]]] = [
    (
        "0001_initial",
        [
            """
            CREATE TABLE sessions (
                id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                title TEXT,
                backend TEXT NOT NULL,
                model TEXT,
                system_prompt TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )
            """,
            # "sessions of a user by last activity"
            "CREATE INDEX sessions_owner_activity ON sessions (owner, updated_at, id)",
            """
            CREATE TABLE messages (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
                role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
                content TEXT NOT NULL,
                status TEXT NOT NULL
                    CHECK (status IN ('complete', 'cancelled', 'error', 'in_progress')),
                client_id TEXT,
                reply_to INTEGER REFERENCES messages (id) ON DELETE CASCADE,
                backend TEXT,
                model TEXT,
                usage TEXT,
                created_at TEXT NOT NULL
            )
            """,
            # "messages of a session after id X, limit N"
            "CREATE INDEX messages_session ON messages (session_id, id)",
            # A client's message id is stored once per session; a reply answers one message.
            """
            CREATE UNIQUE INDEX messages_client_id ON messages (session_id, client_id)
            WHERE client_id IS NOT NULL AND role = 'user'
            """,
            "CREATE UNIQUE INDEX messages_reply_to ON messages (reply_to) "
            "WHERE reply_to IS NOT NULL",
        ],
    ),
    (
        "0002_message_count",
        [
            # Kept by every write in the same transaction, never counted again.
            "ALTER TABLE sessions ADD COLUMN message_count INTEGER NOT NULL DEFAULT 0",
            "UPDATE sessions SET message_count = "
            "(SELECT COUNT(*) FROM messages m WHERE m.session_id = sessions.id)",
        ],
    ),
]
