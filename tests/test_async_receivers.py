"""Coroutine receivers on the bus: awaited on the loop they were connected on, never on another; a failure of
a coroutine or a sync receiver leaves the event in the outbox for the relay."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
from conftest import ManualClock

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    BroadcastEvent,
    BroadcastLifecycle,
    Deduplicator,
    EntityId,
    InMemoryStore,
    InvalidArgument,
    SignalBus,
)
from broadcast_lifecycle.testing import EventRecorder


async def _active(lifecycle: AsyncBroadcastLifecycle) -> EntityId:
    bookings = lifecycle.kind("booking")
    entity_id = (await bookings.create("c1", slots=2)).id
    await bookings.start_broadcast(entity_id, ["t1", "t2"])
    await bookings.activate(entity_id, ttl=timedelta(minutes=5))
    return entity_id


def test_coroutine_receiver_is_awaited_on_its_loop_before_the_command_returns() -> None:
    """An async receiver runs on the loop it was connected on, and has finished when the command returns."""

    async def scenario() -> None:
        lifecycle = AsyncBroadcastLifecycle()
        loop = asyncio.get_running_loop()
        seen: list[tuple[str, bool, bool]] = []

        async def receiver(event: BroadcastEvent) -> None:
            await asyncio.sleep(0)  # a real await: the receiver is awaited, not just called
            seen.append((event.name, asyncio.get_running_loop() is loop, threading.current_thread() is main))

        main = threading.current_thread()
        lifecycle.bus.connect(receiver)
        entity_id = await _active(lifecycle)
        assert [name for name, _, _ in seen] == ["BROADCAST_STATE_CHANGED"] * 2 + [
            "BOOKING_OFFERED", "BROADCAST_STATE_CHANGED", "BOOKING_OFFERED"]
        await lifecycle.kind("booking").cancel(entity_id)
        assert [name for name, _, _ in seen][-2:] == ["BROADCAST_STATE_CHANGED", "BOOKING_CANCELLED"]
        assert all(on_loop and on_thread for _, on_loop, on_thread in seen)

    asyncio.run(scenario())


def test_sync_and_coroutine_receivers_side_by_side() -> None:
    """A sync receiver keeps working beside a coroutine one; both get every event once."""

    async def scenario() -> None:
        lifecycle = AsyncBroadcastLifecycle()
        recorder = EventRecorder()
        awaited: list[str] = []

        async def receiver(event: BroadcastEvent) -> None:
            awaited.append(event.event_id)

        lifecycle.bus.connect(recorder)
        lifecycle.bus.connect(receiver)
        await _active(lifecycle)
        assert [e.event_id for e in recorder.events] == awaited and len(awaited) == 5  # 3 changes and 2 offers

    asyncio.run(scenario())


@pytest.mark.parametrize("failing", ["coroutine", "sync"])
def test_failing_receiver_leaves_the_event_for_the_relay(failing: str) -> None:
    """A receiver that raises (coroutine or sync) does not stop the others; the event stays in the outbox with
    the error, and the async relay delivers it once the receiver works again."""

    async def scenario() -> None:
        clock = ManualClock()
        store = InMemoryStore()
        lifecycle = AsyncBroadcastLifecycle(store, clock=clock)
        recorder = EventRecorder()
        broken = [True]

        async def async_receiver(event: BroadcastEvent) -> None:
            if broken[0] and event.name == "BOOKING_CANCELLED":
                raise ConnectionError("socket server down")
            recorder(event)

        def sync_receiver(event: BroadcastEvent) -> None:
            if broken[0] and event.name == "BOOKING_CANCELLED":
                raise ConnectionError("socket server down")
            recorder(event)

        others = EventRecorder()
        lifecycle.bus.connect(async_receiver if failing == "coroutine" else sync_receiver)
        lifecycle.bus.connect(others)
        entity_id = await _active(lifecycle)
        await lifecycle.kind("booking").cancel(entity_id)
        assert "BOOKING_CANCELLED" in others.names() and "BOOKING_CANCELLED" not in recorder.names()
        (pending,) = store.pending_events(10)
        assert pending.event.name == "BOOKING_CANCELLED" and "socket server down" in (pending.last_error or "")
        broken[0] = False
        clock.advance(timedelta(minutes=5))
        report = await lifecycle.relay(grace=timedelta(0)).relay_once()
        assert report.delivered == 1 and "BOOKING_CANCELLED" in recorder.names()
        assert store.pending_events(10) == []

    asyncio.run(scenario())


def test_event_sent_from_another_thread_runs_on_the_receivers_loop() -> None:
    """A sync lifecycle committing in a worker thread hands a coroutine receiver's work to its own loop."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        bus = SignalBus()
        ran_on: list[tuple[bool, str]] = []

        async def receiver(event: BroadcastEvent) -> None:
            del event
            ran_on.append((asyncio.get_running_loop() is loop, threading.current_thread().name))

        bus.connect(receiver)
        sync = BroadcastLifecycle(InMemoryStore(), bus=bus)
        created = await asyncio.to_thread(sync.kind("booking").create, "c1")
        assert created.events and ran_on == [(True, threading.current_thread().name)]
        assert sync.store.pending_events(10) == []

    asyncio.run(scenario())


def test_blocking_call_on_the_loop_thread_defers_to_the_relay() -> None:
    """A sync command called on the loop's own thread cannot await a coroutine receiver: the event waits in the
    outbox with an error that says why, and the async relay delivers it on the loop."""

    async def scenario() -> None:
        clock = ManualClock()
        store = InMemoryStore()
        got: list[str] = []

        async def receiver(event: BroadcastEvent) -> None:
            got.append(event.name)

        asynchronous = AsyncBroadcastLifecycle(store, clock=clock)
        asynchronous.bus.connect(receiver)
        blocking = BroadcastLifecycle(store, bus=asynchronous.bus, clock=clock)
        blocking.kind("booking").create("c1")  # on the loop's thread, outside the bridge
        assert got == []
        (pending,) = store.pending_events(10)
        assert "blocking call on its loop's thread" in (pending.last_error or "")
        clock.advance(timedelta(minutes=1))
        await asynchronous.relay(grace=timedelta(0)).relay_once()
        assert got == ["BROADCAST_STATE_CHANGED"]

    asyncio.run(scenario())


def test_coroutine_receiver_needs_a_running_loop() -> None:
    """Connecting a coroutine receiver with no running loop is refused, naming the receiver."""

    async def on_event(event: BroadcastEvent) -> None:
        del event

    with pytest.raises(InvalidArgument, match=r"on_event.*event loop runs"):
        SignalBus().connect(on_event)


def test_deduplicator_wraps_a_coroutine_receiver() -> None:
    """Deduplicator around a coroutine receiver awaits it, once per event id."""

    async def scenario() -> None:
        lifecycle = AsyncBroadcastLifecycle()
        recorder = EventRecorder()
        got: list[str] = []

        async def receiver(event: BroadcastEvent) -> None:
            await asyncio.sleep(0)
            got.append(event.event_id)

        dedup = Deduplicator(receiver)
        lifecycle.bus.connect(dedup)
        lifecycle.bus.connect(recorder)
        await _active(lifecycle)
        assert got == [e.event_id for e in recorder.events] and len(got) == 5  # 3 changes and 2 offers
        dedup(recorder.events[0])  # delivered again (say, by a relay): dropped without reaching the receiver
        assert (dedup.dropped, len(got)) == (1, 5)

    asyncio.run(scenario())
