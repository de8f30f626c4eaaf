"""The shipped store contract, run through AsyncBroadcastLifecycle on aiosqlite and on async psycopg."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from async_adapter import BlockingLifecycle, BlockingStore, blocking_lifecycle, blocking_store
from postgres_server import PostgresServer

from broadcast_lifecycle import (
    AsyncSQLAlchemyStore,
    BroadcastLifecycle,
    BroadcastStore,
    EntityId,
    InMemoryStore,
    KindConfig,
)
from broadcast_lifecycle.contract import FOREIGN_TO_INT_KEYS, StoreContract
from broadcast_lifecycle.contract_base import EVERY_ID_TYPE, Clock
from broadcast_lifecycle.testing import EventRecorder

_KINDS = (KindConfig("booking"), KindConfig("order", one_open_per_customer=True))


class AsyncContract(StoreContract):
    """The contract through the async facade; each test's stores (and their loops) are closed after it."""

    url: str | None = None
    explicit_ids: tuple[EntityId, ...] = (424242,)
    foreign_ids: tuple[object, ...] = FOREIGN_TO_INT_KEYS

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

    def release_store(self, store: BroadcastStore) -> None:
        """Nothing here: the fixture closes each store with its loop, after the lifecycles on it."""

    def _lifecycle(self, store: BroadcastStore | None = None, *, listening: bool = True,
                   ) -> tuple[BroadcastLifecycle, EventRecorder, Clock]:
        if store is not None and not isinstance(store, (BlockingStore, _AsyncMemory)):
            return super()._lifecycle(store, listening=listening)  # the reference store some tests compare with
        clock = Clock()
        lc, adapter = blocking_lifecycle(store if store is not None else self.new_store(), clock=clock,
                                         kinds=_KINDS)
        if not isinstance(adapter.async_lifecycle.store, AsyncSQLAlchemyStore):
            self.opened.append(adapter)  # an async store is closed with its BlockingStore
        recorder = EventRecorder()
        if listening:
            lc.bus.connect(recorder)
        return lc, recorder, clock


class _AsyncMemory(InMemoryStore):
    """The in-memory store, marked for the async facade."""


class TestAsyncInMemory(AsyncContract):
    """The async facade on the in-memory store (no I/O: every command runs in the bridge at once)."""

    explicit_ids = EVERY_ID_TYPE  # it holds ids of every type
    foreign_ids = ()
    keeps_delivered_events = False


class TestAsyncSQLite(AsyncContract):
    """AsyncSQLAlchemyStore on a real SQLite file through aiosqlite."""

    keeps_delivered_events = True

    @pytest.fixture(autouse=True)
    def _database(self, tmp_path: Path) -> None:
        self.url = f"sqlite+aiosqlite:///{tmp_path / 'contract.db'}"


@pytest.mark.postgres
class TestAsyncPostgres(AsyncContract):
    """AsyncSQLAlchemyStore on the suite's PostgreSQL server through psycopg's async mode."""

    keeps_delivered_events = True

    @pytest.fixture(autouse=True)
    def _database(self, postgres_server: PostgresServer, request: pytest.FixtureRequest) -> None:
        self.url = postgres_server.create_database(f"async_contract_{abs(hash(request.node.nodeid))}")
