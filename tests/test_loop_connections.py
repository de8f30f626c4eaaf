"""The store's own connections on an asyncio engine: a command waiting for one, when all are taken, and
cancelled gets ``CancelledError`` whatever else the pool does meanwhile."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
from async_adapter import async_url
from postgres_server import PostgresServer
from sqlalchemy.ext.asyncio import create_async_engine

from broadcast_lifecycle import AsyncBroadcastLifecycle, AsyncSQLAlchemyStore
from broadcast_lifecycle.stores._loop_connections import LoopConnections
from broadcast_lifecycle.stores._sqlite_setup import SqliteSettings
from broadcast_lifecycle.stores.async_sqlalchemy import bridge


def test_a_waiter_cancelled_as_a_connection_comes_back_gets_cancelled_error(tmp_path: Path) -> None:
    """Two commands wait for the one connection; the first is cancelled and, before it runs again, the
    connection comes back: the first gets CancelledError (not an error of the pool's queue), the second
    the connection."""

    async def scenario() -> None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}")
        connections = LoopConnections(engine.sync_engine, SqliteSettings(), limit=1)
        held = await bridge(connections.get)
        first = asyncio.create_task(bridge(connections.get))
        second = asyncio.create_task(bridge(connections.get))
        while len(connections._waiting) < 2:  # both queued for the connection
            await asyncio.sleep(0)
        first.cancel()
        connections.put(held)  # wakes the next live waiter, dropping the cancelled one from the queue
        with pytest.raises(asyncio.CancelledError):
            await first
        got = await second
        assert got is held
        connections.put(got)
        await bridge(connections.close)
        await engine.dispose()

    asyncio.run(scenario())


def test_no_connection_outlives_its_use_after_the_store_is_closed(postgres_server: PostgresServer) -> None:
    """Commands in flight when the store is closed, and one sent after: each finishes, and once they have, the
    database has no connection of the store left (the closed store keeps none idle)."""
    url = postgres_server.create_database("closed_store")

    async def scenario() -> None:
        store = AsyncSQLAlchemyStore.from_url(async_url(url))
        await store.create_all()
        bookings = AsyncBroadcastLifecycle(store).kind("booking")
        in_flight = [asyncio.create_task(bookings.create(f"c{i}")) for i in range(4)]
        await asyncio.sleep(0)  # each has sent its first statement
        await store.close()
        assert all(isinstance(r.id, int) for r in await asyncio.gather(*in_flight))
        assert (await bookings.create("after-close")).id
        async with await psycopg.AsyncConnection.connect(url.replace("postgresql+psycopg", "postgresql")) as raw:
            row = await (await raw.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                           "AND pid <> pg_backend_pid()")).fetchone()
        assert row == (0,)

    asyncio.run(scenario())
