"""The store's own connections on an asyncio engine: a command waiting for one, when all are taken, and
cancelled gets ``CancelledError`` whatever else the pool does meanwhile."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

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
