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
    (
        "0003_branches",
        [
            # Each message follows its parent; a session's current branch ends at leaf_id.
            # Every existing session becomes one branch in the order it was listed (by id).
            "ALTER TABLE messages ADD COLUMN parent_id INTEGER REFERENCES messages (id)",
            "UPDATE messages SET parent_id = (SELECT MAX(p.id) FROM messages p "
            "WHERE p.session_id = messages.session_id AND p.id < messages.id)",
            "ALTER TABLE sessions ADD COLUMN leaf_id INTEGER",
            "UPDATE sessions SET leaf_id = "
            "(SELECT MAX(m.id) FROM messages m WHERE m.session_id = sessions.id)",
            # "the children of a message, oldest first" (and a session's roots)
            "CREATE INDEX messages_parent ON messages (session_id, parent_id, id)",
            # A regenerated reply answers the same user message again.
            "DROP INDEX messages_reply_to",
            "CREATE INDEX messages_reply_to ON messages (reply_to) WHERE reply_to IS NOT NULL",
            # A regeneration's client id, stored on its reply, once per session.
            """
            CREATE UNIQUE INDEX messages_regeneration_id ON messages (session_id, client_id)
            WHERE client_id IS NOT NULL AND role = 'assistant'
            """,
        ],
    ),
    (
        "0004_search",
        [
            # The owner is part of every row of the index (one token, 'u' and the owner's
            # id in hex), so that a search is scoped inside the full-text query itself.
            """
            CREATE VIEW message_search_rows AS
            SELECT m.id AS id, m.content AS content, 'u' || hex(s.owner) AS scope
            FROM messages m JOIN sessions s ON s.id = m.session_id
            """,
            """
            CREATE VIRTUAL TABLE message_search USING fts5(
                content, scope, content = 'message_search_rows', content_rowid = 'id',
                tokenize = 'unicode61 remove_diacritics 2'
            )
            """,
            """
            CREATE TRIGGER message_search_insert AFTER INSERT ON messages BEGIN
                INSERT INTO message_search (rowid, content, scope)
                SELECT NEW.id, NEW.content, 'u' || hex(owner) FROM sessions
                WHERE id = NEW.session_id;
            END
            """,
            """
            CREATE TRIGGER message_search_delete AFTER DELETE ON messages BEGIN
                INSERT INTO message_search (message_search, rowid, content, scope)
                SELECT 'delete', OLD.id, OLD.content, 'u' || hex(owner) FROM sessions
                WHERE id = OLD.session_id;
            END
            """,
            """
            CREATE TRIGGER message_search_update AFTER UPDATE OF content ON messages BEGIN
                INSERT INTO message_search (message_search, rowid, content, scope)
                SELECT 'delete', OLD.id, OLD.content, 'u' || hex(owner) FROM sessions
                WHERE id = OLD.session_id;
                INSERT INTO message_search (rowid, content, scope)
                SELECT NEW.id, NEW.content, 'u' || hex(owner) FROM sessions
                WHERE id = NEW.session_id;
            END
            """,
            # A session's messages go before the session row, while the index's delete
            # trigger can still read their owner.
            """
            CREATE TRIGGER sessions_delete_messages BEFORE DELETE ON sessions BEGIN
                DELETE FROM messages WHERE session_id = OLD.id;
            END
            """,
            "INSERT INTO message_search (message_search) VALUES ('rebuild')",
        ],
    ),
    (
        "0005_shares",
        [
            # A share is a frozen copy of a branch, readable by anyone with its id.
            """
            CREATE TABLE shares (
                id TEXT PRIMARY KEY,
                session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
                owner TEXT NOT NULL,
                title TEXT,
                created_at TEXT NOT NULL,
                messages TEXT NOT NULL
            )
            """,
            "CREATE INDEX shares_session ON shares (session_id, created_at)",
        ],
    ),
    (
        "0006_search_prefixes",
        [
            # Prefixes of 2 to 4 characters indexed as such: a short query word (the words
            # it starts are many) is one list to read rather than the merge of every word it
            # starts, across all users (see docs/performance.md). The triggers name the
            # table, not its definition, and keep working on the new one.
            "DROP TABLE message_search",
            """
            CREATE VIRTUAL TABLE message_search USING fts5(
                content, scope, content = 'message_search_rows', content_rowid = 'id',
                tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3 4'
            )
            """,
            "INSERT INTO message_search (message_search) VALUES ('rebuild')",
        ],
    ),
    (
        "0007_usage",
        [
            # Tokens used per user, UTC day ("YYYY-MM-DD"), backend and model ('' when the
            # reply named none), added to in the transaction that stores each reply. A month
            # of a user is one range of the primary key.
            """
            CREATE TABLE usage_totals (
                owner TEXT NOT NULL,
                day TEXT NOT NULL,
                backend TEXT NOT NULL,
                model TEXT NOT NULL,
                input_tokens INTEGER NOT NULL,
                output_tokens INTEGER NOT NULL,
                replies INTEGER NOT NULL,
                PRIMARY KEY (owner, day, backend, model)
            ) WITHOUT ROWID
            """,
            # Backfilled from the replies already stored (an imported reply cannot be told
            # from one answered here: its usage counts too). A count that is not a whole
            # number >= 0 counts as 0, and a reply with neither count adds nothing, as
            # chatbot.stores.usage.ledger_tokens decides for new replies.
            """
            INSERT INTO usage_totals
            SELECT owner, day, backend, model, SUM(COALESCE(input, 0)),
                SUM(COALESCE(output, 0)), COUNT(*)
            FROM (
                SELECT s.owner AS owner, date(m.created_at) AS day,
                    COALESCE(m.backend, '') AS backend, COALESCE(m.model, '') AS model,
                    CASE WHEN json_type(m.usage, '$.input_tokens') = 'integer'
                        AND json_extract(m.usage, '$.input_tokens') >= 0
                        THEN json_extract(m.usage, '$.input_tokens') END AS input,
                    CASE WHEN json_type(m.usage, '$.output_tokens') = 'integer'
                        AND json_extract(m.usage, '$.output_tokens') >= 0
                        THEN json_extract(m.usage, '$.output_tokens') END AS output
                FROM messages m JOIN sessions s ON s.id = m.session_id
                WHERE m.role = 'assistant'
                    AND CASE WHEN json_valid(m.usage) THEN json_type(m.usage) = 'object' END
            )
            WHERE input IS NOT NULL OR output IS NOT NULL
            GROUP BY owner, day, backend, model
            """,
            # An operator's quota for one user (`chatbot quota set`); NULL: no limit.
            """
            CREATE TABLE quota_overrides (
                user_id TEXT PRIMARY KEY,
                tokens_per_day INTEGER,
                tokens_per_month INTEGER,
                updated_at TEXT NOT NULL
            ) WITHOUT ROWID
            """,
        ],
    ),
]
