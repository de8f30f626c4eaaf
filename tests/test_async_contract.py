"""The shipped store contract, run through AsyncBroadcastLifecycle on aiosqlite and on async psycopg."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from async_adapter import BlockingLifecycle, BlockingStore, blocking_lifecycle, blocking_store
from postgres_server import PostgresServer

from broadcast_lifecycle import AsyncSQLAlchemyStore, BroadcastLifecycle, BroadcastStore, InMemoryStore, KindConfig
from broadcast_lifecycle.contract import StoreContract, _Clock
from broadcast_lifecycle.testing import EventRecorder

_KINDS = (KindConfig("booking"), KindConfig("order", one_open_per_customer=True))


class AsyncContract(StoreContract):
    """The contract through the async facade; each test's stores (and their loops) are closed after it."""

    url: str | None = None

    @pytest.fixture(autouse=True)
    def _close_after(self) -> Iterator[None]:
        self.opened: list[BlockingStore | BlockingLifecycle] = []
        yield
        for each in self.opened:
            each.close()

    def make_store(self) -> BroadcastStore:
        """The async store on a loop of its own, with the sync store's face (for the tests that build a
        lifecycle themselves); ``_lifecycle`` puts the async facade on it."""
        if self.url is None:
            return _AsyncMemory()
        store = blocking_store(self.url, _KINDS)
        self.opened.append(store)
        return cast(BroadcastStore, store)

    def _lifecycle(self, store: BroadcastStore | None = None) -> tuple[BroadcastLifecycle, EventRecorder, _Clock]:
        if store is not None and not isinstance(store, (BlockingStore, _AsyncMemory)):
            return super()._lifecycle(store)  # the reference store some tests compare with
        clock = _Clock()
        lc, adapter = blocking_lifecycle(store if store is not None else self.make_store(), clock=clock,
                                         kinds=_KINDS)
        if not isinstance(adapter.async_lifecycle.store, AsyncSQLAlchemyStore):
            self.opened.append(adapter)  # an async store is closed with its BlockingStore
        recorder = EventRecorder()
        lc.bus.connect(recorder)
        return lc, recorder, clock


class _AsyncMemory(InMemoryStore):
    """The in-memory store, marked for the async facade."""


class TestAsyncInMemory(AsyncContract):
    """The async facade on the in-memory store (no I/O: every command runs in the bridge at once)."""

    explicit_ids = (424242, "bk-17", uuid.UUID("12345678-1234-5678-1234-567812345678"))
    foreign_ids = ()  # it holds ids of every type


class TestAsyncSQLite(AsyncContract):
    """AsyncSQLAlchemyStore on a real SQLite file through aiosqlite."""

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.url = f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}"


@pytest.mark.postgres
class TestAsyncPostgres(AsyncContract):
    """AsyncSQLAlchemyStore on the suite's PostgreSQL server through psycopg's async mode."""

    @pytest.fixture(autouse=True)
    def _database(self, postgres_server: PostgresServer, request: pytest.FixtureRequest) -> None:
        self.url = postgres_server.create_database(f"async_contract_{abs(hash(request.node.nodeid))}")
