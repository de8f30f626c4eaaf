"""The outbox's reads on AsyncSQLAlchemyStore, awaited: the same answers as the sync store's."""

from __future__ import annotations

import asyncio

from conftest import ManualClock

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncSQLAlchemyStore,
    BroadcastEvent,
    RetryPolicy,
    SQLAlchemyStore,
)


def test_dead_letters_and_outbox_reads_are_awaited(async_database_url: str) -> None:
    """A receiver that fails its only attempt leaves a dead letter that ``await store.dead_letters(n)``
    lists, and pending_events, outbox_summary and outbox_of answer as the sync store does."""

    async def scenario() -> None:
        store = AsyncSQLAlchemyStore.from_url(async_database_url)
        await store.create_all()
        lc = AsyncBroadcastLifecycle(store, clock=ManualClock(), retry=RetryPolicy(max_attempts=1))

        def sink(event: BroadcastEvent) -> None:
            raise RuntimeError("analytics sink is down")

        lc.bus.connect(sink, name="tests.sink")
        try:
            created = await lc.kind("booking").create("c1")
            (dead,) = await store.dead_letters(10)
            assert (dead.receiver, dead.event.entity_id, dead.last_error) == (
                "tests.sink", created.id, "RuntimeError: analytics sink is down")
            assert await store.dead_letters(10) == await store.run_sync(SQLAlchemyStore.dead_letters, 10)
            assert [e.event.event_id for e in await store.outbox_of("booking", created.id)] == [
                created.events[0].event_id]
            assert (await store.outbox_summary())["dead"].count == 1
            assert await store.pending_events(10) == await store.run_sync(SQLAlchemyStore.pending_events, 10)
        finally:
            await store.close()

    asyncio.run(scenario())
