"""The PostgreSQL store: the shared contract on a real server, then what is its own."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from websockets.sync.client import connect

from chatbot.errors import ConfigError
from chatbot.search import parse_query
from chatbot.stores import store_for_url
from chatbot.stores.postgres import PostgresStore
from chatbot.stores.postgres_migrations import MIGRATIONS
from tests.conftest import bearer, make_token
from tests.postgres import run_sql
from tests.processes import ServeProcess, free_port
from tests.store_contract import StoreContract, StoreHarness, open_store
from tests.store_contract_tree import TreeContract
from tests.store_contract_usage import UsageContract

MIGRATION_NAMES = [name for name, _ in MIGRATIONS]


class TestPostgresStore(StoreContract, TreeContract, UsageContract):
    @pytest.fixture
    def store(self, postgres_url: str) -> Iterator[StoreHarness]:
        with open_store(PostgresStore(postgres_url), migrations=MIGRATION_NAMES) as harness:
            yield harness

    def backdate(self, store: StoreHarness, owner: str, days: int) -> None:
        store.run(
            store.store.pool.execute(
                "UPDATE usage_totals SET day = day - $1::integer WHERE owner = $2", days, owner
            )
        )


@pytest.fixture
def store(postgres_url: str) -> Iterator[StoreHarness]:
    with open_store(PostgresStore(postgres_url), migrations=MIGRATION_NAMES) as harness:
        yield harness


def test_migrating_an_empty_schema_creates_the_schema(
    store: StoreHarness, postgres_url: str
) -> None:
    assert store.first_migrate == MIGRATION_NAMES == [
        "0001_initial", "0002_work", "0003_limits", "0004_usage",
    ]  # fmt: skip
    schema = postgres_url.rsplit("search_path=", 1)[1]
    tables = run_sql(
        postgres_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
        schema,
    )
    assert {row["table_name"] for row in tables} == {
        "sessions", "messages", "shares", "chatbot_migrations", "usage_totals",
        "quota_overrides", "rate_windows", "socket_leases", "chatbot_processes", "chatbot_jobs",
        "chatbot_workers",
    }  # fmt: skip
    indexes = run_sql(
        postgres_url, "SELECT indexname FROM pg_indexes WHERE schemaname = $1", schema
    )
    assert {row["indexname"] for row in indexes} >= {
        "sessions_owner_activity", "messages_session", "messages_parent", "messages_client_id",
        "messages_regeneration_id", "messages_reply_to", "messages_search", "shares_session",
    }  # fmt: skip
    recorded = run_sql(postgres_url, "SELECT name, applied_at FROM chatbot_migrations")
    assert [row["name"] for row in recorded] == MIGRATION_NAMES
    assert recorded[0]["applied_at"].utcoffset() == timedelta(0)


def test_every_foreign_key_has_an_index_to_check_it(store: StoreHarness, postgres_url: str) -> None:
    """Deleting a row looks up the rows that refer to it: without an index that starts with
    the referring columns, each deleted message would read the whole table."""
    schema = postgres_url.rsplit("search_path=", 1)[1]
    keys = run_sql(
        postgres_url,
        "SELECT c.conrelid::regclass::text AS tab, c.conkey::int[] AS cols FROM pg_constraint c "
        "JOIN pg_namespace n ON n.oid = c.connamespace WHERE c.contype = 'f' AND n.nspname = $1",
        schema,
    )
    # messages: session, parent, reply; shares: session; the work queue: session (jobs, workers)
    assert len(keys) == 6
    for key in keys:
        leading = run_sql(
            postgres_url,
            "SELECT i.indexrelid::regclass::text AS name FROM pg_index i "
            "WHERE i.indrelid = $1::regclass "
            "AND (i.indkey::int[])[0:cardinality($2::int[]) - 1] = $2::int[]",
            key["tab"], key["cols"],
        )  # fmt: skip
        assert leading, f"no index starts with the columns {key['cols']} of {key['tab']}"


def test_rows_are_stored_with_their_types(store: StoreHarness, postgres_url: str) -> None:
    session = store.create_session("alice", backend="echo")
    question = store.add_user_message("alice", session.id, content="hi").message
    store.add_reply(
        "alice", session.id, reply_to=question.id, content="hello", status="complete",
        usage={"input_tokens": 1, "output_tokens": 2},
    )  # fmt: skip
    store.create_share("alice", session.id, "share-1", [{"role": "user", "content": "hi"}])
    rows = run_sql(
        postgres_url,
        "SELECT pg_typeof(id)::text AS id, pg_typeof(created_at)::text AS created_at, "
        "jsonb_typeof(usage) AS usage, usage->>'output_tokens' AS output FROM messages "
        "ORDER BY id",
    )
    assert [dict(row) for row in rows] == [
        {"id": "bigint", "created_at": "timestamp with time zone", "usage": None, "output": None},
        {"id": "bigint", "created_at": "timestamp with time zone", "usage": "object",
         "output": "2"},
    ]  # fmt: skip
    (share,) = run_sql(postgres_url, "SELECT jsonb_typeof(messages) AS kind FROM shares")
    assert share["kind"] == "array"


def test_data_survives_reopening_the_store(store: StoreHarness, postgres_url: str) -> None:
    session = store.create_session("alice", backend="echo", title="kept", model="echo")
    question = store.add_user_message("alice", session.id, content="ça va ? 🙂").message
    answer = store.add_reply(
        "alice", session.id, reply_to=question.id, content="Echo: ça va ? 🙂",
        status="complete", usage={"output_tokens": 4},
    )  # fmt: skip
    before = store.get_session("alice", session.id)
    store.run(store.store.close())

    with open_store(PostgresStore(postgres_url), migrations=MIGRATION_NAMES) as again:
        assert again.first_migrate == []
        assert again.applied_migrations() == MIGRATION_NAMES
        assert again.get_session("alice", session.id) == before
        assert again.list_messages("alice", session.id, limit=10).messages == [question, answer]
        hits = again.search("alice", parse_query("ca va"), limit=10, offset=0)
        assert sorted((hit.message for hit in hits), key=lambda m: m.id) == [question, answer]
        newer = again.add_user_message("alice", session.id, content="and now?").message
        assert newer.id > answer.id
        assert newer.parent_id == answer.id


def test_search_phrases_single_letters_and_scope(store: StoreHarness) -> None:
    sid = store.create_session("alice", backend="echo").id
    exact = store.add_user_message("alice", sid, content="take the A train, not Ä").message
    swapped = store.add_user_message("alice", sid, content="the train takes a while").message

    def found(text: str, owner: str = "alice") -> set[int]:
        hits = store.search(owner, parse_query(text), limit=10, offset=0)
        return {hit.message.id for hit in hits}

    assert found('"take the a train"') == {exact.id}
    assert found("take train") == {exact.id, swapped.id}
    # One letter is a whole word (accents aside), two or more a prefix.
    assert found("a") == {exact.id, swapped.id}
    assert found("t") == set()
    assert found("tr") == {exact.id, swapped.id}
    # Two to four characters are looked up as indexed prefixes, the word itself included;
    # longer ones as prefixes of the words.
    assert found("tak") == found("take") == {exact.id, swapped.id}
    assert found("takes") == {swapped.id}
    assert found("the tra") == found("th") == {exact.id, swapped.id}
    assert found("trains") == found("thee") == set()
    # A prefix is not a word of a phrase.
    assert found('"th train"') == found('"take th"') == set()
    # The user's words never reach another owner's scope lexeme, however they start.
    assert found("u", owner="bob") == set()
    assert found("u0 u1 u2 u3 u4 u5 u6 u7 u8 u9 ua ub uc ud ue uf", owner="bob") == set()


def test_a_huge_message_is_stored_and_found_by_its_first_words(store: StoreHarness) -> None:
    sid = store.create_session("alice", backend="echo").id
    distinct = " ".join(f"w{n:07d}" for n in range(120_000))  # over 1 MB of distinct words
    content = "needle " + "x" * 5000 + " " + distinct + " haystack"
    message = store.add_user_message("alice", sid, content=content).message
    assert store.get_message("alice", sid, message.id).content == content
    hits = store.search("alice", parse_query("needle"), limit=5, offset=0)
    assert [hit.message.id for hit in hits] == [message.id]
    assert [h.message.id for h in store.search("alice", parse_query("x"), limit=5, offset=0)] == []


def test_store_for_a_postgresql_url_takes_the_pool_size() -> None:
    for scheme in ("postgresql", "postgres"):
        store = store_for_url(f"{scheme}://u@db.example/chat", pool_size=3)
        assert isinstance(store, PostgresStore)
        assert store.pool_size == 3
    assert PostgresStore("postgresql://u@db.example/chat").pool_size == 10


def test_a_missing_driver_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # import asyncpg now fails
    monkeypatch.delitem(sys.modules, "chatbot.stores.postgres")
    monkeypatch.delitem(sys.modules, "chatbot.stores.postgres_db")
    with pytest.raises(ConfigError) as raised:
        store_for_url("postgresql://u@db.example/chat")
    assert "pip install 'chatbot[postgres]'" in str(raised.value)


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    port = free_port()
    store = PostgresStore(f"postgresql://chat:hunter2@127.0.0.1:{port}/chat")
    with pytest.raises(ConfigError) as raised:
        asyncio.run(store.open())
    message = str(raised.value)
    assert message.startswith(
        f"cannot use the PostgreSQL database postgresql://chat@127.0.0.1:{port}/chat: "
    )
    assert "hunter2" not in message
    assert "\n" not in message


def test_a_server_process_keeps_its_conversations_in_postgresql(
    tmp_path: Path, postgres_url: str
) -> None:
    with ServeProcess(tmp_path, CHATBOT_DATABASE_URL=postgres_url) as server:
        with connect(server.ws_url, additional_headers=bearer(make_token("alice"))) as ws:
            session_id = json.loads(ws.recv(timeout=10))["session_id"]
            ws.send(json.dumps({"message": "hello postgres", "id": "c-1"}))
            while (frame := json.loads(ws.recv(timeout=10))).get("type") != "message":
                pass
        assert frame["reply_to"] == "c-1"
    with open_store(PostgresStore(postgres_url), migrations=MIGRATION_NAMES) as store:
        assert store.first_migrate == []
        session = store.get_session("alice", session_id)
        assert session.message_count == 2
        messages = store.list_messages("alice", session_id, limit=10).messages
        assert [(m.role, m.client_id) for m in messages] == [("user", "c-1"), ("assistant", None)]
        assert messages[0].content == "hello postgres"
        assert messages[1].content == frame["message"]
        assert messages[1].id == frame["message_id"]
