"""Concurrent tasks on the async lifecycle, on real databases: no overfill, one terminal winner per race."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import START, ManualClock
from postgres_server import PostgresServer
from race_workers import async_accept_worker

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncKindHandle,
    AsyncSQLAlchemyStore,
    BroadcastStatus,
    Recipient,
    SqliteSettings,
    Topic,
    TransitionRefused,
)
from broadcast_lifecycle.testing import EventRecorder

TASKS = [f"t{i:02d}" for i in range(32)]
SLOTS = 5
ROUNDS = 100
DEADLINE = START + timedelta(minutes=1)
AFTER_DEADLINE = START + timedelta(minutes=2)
TERMINAL = {"cancel", "expire", "expire_due"}


async def _open_broadcast(bookings: AsyncKindHandle, transporters: list[str], customer: str = "c1") -> int:
    entity_id = (await bookings.create(customer, slots=SLOTS)).id
    await bookings.start_broadcast(entity_id, transporters)
    await bookings.activate(entity_id, ttl=timedelta(minutes=5))
    assert isinstance(entity_id, int)
    return entity_id


async def _assert_filled_exactly(bookings: AsyncKindHandle, entity_id: int) -> None:
    snap = await bookings.get(entity_id)
    assert (snap.status, snap.slots_filled) == (BroadcastStatus.FULLY_FILLED, SLOTS)
    assert sum(r.slots_held for r in await bookings.recipients(entity_id)) == SLOTS
    assert [h.trigger for h in await bookings.history(entity_id)].count("accept") == SLOTS


def test_thirty_two_tasks_race_for_five_slots(async_database_url: str) -> None:
    """32 tasks accept one slot each on 5 slots: exactly 5 win and 27 are refused, every round of 100."""

    async def scenario() -> None:
        store = AsyncSQLAlchemyStore.from_url(async_database_url)
        await store.create_all()
        lifecycle = AsyncBroadcastLifecycle(store)
        recorder = EventRecorder()
        lifecycle.bus.connect(recorder)
        bookings = lifecycle.kind("booking")
        for _ in range(ROUNDS):
            entity_id = await _open_broadcast(bookings, TASKS)
            go = asyncio.Event()

            async def accept(name: str, entity_id: int = entity_id, go: asyncio.Event = go) -> str:
                await go.wait()
                try:
                    await bookings.accept(entity_id, name)
                except TransitionRefused:
                    return "refused"
                return "won"

            tasks = [asyncio.create_task(accept(name)) for name in TASKS]
            await asyncio.sleep(0)  # every task is waiting at the start line
            go.set()
            outcomes = Counter(await asyncio.gather(*tasks))
            assert outcomes == {"won": SLOTS, "refused": len(TASKS) - SLOTS}
            await _assert_filled_exactly(bookings, entity_id)
            filled = [e for e in recorder.events if e.entity_id == entity_id and e.topic is Topic.FULLY_FILLED]
            assert len(filled) == 1
        assert store.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        await store.close()

    asyncio.run(scenario())


@pytest.mark.postgres
def test_four_processes_of_eight_tasks_race_for_five_slots(postgres_server: PostgresServer) -> None:
    """4 processes of 8 asyncio tasks accept one slot each on 5 slots on PostgreSQL: exactly 5 win, 100 rounds."""
    url = postgres_server.create_database("async_race_processes")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results: multiprocessing.Queue[tuple[str, str]] = ctx.Queue()
    groups = [TASKS[i::4] for i in range(4)]
    queues: list[multiprocessing.Queue[int | None]] = [ctx.Queue() for _ in groups]
    workers = [ctx.Process(target=async_accept_worker, args=(url, names, jobs, results, barrier))
               for names, jobs in zip(groups, queues, strict=True)]

    async def scenario() -> None:
        store = AsyncSQLAlchemyStore.from_url(url)
        await store.create_all()  # the tables exist before the workers connect
        bookings = AsyncBroadcastLifecycle(store).kind("booking")
        for worker in workers:
            worker.start()
        try:
            for _ in range(ROUNDS):
                entity_id = await _open_broadcast(bookings, TASKS)
                for jobs in queues:
                    jobs.put(entity_id)
                outcomes = Counter([(await asyncio.to_thread(results.get, timeout=60))[1] for _ in TASKS])
                assert outcomes == {"won": SLOTS, "refused": len(TASKS) - SLOTS}, outcomes
                await _assert_filled_exactly(bookings, entity_id)
        finally:
            for jobs in queues:
                jobs.put(None)
            for worker in workers:
                await asyncio.to_thread(worker.join, 30)
            await store.close()

    asyncio.run(scenario())
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]


def test_accept_expire_and_cancel_race_one_terminal_wins(async_database_url: str) -> None:
    """accept, cancel, expire and a sweep race as tasks on one broadcast, 100 rounds: one terminal transition
    wins each, and every recipient gets exactly one terminal event."""

    async def scenario() -> None:
        store = AsyncSQLAlchemyStore.from_url(async_database_url)
        await store.create_all()
        lifecycle = AsyncBroadcastLifecycle(store, clock=ManualClock(START))  # commands run before the deadline...
        recorder = EventRecorder()
        lifecycle.bus.connect(recorder)
        bookings = lifecycle.kind("booking")
        late = AsyncBroadcastLifecycle(store, clock=ManualClock(AFTER_DEADLINE), bus=lifecycle.bus).kind("booking")

        async def expire_due(entity_id: int) -> bool:
            del entity_id
            return await lifecycle.expire_due(AFTER_DEADLINE) == 1

        commands: dict[str, Callable[[int], Awaitable[object]]] = {
            "accept": lambda entity_id: bookings.accept(entity_id, "t1"),
            "cancel": lambda entity_id: bookings.cancel(entity_id, reason="customer changed plans"),
            # ...the expiry and the sweep are told it is past the deadline
            "expire": late.expire,
            "expire_due": expire_due,
        }
        for round_no in range(ROUNDS):
            entity_id = (await bookings.create(f"c{round_no}", slots=2)).id
            assert isinstance(entity_id, int)
            await bookings.start_broadcast(entity_id, ["t1", "t2"])
            await bookings.activate(entity_id, expires_at=DEADLINE)
            # the sweep is one quick statement and wins most races it is in: leave it out of every other round
            racers = list(commands) if round_no % 2 == 0 else [name for name in commands if name != "expire_due"]
            order = racers[round_no % len(racers):] + racers[:round_no % len(racers)]
            go = asyncio.Event()

            async def run(name: str, entity_id: int = entity_id, go: asyncio.Event = go) -> str:
                await go.wait()
                try:
                    return "won" if await commands[name](entity_id) else "lost"
                except TransitionRefused:
                    return "refused"

            tasks = {name: asyncio.create_task(run(name)) for name in order}
            await asyncio.sleep(0)
            go.set()
            outcomes = dict(zip(tasks, await asyncio.gather(*tasks.values()), strict=True))
            winners = [name for name in TERMINAL if outcomes.get(name) == "won"]
            assert len(winners) == 1, outcomes
            (winner,) = winners
            expected = BroadcastStatus.CANCELLED if winner == "cancel" else BroadcastStatus.EXPIRED
            assert (await bookings.get(entity_id)).status is expected
            history = [h.trigger for h in await bookings.history(entity_id)]
            assert history[3:] == (["accept"] if outcomes["accept"] == "won" else []) + [
                "cancel" if winner == "cancel" else "expire"]
            for recipient in (Recipient("customer", f"c{round_no}"), Recipient("transporter", "t1"),
                              Recipient("transporter", "t2")):
                terminal = [e for e in recorder.events if e.entity_id == entity_id and recipient in e.recipients
                            and e.topic in (Topic.CANCELLED, Topic.EXPIRED)]
                assert len(terminal) == 1, (recipient, terminal)
                assert terminal[0].status is expected
            recorder.clear()
        assert await store.run_sync(lambda s: s.pending_events(10)) == [], "every event was delivered after commit"
        await store.close()

    asyncio.run(scenario())


def test_sqlite_tasks_share_a_bounded_set_of_connections(tmp_path: Path) -> None:
    """On SQLite, 32 tasks writing at once through a store on a 2-connection pool open at most 7 connections
    of the store's own (the pool's size plus five) and all finish; the connections are reused afterwards.
    (At synchronous=FULL every transaction waits in aiosqlite's thread, so the tasks hold connections at once.)"""

    async def scenario() -> None:
        store = AsyncSQLAlchemyStore.from_url(f"sqlite+aiosqlite:///{tmp_path / 'bounded.db'}", pool_size=2,
                                              sqlite=SqliteSettings(synchronous="FULL"))
        await store.create_all()
        own = store.sync._db.loop_connections
        assert own is not None
        bookings = AsyncBroadcastLifecycle(store).kind("booking")
        entity_id = await _open_broadcast(bookings, TASKS, customer="c-bounded")
        peak = 0

        async def accept(name: str) -> str:
            nonlocal peak
            try:
                await bookings.accept(entity_id, name)
            except TransitionRefused:
                return "refused"
            finally:
                peak = max(peak, own._open)
            return "won"

        assert Counter(await asyncio.gather(*(accept(name) for name in TASKS))) == {"won": SLOTS, "refused": 27}
        assert peak == 7 and own._open == len(own._idle) == 7  # the bound was reached, never passed
        await store.close()
        assert own._open == 0

    asyncio.run(scenario())
