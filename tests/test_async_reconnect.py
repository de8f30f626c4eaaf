"""The async store's own PostgreSQL connections honour the engine's pool settings the host chose
(pool_pre_ping, pool_recycle), although they bypass the pool: a dropped server connection costs a
reconnect, not a failed command."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from async_adapter import async_url
from postgres_server import PostgresServer
from sqlalchemy import create_engine, text

from broadcast_lifecycle import AsyncBroadcastLifecycle, AsyncSQLAlchemyStore, BroadcastStatus


def _drop_connections(url: str) -> int:
    """End every other session on the test's database, as a server restart or an idle timeout would."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return int(conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one())
    finally:
        admin.dispose()


@pytest.mark.parametrize("option", [{"pool_pre_ping": True}, {"pool_recycle": 0}], ids=["pre_ping", "recycle"])
def test_a_dropped_connection_is_replaced_when_the_engine_asks_for_it(postgres_server: PostgresServer,
                                                                      option: dict[str, Any]) -> None:
    """With pool_pre_ping (or a pool_recycle the connection outlived), a command after the server dropped
    the store's idle connections succeeds on a new one, as on the sync store."""
    url = postgres_server.create_database(f"reconnect_{next(iter(option))}")

    async def scenario() -> None:
        store = AsyncSQLAlchemyStore.from_url(async_url(url), **option)
        await store.create_all()
        bookings = AsyncBroadcastLifecycle(store).kind("booking")
        entity_id = (await bookings.create("c1")).id
        await bookings.start_broadcast(entity_id, ["t1"])
        assert _drop_connections(url) >= 1
        result = await bookings.activate(entity_id, ttl=timedelta(hours=1))
        assert result.status is BroadcastStatus.ACTIVE
        assert (await bookings.get(entity_id)).version == 3
        await store.close()

    asyncio.run(scenario())
