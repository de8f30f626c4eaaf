"""What is particular to SQLite: decisions under the write lock, per-thread connections, time as text."""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import ManualClock
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import NullPool, QueuePool

from broadcast_lifecycle import (
    BroadcastLifecycle,
    BroadcastSnapshot,
    BroadcastStatus,
    CommandContext,
    TransitionRefused,
    Trigger,
    WritePath,
)
from broadcast_lifecycle.stores._sql_text import TimeCodec
from broadcast_lifecycle.stores._sqlite_setup import ThreadConnections
from broadcast_lifecycle.stores.schema import history_table
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder


def _lifecycle(path: Path, **engine_options: Any) -> tuple[SQLAlchemyStore, BroadcastLifecycle, EventRecorder]:
    store = SQLAlchemyStore.from_url(f"sqlite:///{path}", **engine_options)
    store.create_all()
    lc = BroadcastLifecycle(store, clock=ManualClock())
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    return store, lc, recorder


def _active(lc: BroadcastLifecycle, customer: str = "c1", slots: int = 2) -> BroadcastSnapshot:
    snap = lc.kind("booking").create(customer, slots=slots)
    lc.kind("booking").start_broadcast(snap.id, ["t1", "t2"])
    return lc.kind("booking").activate(snap.id, ttl=timedelta(hours=1)).snapshot


# -- decisions under the write lock ------------------------------------------------------------


def test_sqlite_store_decides_under_its_write_lock(tmp_path: Path) -> None:
    """On SQLite a command is one transaction: BEGIN IMMEDIATE, the read, the writes, COMMIT."""
    store, lc, _ = _lifecycle(tmp_path / "lock.db")
    assert store.decides_under_lock()
    snap = _active(lc)
    statements: list[str] = []
    connection = store._db.threads.get() if store._db.threads is not None else None
    assert isinstance(connection, sqlite3.Connection)
    connection.set_trace_callback(statements.append)
    try:
        lc.kind("booking").accept(snap.id, "t1")
    finally:
        connection.set_trace_callback(None)
    heads = [" ".join(s.split()[:2]) for s in statements]
    assert heads == ["BEGIN IMMEDIATE", "SELECT status,", "UPDATE bl_broadcasts", "UPDATE bl_recipients",
                     "INSERT INTO", "INSERT INTO", "COMMIT",
                     "UPDATE bl_outbox"]  # the receiver's event is marked delivered by one statement after it


def test_sqlite_store_decides_nothing_in_a_statement(tmp_path: Path) -> None:
    """Deciding in the statement is PostgreSQL's: on SQLite the store takes no trigger that way (accept and
    release included), so every command is decided under the write lock."""
    store, lc, _ = _lifecycle(tmp_path / "in_place.db")
    snap = _active(lc)
    assert [t for t in Trigger if store.decides_in_statement(lc.kind("booking").config, t)] == []
    assert lc.kind("booking").accept(snap.id, "t1").path is WritePath.UNDER_LOCK


def test_refusal_under_the_lock_writes_nothing_and_frees_the_lock(tmp_path: Path) -> None:
    """A host guard that refuses (or fails) inside the transaction rolls it back; the next command runs."""
    _, lc, recorder = _lifecycle(tmp_path / "refuse.db")
    snap = _active(lc)
    calls = {"n": 0}

    def flaky_guard(_snap: BroadcastSnapshot, _ctx: CommandContext) -> str | None:
        calls["n"] += 1
        if calls["n"] == 1:
            return "documents missing"
        if calls["n"] == 2:
            raise RuntimeError("guard bug")
        return None

    lc.add_guard(Trigger.ACCEPT, flaky_guard)
    before, events_before = lc.kind("booking").history(snap.id), len(recorder.events)
    with pytest.raises(TransitionRefused, match="documents missing"):
        lc.kind("booking").accept(snap.id, "t1")
    with pytest.raises(RuntimeError, match="guard bug"):
        lc.kind("booking").accept(snap.id, "t1")
    assert lc.kind("booking").history(snap.id) == before and len(recorder.events) == events_before
    assert lc.kind("booking").get(snap.id).version == snap.version
    assert lc.kind("booking").accept(snap.id, "t1").snapshot.slots_filled == 1  # no transaction was left open


def test_a_guard_may_read_through_the_lifecycle_under_the_lock(tmp_path: Path) -> None:
    """A guard that looks at another broadcast reads on the same connection: no self-deadlock."""
    _, lc, _ = _lifecycle(tmp_path / "read.db")
    other = _active(lc, "c2")
    snap = _active(lc)
    seen: list[BroadcastStatus] = []

    def only_if_other_is_open(_snap: BroadcastSnapshot, _ctx: CommandContext) -> str | None:
        seen.append(lc.kind("booking").get(other.id).status)
        return None

    lc.add_guard(Trigger.ACCEPT, only_if_other_is_open)
    assert lc.kind("booking").accept(snap.id, "t1").status is BroadcastStatus.PARTIALLY_FILLED
    assert seen == [BroadcastStatus.ACTIVE]


@pytest.mark.parametrize("engine_options", [{"poolclass": NullPool}, {"pool_size": 1, "max_overflow": 0}])
def test_other_pools_work_the_same(tmp_path: Path, engine_options: dict[str, Any]) -> None:
    """With a NullPool the store takes a fresh connection each time; with a one-connection pool it
    must not starve itself (its per-thread connection is detached from the pool)."""
    store, lc, recorder = _lifecycle(tmp_path / "pools.db", **engine_options)
    assert (store._db.threads is None) == (engine_options.get("poolclass") is NullPool)
    snap = _active(lc)
    lc.kind("booking").accept(snap.id, "t1")
    done = lc.kind("booking").accept(snap.id, "t2")
    assert done.status is BroadcastStatus.FULLY_FILLED
    assert [e.topic.value for e in recorder.events][-2:] == ["state_changed", "fully_filled"]
    assert [h.to_status for h in lc.kind("booking").history(snap.id)][-1] is BroadcastStatus.FULLY_FILLED


def test_in_memory_database_runs_a_lifecycle() -> None:
    """``sqlite://`` keeps its own pool (one database per connection), so commands see the tables."""
    store = SQLAlchemyStore.from_url("sqlite://")
    store.create_all()
    assert store._db.threads is None
    lc = BroadcastLifecycle(store, clock=ManualClock())
    snap = _active(lc)
    assert lc.kind("booking").cancel(snap.id, actor="c1").status is BroadcastStatus.CANCELLED


# -- per-thread connections -----------------------------------------------------------------------


def test_each_thread_keeps_one_connection(tmp_path: Path) -> None:
    """The same thread gets its connection back; another thread gets its own."""
    engine = create_engine(f"sqlite:///{tmp_path / 'threads.db'}")
    connections = ThreadConnections(engine)
    mine = connections.get()
    assert connections.get() is mine
    theirs: list[object] = []
    worker = threading.Thread(target=lambda: theirs.extend([connections.get(), connections.get()]))
    worker.start()
    worker.join()
    assert theirs[0] is theirs[1] and theirs[0] is not mine
    pool = engine.pool
    assert isinstance(pool, QueuePool) and pool.checkedout() == 0  # detached: the pool is free for the rest


def test_close_and_discard_close_connections_and_get_opens_anew(tmp_path: Path) -> None:
    """``close`` closes every thread's connection, ``discard`` this thread's; both reopen on use."""
    store, lc, _ = _lifecycle(tmp_path / "close.db")
    assert store._db.threads is not None
    snap = _active(lc)
    first = store._db.threads.get()
    store.close()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        first.execute("SELECT 1")
    assert lc.kind("booking").accept(snap.id, "t1").snapshot.slots_filled == 1
    second = store._db.threads.get()
    assert second is not first
    store._db.threads.discard()
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        second.execute("SELECT 1")
    assert lc.kind("booking").release(snap.id, "t1").snapshot.slots_filled == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    """A connection must not cross fork: the child opens a new one and can write with it."""
    store, lc, _ = _lifecycle(tmp_path / "fork.db")
    assert store._db.threads is not None
    snap = _active(lc)
    inherited = store._db.threads.get()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        status = 1
        try:
            fresh = store._db.threads.get() is not inherited
            lc.kind("booking").accept(snap.id, "t1")
            status = 0 if fresh else 2
        finally:
            os.write(write_end, bytes([status]))
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        verdict = pipe.read(1)
    os.waitpid(pid, 0)
    assert verdict == b"\x00"
    assert store._db.threads.get() is inherited
    assert lc.kind("booking").get(snap.id).slots_filled == 1



def test_writes_between_commands_hold_no_snapshot_and_no_lock(tmp_path: Path) -> None:
    """Commands that commit, are refused, or fail in a guard leave this thread's connection outside any
    transaction and holding no statement: another connection can write, and checkpoint the WAL to empty."""
    store, lc, _ = _lifecycle(tmp_path / "idle.db")
    assert store._db.threads is not None
    bookings = lc.kind("booking")
    snap = _active(lc)
    bookings.accept(snap.id, "t1")
    with pytest.raises(TransitionRefused):
        bookings.start_trip(snap.id)  # refused under the lock: rolled back

    def broken_guard(_snap: BroadcastSnapshot, _ctx: CommandContext) -> str | None:
        raise RuntimeError("guard bug")

    lc.add_guard(Trigger.ACCEPT, broken_guard)
    with pytest.raises(RuntimeError, match="guard bug"):
        bookings.accept(snap.id, "t2")
    bookings.get(snap.id)
    bookings.history(snap.id)
    assert not store._db.threads.get().in_transaction
    other = sqlite3.connect(tmp_path / "idle.db", isolation_level=None, timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")  # would fail at once ("database is locked") if a write were left open
        other.execute("COMMIT")
        busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0  # no reader's snapshot pins the WAL
    finally:
        other.close()


# -- time as text ---------------------------------------------------------------------------------

_SQLITE = sqlite.dialect()
_GENERIC_BIND = history_table.c.at.type.dialect_impl(_SQLITE).bind_processor(_SQLITE)


@given(st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(timedelta(hours=-8))])))
def test_iso_text_matches_sqlalchemy_storage_format(moment: datetime) -> None:
    """The fast codec writes exactly SQLAlchemy's text for the UTC time, and reads it back."""
    codec = TimeCodec(history_table.c.at, _SQLITE)
    assert _GENERIC_BIND is not None
    stored = codec.bind(moment)
    assert stored == _GENERIC_BIND(moment.astimezone(timezone.utc))
    assert codec.result(stored) == moment and codec.result(stored).tzinfo is timezone.utc  # type: ignore[union-attr]



def test_times_read_back_are_plain_utc_datetimes_whoever_bound_them() -> None:
    """A time's text reads back as a plain aware UTC datetime equal to the one bound, also when this
    process bound it a moment before (and kept the text): a datetime subclass, or a time with fold=1,
    does not come back as itself."""

    class Stamp(datetime):
        pass

    codec = TimeCodec(history_table.c.at, _SQLITE)
    for moment in (Stamp(2026, 12, 1, 21, 0, 0, 5, tzinfo=timezone.utc),
                   datetime(2026, 12, 1, 21, 0, 1, tzinfo=timezone.utc, fold=1),
                   datetime(2026, 12, 1, 21, 0, 2, 7, tzinfo=timezone(timedelta(hours=2)))):
        text = codec.bind(moment)
        for _ in range(2):  # the first read parses the text or finds it kept, the second finds it kept
            read = codec.result(text)
            assert type(read) is datetime and read == moment
            assert read.tzinfo is timezone.utc and read.fold == 0

def test_binding_a_time_again_gives_its_text_whatever_object_or_zone_carries_it() -> None:
    """The codec remembers what it bound by equal instant (a deadline read back is a new, equal datetime): the same
    instant in another zone gets the same text, and another instant never gets a remembered one."""
    codec = TimeCodec(history_table.c.at, _SQLITE)
    at = datetime(2026, 3, 1, 12, 0, 0, 250, tzinfo=timezone.utc)
    deadline = at + timedelta(days=1)
    first = [codec.bind(at), codec.bind(deadline)]
    again = [codec.bind(at.astimezone(timezone(timedelta(hours=-8)))), codec.bind(deadline.replace())]
    assert first == again == ["2026-03-01 12:00:00.000250", "2026-03-02 12:00:00.000250"]
    assert codec.bind(at + timedelta(microseconds=1)) == "2026-03-01 12:00:00.000251"


def test_the_same_wall_time_on_both_sides_of_a_clock_change_binds_two_instants() -> None:
    """01:30 in New York before and after the autumn clock change compare equal (same zone, same wall
    time) but are an hour apart: the codec binds each as its own instant."""
    new_york = ZoneInfo("America/New_York")
    daylight = datetime(2026, 11, 1, 1, 30, tzinfo=new_york)
    standard = daylight.replace(fold=1)
    assert daylight == standard and daylight.utcoffset() != standard.utcoffset()
    for dialect in (_SQLITE, postgresql.psycopg.dialect()):  # type: ignore[no-untyped-call]
        codec = TimeCodec(history_table.c.at, dialect)
        assert codec.bind(daylight) != codec.bind(standard) == TimeCodec(history_table.c.at, dialect).bind(standard)


def test_hand_written_times_with_an_offset_still_read(tmp_path: Path) -> None:
    """A stamp written by other software (ISO with an offset) is read as the right UTC time."""
    store, lc, _ = _lifecycle(tmp_path / "handwritten.db")
    snap = _active(lc)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE bl_broadcasts SET state_changed_at = '2026-01-01T14:00:00+02:00' WHERE id = :id"),
                     {"id": snap.id})
    assert lc.kind("booking").get(snap.id).state_changed_at == datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
