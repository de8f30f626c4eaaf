"""On an asyncio SQLite engine a write transaction of the store's own runs whole on the loop's thread when it
cannot wait there (WAL at synchronous NORMAL, the write lock free), else whole in one hop to aiosqlite's
thread: a held write lock, FULL durability or a rollback journal never make the loop wait, the WAL is
checkpointed off the loop, and a refusal or a failure rolls the transaction back and leaves the connection
usable."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from suspensions import Suspensions

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncKindHandle,
    AsyncSQLAlchemyStore,
    BroadcastEvent,
    BroadcastSnapshot,
    CommandContext,
    SQLAlchemyStore,
    SqliteSettings,
    TransitionRefused,
    Trigger,
)
from broadcast_lifecycle.stores import async_sqlite


class Threads:
    """A host guard on accept that records the thread it ran in and refuses transporter ``t2``."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, snapshot: BroadcastSnapshot, ctx: CommandContext) -> str | None:
        self.seen.append(threading.get_ident())
        return "t2 may not accept" if ctx.transporter_id == "t2" else None


async def _open(path: Path, settings: SqliteSettings | None = None) -> tuple[AsyncSQLAlchemyStore, AsyncKindHandle,
                                                                                 Threads, int]:
    """A store on ``path``, the booking handle with a :class:`Threads` guard, and an active 2-slot booking."""
    store = AsyncSQLAlchemyStore.from_url(f"sqlite+aiosqlite:///{path}", sqlite=settings)
    await store.create_all()
    bookings = AsyncBroadcastLifecycle(store).kind("booking")
    guard = Threads()
    bookings.add_guard(Trigger.ACCEPT, guard)
    entity_id = (await bookings.create("c1", slots=2)).id
    await bookings.start_broadcast(entity_id, ["t1", "t2"])
    await bookings.activate(entity_id, ttl=timedelta(minutes=5))
    assert isinstance(entity_id, int)
    return store, bookings, guard, entity_id


async def _let_others_run(turns: int = 5) -> None:
    """Yield to the loop ``turns`` times: every ready task (and callback) gets that many steps."""
    for _ in range(turns):
        await asyncio.sleep(0)


def test_a_command_runs_on_the_loops_thread_without_waiting(tmp_path: Path) -> None:
    """With the write lock free, an accept (read, guard, decide, write) and a cancel never suspend the task and
    the guard runs on the loop's thread; a guard's refusal writes nothing and the next command works."""

    async def scenario() -> None:
        store, bookings, guard, entity_id = await _open(tmp_path / "loop.db")
        accept = Suspensions(bookings.accept(entity_id, "t1", reason="took it"))
        accepted = (await accept).snapshot
        assert (accepted.slots_filled, accept.count) == (1, 0)
        assert guard.seen == [threading.get_ident()]
        with pytest.raises(TransitionRefused, match="t2 may not accept"):
            await bookings.accept(entity_id, "t2")
        assert (await bookings.get(entity_id)).version == accepted.version
        cancel = Suspensions(bookings.cancel(entity_id, reason="changed plans"))
        cancelled = (await cancel).snapshot
        assert (cancelled.status.value, cancel.count) == ("cancelled", 0)
        assert [h.trigger for h in await bookings.history(entity_id)][-2:] == ["accept", "cancel"]
        await store.close()

    asyncio.run(scenario())


def test_a_held_write_lock_sends_the_transaction_to_aiosqlites_thread_and_the_loop_runs_on(tmp_path: Path) -> None:
    """While another connection holds the database's write lock, an accept waits for it in aiosqlite's thread
    (its guard runs there) and other tasks keep running on the loop; it commits once the lock is released."""

    async def scenario() -> None:
        path = tmp_path / "busy.db"
        store, bookings, guard, entity_id = await _open(path)
        blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
        blocker.execute("BEGIN IMMEDIATE")
        accept = asyncio.ensure_future(bookings.accept(entity_id, "t1"))
        ticks = 0
        for _ in range(50):  # the loop is free: this task runs on while the accept waits for the lock
            await asyncio.sleep(0)
            ticks += 1
        assert ticks == 50 and not accept.done()
        blocker.execute("ROLLBACK")
        blocker.close()
        assert (await accept).snapshot.slots_filled == 1
        assert len(guard.seen) == 1 and guard.seen[0] != threading.get_ident()
        again = Suspensions(bookings.accept(entity_id, "t1"))  # the lock free again: back on the loop's thread
        assert ((await again).snapshot.slots_filled, again.count) == (2, 0)
        await store.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("settings", [SqliteSettings(synchronous="FULL"), SqliteSettings(wal=False)],
                         ids=["synchronous-full", "rollback-journal"])
def test_a_commit_that_syncs_to_disk_never_runs_on_the_loop(tmp_path: Path, settings: SqliteSettings) -> None:
    """At synchronous=FULL, or outside WAL mode, a commit waits for the disk: every transaction runs in
    aiosqlite's thread (one wait on the loop; the guard off the loop's thread)."""

    async def scenario() -> None:
        store, bookings, guard, entity_id = await _open(tmp_path / "durable.db", settings)
        accept = Suspensions(bookings.accept(entity_id, "t1"))
        assert ((await accept).snapshot.slots_filled, accept.count) == (1, 1)
        assert len(guard.seen) == 1 and guard.seen[0] != threading.get_ident()
        await store.close()

    asyncio.run(scenario())


def test_the_wal_is_checkpointed_in_aiosqlites_thread_and_stays_bounded(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's connections never checkpoint on commit (which fsyncs): after every ``CHECKPOINT_AFTER`` rows
    one transaction runs in aiosqlite's thread and checkpoints there, so the WAL keeps restarting instead of
    growing with every transition."""
    monkeypatch.setattr(async_sqlite, "CHECKPOINT_AFTER", 40)

    async def scenario() -> None:
        path = tmp_path / "wal.db"
        store, bookings, guard, entity_id = await _open(path, SqliteSettings(synchronous="NORMAL"))
        for _ in range(300):
            await bookings.accept(entity_id, "t1")
            await bookings.release(entity_id, "t1")
        off_loop = [ident for ident in guard.seen if ident != threading.get_ident()]
        assert 300 * 4 // 40 // 2 <= len(off_loop) < 300  # an accept changes 4 rows, a release 4: about 1 in 10
        async with store.engine.connect() as conn:  # the host's pool connections keep SQLite's default
            assert (await conn.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar_one() == 1000
        own = store.sync._db.loop_connections
        assert own is not None and own._idle
        idle = own._idle[-1].connection.driver_connection._connection
        assert idle.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        # 600 transitions write about 10 pages each: without checkpoints the WAL would hold some 24 MB
        assert (path.parent / "wal.db-wal").stat().st_size < 4 * 1024 * 1024
        await store.close()

    asyncio.run(scenario())


def test_writes_outside_a_transaction_checkpoint_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process whose store only marks events delivered (a relay) writes no transaction of its own, yet
    its connections, whose auto-checkpoint is off, still checkpoint the WAL after ``CHECKPOINT_AFTER`` rows."""
    monkeypatch.setattr(async_sqlite, "CHECKPOINT_AFTER", 40)
    checkpoints: list[int] = []
    checkpoint = async_sqlite.AiosqliteCursor._checkpoint

    def counted(cursor: async_sqlite.AiosqliteCursor, sqlite_cursor: sqlite3.Cursor) -> None:
        checkpoints.append(threading.get_ident())
        checkpoint(cursor, sqlite_cursor)

    async def scenario() -> None:
        store, bookings, _guard, entity_id = await _open(tmp_path / "relay.db")
        for _ in range(30):  # events no receiver takes: they stay pending
            await bookings.accept(entity_id, "t1")
            await bookings.release(entity_id, "t1")
        pending = await store.pending_events(1000)
        assert len(pending) >= 60
        monkeypatch.setattr(async_sqlite.AiosqliteCursor, "_checkpoint", counted)
        for entry in pending:  # one single-statement write each, as a relay marks what it delivered
            await store.run_sync(SQLAlchemyStore.mark_delivered, [entry.event.event_id], entry.created_at)
        assert len(checkpoints) >= len(pending) // 40
        assert threading.get_ident() not in checkpoints  # in aiosqlite's thread, never on the loop's
        await store.close()

    asyncio.run(scenario())


def test_a_command_cancelled_while_waiting_for_the_write_lock_writes_nothing(tmp_path: Path) -> None:
    """A create cancelled while its transaction waits for a held write lock in aiosqlite's thread leaves no row
    once the lock is released, and the connection serves the next command on the loop's thread."""

    async def scenario() -> None:
        path = tmp_path / "cancel.db"
        store, bookings, _guard, _entity_id = await _open(path)
        blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
        blocker.execute("BEGIN IMMEDIATE")
        create = asyncio.ensure_future(bookings.create("c-cancelled"))
        await _let_others_run()
        assert not create.done()
        create.cancel()
        await _let_others_run()  # the cancelled task waits for its hop to end, which waits for the lock
        assert not create.done()
        blocker.execute("ROLLBACK")
        with pytest.raises(asyncio.CancelledError):
            await create
        count = blocker.execute("SELECT count(*) FROM bl_broadcasts WHERE customer_id = 'c-cancelled'").fetchone()
        assert count == (0,)
        blocker.close()
        after = Suspensions(bookings.create("c-next"))
        assert ((await after).snapshot.customer_id, after.count) == ("c-next", 0)
        await store.close()

    asyncio.run(scenario())


def test_a_connection_bound_to_its_thread_keeps_writes_in_aiosqlites_thread(tmp_path: Path) -> None:
    """A host engine whose sqlite3 connections may only be used by the thread that opened them
    (``check_same_thread=True``) runs every write transaction in aiosqlite's thread, and it works."""

    async def scenario() -> None:
        store = AsyncSQLAlchemyStore.from_url(f"sqlite+aiosqlite:///{tmp_path / 'bound.db'}",
                                              connect_args={"check_same_thread": True})
        await store.create_all()
        bookings = AsyncBroadcastLifecycle(store).kind("booking")
        guard = Threads()
        bookings.add_guard(Trigger.ACCEPT, guard)
        entity_id = (await bookings.create("c1", slots=2)).id
        await bookings.start_broadcast(entity_id, ["t1"])
        await bookings.activate(entity_id, ttl=timedelta(minutes=5))
        accept = Suspensions(bookings.accept(entity_id, "t1"))
        assert ((await accept).snapshot.slots_filled, accept.count) == (1, 1)
        assert len(guard.seen) == 1 and guard.seen[0] != threading.get_ident()
        await store.close()

    asyncio.run(scenario())


def test_a_dispatch_cancelled_while_marking_delivered_returns_once_the_mark_is_written(tmp_path: Path) -> None:
    """A command cancelled while the statement marking its event delivered waits in aiosqlite's thread (here for
    a held write lock) gets ``CancelledError`` only once that statement has ended: the event is then marked,
    the relay has nothing left to send, and the connection is back among the idle ones."""

    async def scenario() -> None:
        path = tmp_path / "mark.db"
        store, bookings, _guard, entity_id = await _open(path)
        lifecycle = AsyncBroadcastLifecycle(store)
        bookings = lifecycle.kind("booking")
        blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
        received: list[str] = []

        def receiver(event: BroadcastEvent) -> None:  # runs after the commit, before the mark
            received.append(event.event_id)
            if len(received) == 1:  # the mark's UPDATE now waits for the lock in aiosqlite's thread
                blocker.execute("BEGIN IMMEDIATE")

        lifecycle.bus.connect(receiver)
        accept = asyncio.ensure_future(bookings.accept(entity_id, "t1"))
        while not received:
            await asyncio.sleep(0)
        await _let_others_run()
        assert not accept.done()
        accept.cancel()
        await _let_others_run()  # the cancelled task waits for the UPDATE to end, which waits for the lock
        assert not accept.done()
        mark = "SELECT delivered_at IS NOT NULL FROM bl_outbox WHERE event_id = ?"
        assert blocker.execute(mark, received).fetchone() == (0,)
        blocker.execute("ROLLBACK")
        with pytest.raises(asyncio.CancelledError):
            await accept
        assert blocker.execute(mark, received).fetchone() == (1,)
        blocker.close()
        await lifecycle.relay(grace=timedelta(0)).relay_once()  # the events _open sent before any receiver
        assert received.count(received[0]) == 1
        own = store.sync._db.loop_connections
        assert own is not None and own._open == len(own._idle)
        await store.close()

    asyncio.run(scenario())
