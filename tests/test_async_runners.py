"""The async sweeper and relay as tasks, and lifecycle_tasks: they start with the app and stop with it, also
when the app's lifespan is cancelled."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from conftest import ManualClock

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncSQLAlchemyStore,
    BroadcastEvent,
    EntityId,
    lifecycle_tasks,
    relay_task,
    sweeper_task,
)


async def _overdue(lifecycle: AsyncBroadcastLifecycle, clock: ManualClock) -> EntityId:
    bookings = lifecycle.kind("booking")
    entity_id = (await bookings.create("c1")).id
    await bookings.start_broadcast(entity_id, ["t1"])
    await bookings.activate(entity_id, ttl=timedelta(minutes=5))
    clock.advance(timedelta(minutes=10))
    return entity_id


def _waiter(lifecycle: AsyncBroadcastLifecycle, name: str) -> asyncio.Event:
    """An event set when an event called ``name`` reaches a receiver (no polling, no sleeps)."""
    arrived = asyncio.Event()

    async def receiver(event: BroadcastEvent) -> None:
        if event.name == name:
            arrived.set()

    lifecycle.bus.connect(receiver)
    return arrived


def test_lifecycle_tasks_sweep_and_relay_while_the_app_runs(tmp_path: Path) -> None:
    """Inside the block the sweeper expires an overdue broadcast and the relay delivers what a receiver
    failed on; leaving the block ends both tasks."""

    async def scenario() -> None:
        clock = ManualClock()
        store = AsyncSQLAlchemyStore.from_url(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
        await store.create_all()
        lifecycle = AsyncBroadcastLifecycle(store, clock=clock)
        entity_id = await _overdue(lifecycle, clock)
        failing = [True]

        async def flaky(event: BroadcastEvent) -> None:
            if failing[0]:
                raise ConnectionError("socket server down")
            if event.name == "BOOKING_EXPIRED":
                relayed.set()

        relayed = asyncio.Event()
        lifecycle.bus.connect(flaky)
        swept = _waiter(lifecycle, "BOOKING_EXPIRED")
        async with lifecycle_tasks(lifecycle, sweep_every=0.01, relay_every=0.01,
                                   relay=lifecycle.relay(grace=timedelta(0))) as tasks:
            await asyncio.wait_for(swept.wait(), 10)
            assert (await lifecycle.kind("booking").get(entity_id)).status.value == "expired"
            failing[0] = False
            clock.advance(timedelta(hours=1))  # past the failed event's backoff
            await asyncio.wait_for(relayed.wait(), 10)
        assert all(task.done() and not task.cancelled() for task in tasks)
        await store.close()

    asyncio.run(scenario())


def test_cancelled_lifespan_stops_the_tasks_cleanly(tmp_path: Path) -> None:
    """Cancelling the task that runs lifecycle_tasks cancels the sweeper and relay and waits for them; the pool
    has every connection back."""

    async def scenario() -> None:
        store = AsyncSQLAlchemyStore.from_url(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
        await store.create_all()
        lifecycle = AsyncBroadcastLifecycle(store)
        started = asyncio.Event()
        held: list[tuple[asyncio.Task[None], ...]] = []

        async def app() -> None:
            async with lifecycle_tasks(lifecycle, sweep_every=0.001, relay_every=0.001) as tasks:
                held.append(tasks)
                started.set()
                await asyncio.Event().wait()  # the app serves until it is cancelled

        running = asyncio.create_task(app())
        await started.wait()
        for _ in range(20):
            await asyncio.sleep(0)  # let the passes get going, so the cancellation lands inside one
        running.cancel()
        done, _ = await asyncio.wait({running}, timeout=10)
        assert done and running.cancelled()
        assert all(task.done() for task in held[0])
        assert store.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        await store.close()

    asyncio.run(scenario())


def test_async_sweeper_and_relay_tasks_stop_when_told() -> None:
    """sweeper_task and relay_task take an async lifecycle and relay, and end after their pass once stopped."""

    async def scenario() -> None:
        clock = ManualClock()
        lifecycle = AsyncBroadcastLifecycle(clock=clock)
        expired = _waiter(lifecycle, "BOOKING_EXPIRED")
        await _overdue(lifecycle, clock)
        stop = asyncio.Event()
        tasks = [sweeper_task(lifecycle, timedelta(seconds=30), stop=stop),
                 relay_task(lifecycle.relay(), timedelta(seconds=30), stop=stop)]
        await asyncio.wait_for(expired.wait(), 10)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)

    asyncio.run(scenario())
