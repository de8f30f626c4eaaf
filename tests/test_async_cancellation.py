"""Cancelling a task in the middle of an async command, at every point it waits: before, during and after
the write. Nothing is ever half written, an uncommitted command sends no event, a committed one's events
are delivered at least once (by the relay, if the cancellation cut the dispatch short), and the connection
goes back to the pool clean (or, cut short while being reset, is closed by the pool)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from conftest import ManualClock
from sqlalchemy import select, text
from suspensions import Suspensions

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncKindHandle,
    AsyncSQLAlchemyStore,
    BroadcastEvent,
    BroadcastSnapshot,
    HistoryEntry,
    RecipientRecord,
)
from broadcast_lifecycle.stores.schema import outbox_table
from broadcast_lifecycle.testing import EventRecorder


class CancelAt(Suspensions):
    """Awaits ``coro``, cancelling the awaiting task the ``n``-th time ``coro`` suspends (``n=0``: before it
    starts; ``None``: never). The cancellation is the real one: the task cancels the future it waits on."""

    def __init__(self, awaitable: Awaitable[Any], n: int | None) -> None:
        super().__init__(awaitable)
        self.n = n

    def __await__(self) -> Generator[Any, Any, Any]:
        if self.n == 0:
            self.inner.close()
            raise asyncio.CancelledError
        return (yield from super().__await__())

    def suspended(self) -> None:
        if self.count == self.n:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # the task cancels the future yielded next, as when cancelled from outside


@dataclass(frozen=True)
class Seen:
    """One broadcast as the database holds it, and the events the receiver got about it."""

    snapshot: BroadcastSnapshot
    history: tuple[HistoryEntry, ...]
    recipients: tuple[RecipientRecord, ...]
    outbox: frozenset[tuple[str, int, bool]]
    """(event id, version, delivered) of each outbox row."""
    received: tuple[BroadcastEvent, ...]


class Harness:
    """A lifecycle on ``url`` with a coroutine receiver (it waits once, so a cancellation can land inside it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.store = AsyncSQLAlchemyStore.from_url(url)
        self.clock = ManualClock(datetime.now(timezone.utc))
        self.lifecycle = AsyncBroadcastLifecycle(self.store, clock=self.clock)
        self.bookings: AsyncKindHandle = self.lifecycle.kind("booking")
        self.recorder = EventRecorder()
        self.committed = self.rolled_back = 0

    async def start(self) -> None:
        await self.store.create_all()

        async def receiver(event: BroadcastEvent) -> None:
            await asyncio.sleep(0)
            self.recorder(event)

        self.lifecycle.bus.connect(receiver)

    async def active(self, slots: int = 2) -> int:
        entity_id = (await self.bookings.create("c1", slots=slots)).id
        await self.bookings.start_broadcast(entity_id, ["t1", "t2"])
        await self.bookings.activate(entity_id, ttl=timedelta(minutes=5))
        assert isinstance(entity_id, int)
        return entity_id

    async def seen(self, entity_id: int) -> Seen:
        o = outbox_table.c
        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(select(o.event_id, o.version, o.delivered_at)
                                       .where(o.entity_id == str(entity_id)))).all()
        return Seen(await self.bookings.get(entity_id), await self.bookings.history(entity_id),
                    await self.bookings.recipients(entity_id),
                    frozenset((row[0], row[1], row[2] is not None) for row in rows),
                    tuple(e for e in self.recorder.events if e.entity_id == entity_id))

    async def assert_clean(self) -> None:
        """No connection checked out of the pool or held from the store's own, none left in a transaction,
        no write lock held."""
        assert self.store.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        own = self.store.sync._db.loop_connections
        assert own is not None and own._open == len(own._idle)  # each of the store's own is back, or closed
        if self.url.startswith("sqlite"):
            probe = sqlite3.connect(self.url.split(":///", 1)[1], timeout=0, isolation_level=None)
            probe.execute("BEGIN IMMEDIATE")  # "database is locked" if a cancelled write kept the lock
            probe.execute("ROLLBACK")
            probe.close()
            return
        async with self.store.engine.connect() as conn:
            stuck = (await conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'"))).scalar_one()
        assert stuck == 0

    async def check(self, entity_id: int, before: Seen, cancelled: bool) -> None:
        """The command left the broadcast as it was, or made one whole transition whose events went out once."""
        after = await self.seen(entity_id)
        if after.snapshot == before.snapshot:
            assert cancelled, "a command that was not cancelled changed nothing"
            assert (after.history, after.recipients, after.outbox, after.received) == (
                before.history, before.recipients, before.outbox, before.received), "a half-written command"
            self.rolled_back += 1
        else:
            assert after.snapshot.version == before.snapshot.version + 1
            assert after.history[:-1] == before.history and after.history[-1].to_status is after.snapshot.status
            new_rows = after.outbox - before.outbox
            assert new_rows and {version for _, version, _ in new_rows} == {after.snapshot.version}
            received = {e.event_id for e in after.received[len(before.received):]}
            marked = {event_id for event_id, _, done in new_rows if done}
            assert marked <= received, "an event was marked delivered that no receiver got"
            if cancelled:
                self.committed += 1
            # what the cancellation cut short (not handed over, or handed over but not yet marked: at least once)
            self.clock.advance(timedelta(seconds=1))
            report = await self.lifecycle.relay(grace=timedelta(0)).relay_once()
            assert report.delivered == len(new_rows) - len(marked)
            final = await self.seen(entity_id)
            again = [e.event_id for e in final.received[len(after.received):]]
            assert sorted(again) == sorted(event_id for event_id, _, _ in new_rows if event_id not in marked)
            assert received | set(again) == {event_id for event_id, _, _ in new_rows}
            assert final.outbox == {(event_id, version, True) for event_id, version, _ in new_rows} | before.outbox
        await self.assert_clean()


Command = Callable[[Harness, int], Awaitable[object]]


async def _cancel_everywhere(url: str, command: Command) -> tuple[int, int]:
    """Run ``command`` on a fresh broadcast, cancelled at each of its suspensions in turn (and once not at
    all); returns how many cancelled runs rolled back and how many had already committed."""
    harness = Harness(url)
    await harness.start()
    entity_id = await harness.active()
    uncancelled = CancelAt(command(harness, entity_id), None)
    before = await harness.seen(entity_id)
    await uncancelled
    await harness.check(entity_id, before, cancelled=False)
    assert uncancelled.count > 0
    for n in range(uncancelled.count + 2):  # the last one never cancels: a run may wait less often
        entity_id = await harness.active()
        before = await harness.seen(entity_id)
        cancelled = False
        try:
            await CancelAt(command(harness, entity_id), n)
        except asyncio.CancelledError:
            cancelled = True
        assert cancelled or n > 1, f"not cancelled at suspension {n} of {uncancelled.count}"
        await harness.check(entity_id, before, cancelled)
    await harness.store.close()
    return harness.rolled_back, harness.committed


def _accept(harness: Harness, entity_id: int) -> Awaitable[object]:
    return harness.bookings.accept(entity_id, "t1")


def _accept_with_reason(harness: Harness, entity_id: int) -> Awaitable[object]:
    return harness.bookings.accept(entity_id, "t1", reason="took it")  # the general path (read, then write)


def _cancel(harness: Harness, entity_id: int) -> Awaitable[object]:
    return harness.bookings.cancel(entity_id, reason="changed plans")  # terminal: events to every recipient


def test_cancelled_accept_is_whole_or_absent(async_database_url: str) -> None:
    """An accept cancelled at any of its suspensions rolled back or committed whole; never half, no leak."""
    rolled_back, committed = asyncio.run(_cancel_everywhere(async_database_url, _accept))
    assert rolled_back >= 1 and committed >= 1  # cancellations landed before and after the commit


def test_cancelled_accept_on_the_general_path_is_whole_or_absent(async_database_url: str) -> None:
    """An accept with a reason (read, decide, write) cancelled anywhere: whole or absent, no leak."""
    rolled_back, committed = asyncio.run(_cancel_everywhere(async_database_url, _accept_with_reason))
    assert rolled_back >= 1 and committed >= 1


def test_cancelled_cancel_is_whole_or_absent(async_database_url: str) -> None:
    """A cancel (events to every recipient) cancelled anywhere: whole or absent, its events delivered once."""
    rolled_back, committed = asyncio.run(_cancel_everywhere(async_database_url, _cancel))
    assert rolled_back >= 1 and committed >= 1


def test_cancelled_create_leaves_no_row(async_database_url: str) -> None:
    """A create cancelled at each suspension leaves no broadcast (or a whole one) and no checked-out connection."""

    async def scenario() -> None:
        harness = Harness(async_database_url)
        await harness.start()
        bookings = harness.bookings
        full = CancelAt(bookings.create("c-full"), None)
        await full
        outcomes = []
        for n in range(1, full.count + 1):
            customer = f"c-{n}"
            with contextlib.suppress(asyncio.CancelledError):
                await CancelAt(bookings.create(customer), n)
            async with harness.store.engine.connect() as conn:
                rows = (await conn.execute(text(
                    "SELECT b.id, "
                    "(SELECT count(*) FROM bl_transition_history h WHERE h.entity_id = CAST(b.id AS TEXT)), "
                    "(SELECT count(*) FROM bl_outbox o WHERE o.entity_id = CAST(b.id AS TEXT)) "
                    "FROM bl_broadcasts b WHERE b.customer_id = :c"), {"c": customer})).all()
            assert [tuple(row[1:]) for row in rows] in ([], [(1, 1)]), rows  # none, or one with its history and event
            outcomes.append(bool(rows))
            await harness.assert_clean()
        # A create commits before its first suspension (PostgreSQL: one statement, its first round trip; SQLite:
        # its transaction on the loop's thread): none lands before it. test_async_sqlite_hops cancels one that waits.
        assert True in outcomes
        await harness.store.close()

    asyncio.run(scenario())


def test_cancelled_sweep_expires_all_or_none(async_database_url: str) -> None:
    """expire_due cancelled at each suspension expires its batch whole or not at all; a later sweep finishes."""

    async def scenario() -> None:
        harness = Harness(async_database_url)
        await harness.start()
        lifecycle = harness.lifecycle
        full = CancelAt(lifecycle.expire_due(), None)
        await full
        for n in range(1, full.count + 3):
            ids = [await harness.active() for _ in range(3)]
            harness.clock.advance(timedelta(minutes=10))
            with contextlib.suppress(asyncio.CancelledError):
                await CancelAt(lifecycle.expire_due(), n)
            statuses = {(await harness.bookings.get(entity_id)).status.value for entity_id in ids}
            assert statuses in ({"active"}, {"expired"}), statuses
            await harness.assert_clean()
            assert await lifecycle.expire_due() == (3 if statuses == {"active"} else 0)
            harness.clock.advance(timedelta(seconds=1))
            await harness.lifecycle.relay(grace=timedelta(0)).relay_once()
            for entity_id in ids:
                history = await harness.bookings.history(entity_id)
                assert [h.trigger for h in history].count("expire") == 1
                received = [e.name for e in harness.recorder.events if e.entity_id == entity_id]
                assert received.count("BOOKING_EXPIRED") >= 1  # at least once: a cancel may cut the marking short
        await harness.store.close()

    asyncio.run(scenario())
