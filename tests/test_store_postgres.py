"""The PostgreSQL store: the shared contract on a real server, then what is its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chatbot.stores.postgres import PostgresStore
from chatbot.stores.postgres_migrations import MIGRATIONS
from tests.store_contract import StoreContract, StoreHarness, open_store
from tests.store_contract_tree import TreeContract

MIGRATION_NAMES = [name for name, _ in MIGRATIONS]


class TestPostgresStore(StoreContract, TreeContract):
    @pytest.fixture
    def store(self, postgres_url: str) -> Iterator[StoreHarness]:
        with open_store(PostgresStore(postgres_url), migrations=MIGRATION_NAMES) as harness:
            yield harness
