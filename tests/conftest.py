"""Shared fixtures: a controllable clock, a lifecycle on the in-memory store, a real PostgreSQL, a real Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from postgres_server import WHEEL, PostgresServer, find_binaries
from redis_server import RedisServer
from redis_server import find_binary as find_redis

from broadcast_lifecycle import BroadcastLifecycle, BroadcastStore, InMemoryStore
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

START = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        """Move the clock by ``delta`` (negative jumps back)."""
        self.now += delta


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock starting at 2026-01-01 12:00 UTC."""
    return ManualClock()


@pytest.fixture
def recorder() -> EventRecorder:
    """A receiver that records events."""
    return EventRecorder()


@pytest.fixture
def lifecycle(clock: ManualClock, recorder: EventRecorder) -> BroadcastLifecycle:
    """A lifecycle on an in-memory store, with ``recorder`` connected to every event."""
    lc = BroadcastLifecycle(InMemoryStore(), clock=clock)
    lc.bus.connect(recorder)
    return lc


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session, started in a temp dir."""
    if find_binaries() is None:
        pytest.skip(
            "PostgreSQL server binaries not found: PostgreSQL tests did NOT run. "
            f"Install them with `apt-get install postgresql` or `pip install '{WHEEL}'` (`make test` tries the "
            "wheel), or set BROADCAST_LIFECYCLE_PG_BIN."
        )
    with PostgresServer() as server:
        yield server


_database_counter = iter(range(1, 1_000_000))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a real SQLite file, then a database on the suite's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'broadcasts.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"test_{next(_database_counter)}")


@pytest.fixture
def async_database_url(database_url: str) -> str:
    """``database_url`` for the asyncio drivers: aiosqlite on the SQLite file, psycopg's async mode on PostgreSQL."""
    from async_adapter import async_url

    return async_url(database_url)


StoreOpener = Callable[[], BroadcastStore]
"""Opens the test's store again, as another process would (the in-memory store: the same object)."""


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreOpener]:
    """One store on each backend: the in-memory store, a real SQLite file, a database on the suite's
    PostgreSQL (tables created on the first open; each open is a new engine, like another process)."""
    if request.param == "memory":
        memory = InMemoryStore()
        yield lambda: memory
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'broadcasts.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.create_database(f"test_{next(_database_counter)}")
    opened: list[SQLAlchemyStore] = []

    def open_sql() -> BroadcastStore:
        store = SQLAlchemyStore.from_url(url)
        if not opened:
            store.create_all()
        opened.append(store)
        return store

    yield open_sql
    for store in opened:
        store.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real ``redis-server`` for the whole session, on a Unix socket in a temp dir."""
    if find_redis() is None:
        pytest.skip(
            "redis-server not found: the many-nodes Socket.IO tests did NOT run. Install it with "
            "`apt-get install redis-server` (`make test` tries when run as root), or set "
            "BROADCAST_LIFECYCLE_REDIS_SERVER."
        )
    with RedisServer() as server:
        yield server
