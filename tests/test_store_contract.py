"""The store contract, run on every store the library ships."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from postgres_server import PostgresServer
from sqlalchemy import String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from broadcast_lifecycle import BroadcastMixin, EntityId
from broadcast_lifecycle.contract import FOREIGN_TO_INT_KEYS, StoreContract
from broadcast_lifecycle.kinds import DEFAULT_KINDS, KindConfig
from broadcast_lifecycle.stores import BroadcastStore, InMemoryStore
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

_KINDS = (*DEFAULT_KINDS[:1], KindConfig("order", one_open_per_customer=True))


class TestInMemoryStore(StoreContract):
    """The reference store: it holds ids of every type (the contract's default)."""

    keeps_delivered_events = False

    def make_store(self) -> BroadcastStore:
        return InMemoryStore()


class TestSQLiteStore(StoreContract):
    """SQLAlchemyStore on a real SQLite file."""

    keeps_delivered_events = True

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

    keeps_delivered_events = True
    explicit_ids = (424242,)
    foreign_ids = FOREIGN_TO_INT_KEYS

    @pytest.fixture(autouse=True)
    def _database(self, postgres_server: PostgresServer, request: pytest.FixtureRequest) -> None:
        self.url = postgres_server.create_database(f"contract_{abs(hash(request.node.nodeid))}")

    def make_store(self) -> BroadcastStore:
        store = SQLAlchemyStore.from_url(self.url)
        store.create_all(_KINDS)
        return store


class _StrKeys(DeclarativeBase):
    pass


class StrBooking(_StrKeys, BroadcastMixin):
    """A host model keyed by strings the host picks (or the model's default)."""

    __tablename__ = "str_bookings"
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: uuid.uuid4().hex)


class StrOrder(_StrKeys, BroadcastMixin):
    __tablename__ = "str_orders"
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=lambda: uuid.uuid4().hex)


class _UuidKeys(DeclarativeBase):
    pass


class UuidBooking(_UuidKeys, BroadcastMixin):
    """A host model keyed by UUIDs."""

    __tablename__ = "uuid_bookings"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)


class UuidOrder(_UuidKeys, BroadcastMixin):
    __tablename__ = "uuid_orders"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)


_HOST_KEYS: dict[str, tuple[type[DeclarativeBase], Any, Any, tuple[EntityId, ...], tuple[object, ...]]] = {
    "str": (_StrKeys, StrBooking, StrOrder, ("777", "bk-17"), (424242, uuid.UUID(int=7))),
    "uuid": (_UuidKeys, UuidBooking, UuidOrder, (uuid.UUID(int=7),), (424242, "777", "bk-17")),
}


class TestSQLiteHostKeys(StoreContract):
    """SQLAlchemyStore on a real SQLite file, its kinds on host models keyed by strings, then by UUIDs:
    ids of those types come back as given."""

    @pytest.fixture(autouse=True, params=sorted(_HOST_KEYS))
    def _database(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.url = f"sqlite:///{tmp_path / 'contract.db'}"
        self.base, booking, order, self.explicit_ids, self.foreign_ids = _HOST_KEYS[request.param]
        self.models = {"booking": booking, "order": order}

    def make_store(self) -> BroadcastStore:
        store = SQLAlchemyStore.from_url(self.url, self.models)
        self.base.metadata.create_all(store.engine)
        store.create_all(_KINDS)
        return store
