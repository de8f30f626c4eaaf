"""The hypothesis state machine of test_stateful, run through AsyncBroadcastLifecycle on aiosqlite and on
async psycopg: the same rules and invariants, through the thin adapter of async_adapter."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator, Sequence

import pytest
from async_adapter import blocking_lifecycle, blocking_store
from conftest import ManualClock
from hypothesis import HealthCheck, settings
from postgres_server import PostgresServer
from test_stateful import LifecycleMachine

from broadcast_lifecycle import BroadcastLifecycle, KindConfig


class AsyncSQLiteLifecycleMachine(LifecycleMachine):
    """The machine on AsyncSQLAlchemyStore over a fresh SQLite file (aiosqlite) per run."""

    def make_lifecycle(self, clock: ManualClock, kinds: Sequence[KindConfig]) -> BroadcastLifecycle:
        """An async lifecycle on a new SQLite database in a temporary directory, behind the adapter."""
        self._tmp = tempfile.mkdtemp(prefix="bl-async-stateful-")
        self._store = blocking_store(f"sqlite+aiosqlite:///{self._tmp}/broadcasts.db", kinds)
        lifecycle, _ = blocking_lifecycle(self._store, clock=clock, kinds=tuple(kinds))
        return lifecycle

    def close_lifecycle(self) -> None:
        """Close the store and its loop; delete the database."""
        self._store.close()
        shutil.rmtree(self._tmp, ignore_errors=True)


class AsyncPostgresLifecycleMachine(LifecycleMachine):
    """The machine on AsyncSQLAlchemyStore over a fresh PostgreSQL database (async psycopg) per run."""

    server: PostgresServer | None = None
    runs = 0

    def make_lifecycle(self, clock: ManualClock, kinds: Sequence[KindConfig]) -> BroadcastLifecycle:
        """An async lifecycle on a new database of the suite's server, behind the adapter."""
        assert self.server is not None, "the postgres_machine fixture sets the server"
        type(self).runs += 1
        url = self.server.create_database(f"async_stateful_{type(self).runs}")
        self._store = blocking_store(url, kinds)
        lifecycle, _ = blocking_lifecycle(self._store, clock=clock, kinds=tuple(kinds))
        return lifecycle

    def close_lifecycle(self) -> None:
        """Close the store and its loop."""
        self._store.close()


_BASE = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
AsyncSQLiteLifecycleMachine.TestCase.settings = settings(_BASE, max_examples=20, stateful_step_count=25)
AsyncPostgresLifecycleMachine.TestCase.settings = settings(_BASE, max_examples=12, stateful_step_count=25)


@pytest.fixture
def postgres_machine(postgres_server: PostgresServer) -> Iterator[None]:
    """Hands the suite's PostgreSQL server to the machine (a unittest-style case takes no fixtures)."""
    AsyncPostgresLifecycleMachine.server = postgres_server
    yield
    AsyncPostgresLifecycleMachine.server = None


TestAsyncSQLiteLifecycle = AsyncSQLiteLifecycleMachine.TestCase
TestAsyncPostgresLifecycle = pytest.mark.postgres(
    pytest.mark.usefixtures("postgres_machine")(AsyncPostgresLifecycleMachine.TestCase))
