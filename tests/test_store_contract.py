"""The store contract, run on every store the library ships."""

from __future__ import annotations

from pathlib import Path

import pytest
from postgres_server import PostgresServer

from broadcast_lifecycle.contract import FOREIGN_TO_INT_KEYS, StoreContract
from broadcast_lifecycle.kinds import DEFAULT_KINDS, KindConfig
from broadcast_lifecycle.stores import BroadcastStore, InMemoryStore
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

_KINDS = (*DEFAULT_KINDS[:1], KindConfig("order", one_open_per_customer=True))


class TestInMemoryStore(StoreContract):
    """The reference store: it holds ids of every type (the contract's default)."""

    def make_store(self) -> BroadcastStore:
        return InMemoryStore()


class TestSQLiteStore(StoreContract):
    """SQLAlchemyStore on a real SQLite file."""

    explicit_ids = (424242,)
    foreign_ids = FOREIGN_TO_INT_KEYS

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path / 'contract.db'}"

    def make_store(self) -> BroadcastStore:
        store = SQLAlchemyStore.from_url(self.url)
        store.create_all(_KINDS)
        return store


@pytest.mark.postgres
class TestPostgresStore(StoreContract):
    """SQLAlchemyStore on the suite's PostgreSQL server, a fresh database per test."""

    explicit_ids = (424242,)
    foreign_ids = FOREIGN_TO_INT_KEYS

    @pytest.fixture(autouse=True)
    def _database(self, postgres_server: PostgresServer, request: pytest.FixtureRequest) -> None:
        self.url = postgres_server.create_database(f"contract_{abs(hash(request.node.nodeid))}")

    def make_store(self) -> BroadcastStore:
        store = SQLAlchemyStore.from_url(self.url)
        store.create_all(_KINDS)
        return store
