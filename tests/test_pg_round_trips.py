"""PostgreSQL without a host transaction: creation and every transition in one round trip each (no
read first), counted with libpq's protocol trace; a read only where a host guard needs the row; and
the terminal statement's recipients under a concurrent notify_more."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from conftest import ManualClock
from pg_trace import pg_trace, round_trips
from postgres_server import PostgresServer
from sqlalchemy import select
from sqlalchemy.orm import Session
from test_in_place import _wait_for_lock_waiter

from broadcast_lifecycle import (
    BroadcastLifecycle,
    BroadcastStatus,
    DuplicateBroadcast,
    EntityId,
    IdempotencyKeyReused,
    InvalidTransition,
    KindConfig,
    OpenBroadcastExists,
    Topic,
    TransitionRefused,
    Trigger,
    WritePath,
)
from broadcast_lifecycle.stores.schema import outbox_table
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

pytestmark = pytest.mark.postgres

Traced = Callable[[Callable[[], Any]], tuple[int, list[str]]]

_databases = itertools.count(1)


@pytest.fixture
def traced(postgres_server: PostgresServer, clock: ManualClock) -> Iterator[tuple[BroadcastLifecycle, Traced]]:
    """A lifecycle on a one-connection store with no receivers (the events stay in the outbox: no
    mark-delivered write), and a function giving the round trips a call makes and what it sent."""
    url = postgres_server.create_database(f"round_trips_{next(_databases)}")
    store = SQLAlchemyStore.from_url(url, pool_size=1, max_overflow=0)
    kinds = (KindConfig("booking"), KindConfig("order", one_open_per_customer=True))
    store.create_all(kinds)
    lifecycle = BroadcastLifecycle(store, clock=clock, kinds=kinds)
    with store.engine.connect() as conn:
        dbapi = conn.connection.driver_connection

    def trace(call: Callable[[], Any]) -> tuple[int, list[str]]:
        with pg_trace(dbapi) as lines:
            call()
        return round_trips(lines)

    yield lifecycle, trace
    store.close()


def test_create_is_one_statement_without_a_savepoint(traced: tuple[BroadcastLifecycle, Traced]) -> None:
    """create writes the row, its history row, its event and its key in one round trip, no BEGIN or SAVEPOINT."""
    lifecycle, trace = traced
    bookings = lifecycle.kind("booking")
    trips, sent = trace(lambda: bookings.create("c1", slots=2, reason="new"))
    assert (trips, [s.split()[0] for s in sent]) == (1, ["WITH"])
    created = bookings.get(1)
    assert (created.status.value, created.slots_requested, created.version) == ("created", 2, 1)
    (entry,) = bookings.history(1)
    assert (entry.trigger, entry.actor, entry.reason, entry.version) == ("create", "c1", "new", 1)
    assert [(e.event.name, e.event.entity_id, e.event.version) for e in lifecycle.store.pending_events(10)] == [
        ("BROADCAST_STATE_CHANGED", 1, 1)]
    keyed = bookings.create("c2", idempotency_key="k1")
    assert bookings.create("c2", idempotency_key="k1") == dataclasses.replace(keyed, events=(),
                                                                            path=WritePath.REPLAYED)


def test_a_refused_one_statement_create_writes_nothing(traced: tuple[BroadcastLifecycle, Traced]) -> None:
    """A taken id, a second open order and a reused key are refused by the one statement, which writes nothing."""
    lifecycle, _ = traced
    bookings, orders = lifecycle.kind("booking"), lifecycle.kind("order")
    bookings.create("c1", entity_id=7)
    orders.create("c1")
    bookings.create("c2", idempotency_key="k")
    pending = lifecycle.store.pending_events(10)
    with pytest.raises(DuplicateBroadcast):
        bookings.create("c3", entity_id=7)
    with pytest.raises(OpenBroadcastExists):
        orders.create("c1")
    with pytest.raises(IdempotencyKeyReused):
        bookings.create("c4", idempotency_key="k")
    assert lifecycle.store.pending_events(10) == pending
    assert bookings.get(7).customer_id == "c1" and len(bookings.history(7)) == 1


def test_an_automatic_id_after_explicit_ones_moves_the_sequence(traced: tuple[BroadcastLifecycle, Traced]) -> None:
    """After explicit ids 1 and 2, an automatic id skips past them (the statement retries after moving the sequence)."""
    lifecycle, _ = traced
    bookings = lifecycle.kind("booking")
    bookings.create("c1", entity_id=1)
    bookings.create("c1", entity_id=2)
    created = bookings.create("c2")
    assert created.id == 3 and [h.trigger for h in bookings.history(3)] == ["create"]


def _lifecycle_trips(lifecycle: BroadcastLifecycle, trace: Traced) -> dict[str, tuple[int, list[str]]]:
    """The round trips of each command of a whole lifecycle, and of a cancel."""
    bookings = lifecycle.kind("booking")
    entity_id = bookings.create("c1", slots=2).id
    cancelled = bookings.create("c1").id
    return {
        "start_broadcast": trace(lambda: bookings.start_broadcast(entity_id, ["t1", "t2", "t3"])),
        "activate": trace(lambda: bookings.activate(entity_id, ttl=timedelta(minutes=5))),
        "accept": trace(lambda: bookings.accept(entity_id, "t1")),
        "release": trace(lambda: bookings.release(entity_id, "t1")),
        "accept (fills)": trace(lambda: bookings.accept(entity_id, "t2", slots=2)),
        "start_trip": trace(lambda: bookings.start_trip(entity_id)),
        "complete": trace(lambda: bookings.complete(entity_id)),
        "cancel": trace(lambda: bookings.cancel(cancelled)),
    }


def test_transitions_take_one_write_round_trip(traced: tuple[BroadcastLifecycle, Traced],
                                               clock: ManualClock) -> None:
    """Each transition of a whole lifecycle is one write and no read, terminal ones too."""
    lifecycle, trace = traced
    for _ in range(7):  # the driver prepares a statement on its sixth run (a trip of its own): count after that
        trips = _lifecycle_trips(lifecycle, trace)
        clock.advance(timedelta(seconds=1))
    assert {command: count for command, (count, _) in trips.items()} == {
        "start_broadcast": 1, "activate": 1, "accept": 1, "release": 1, "accept (fills)": 1, "start_trip": 1,
        "complete": 1, "cancel": 1}, trips


def test_a_refusal_reads_the_row_after_the_statement(traced: tuple[BroadcastLifecycle, Traced],
                                                    clock: ManualClock) -> None:
    """A command the state refuses costs its statement and one read (no write), and raises InvalidTransition."""
    lifecycle, trace = traced
    bookings = lifecycle.kind("booking")
    refusals: list[Exception] = []

    def complete(entity_id: EntityId) -> None:
        try:
            bookings.complete(entity_id)
        except InvalidTransition as refused:
            refusals.append(refused)

    for _ in range(7):  # past the driver's preparing run, as above
        entity_id = bookings.create("c1").id
        refusals.clear()
        trips, sent = trace(lambda entity_id=entity_id: complete(entity_id))  # type: ignore[misc]
        clock.advance(timedelta(seconds=1))
    assert (trips, len(refusals)) == (2, 1), sent
    assert bookings.get(entity_id).version == 1


def test_a_keyed_command_looks_its_key_up_then_writes(traced: tuple[BroadcastLifecycle, Traced],
                                                      clock: ManualClock) -> None:
    """A keyed cancel costs the key's lookup and its one statement, which records the key too."""
    lifecycle, trace = traced
    bookings = lifecycle.kind("booking")
    for number in range(7):  # past the driver's preparing run, as above
        entity_id = bookings.create("c1").id
        trips, sent = trace(lambda entity_id=entity_id, number=number: bookings.cancel(  # type: ignore[misc]
            entity_id, actor="c1", idempotency_key=f"cancel-{number}"))
        clock.advance(timedelta(seconds=1))
    assert trips == 2, sent
    assert lifecycle.store.recall("cancel-6") is not None


def test_a_host_guard_keeps_the_read(traced: tuple[BroadcastLifecycle, Traced], clock: ManualClock) -> None:
    """A kind with a host guard on cancel reads the row before deciding (two round trips); its other commands
    stay one, and the guard still refuses."""
    lifecycle, trace = traced
    lifecycle.add_guard(Trigger.CANCEL, lambda b, ctx: None if ctx.actor == b.customer_id else "owner only",
                        kind="booking")
    bookings = lifecycle.kind("booking")
    for _ in range(7):  # past the driver's preparing run, as above
        entity_id = bookings.create("c1").id
        broadcast = trace(lambda entity_id=entity_id: bookings.start_broadcast(entity_id, ["t1"]))  # type: ignore[misc]
        with pytest.raises(TransitionRefused, match="owner only"):
            bookings.cancel(entity_id, actor="t1")
        cancel = trace(lambda entity_id=entity_id: bookings.cancel(entity_id, actor="c1"))  # type: ignore[misc]
        clock.advance(timedelta(seconds=1))
    assert (broadcast[0], cancel[0]) == (1, 2), (broadcast, cancel)
    assert bookings.get(entity_id).status is BroadcastStatus.CANCELLED


@pytest.mark.parametrize("function", ["with the everyone function", "without it"])
def test_a_cancel_tells_a_transporter_notified_while_it_waited(postgres_server: PostgresServer, function: str) -> None:
    """notify_more holds the row lock (host transaction) while a cancel's one statement queues on it; once
    notify_more commits, the cancel applies and its cancelled event, as sent and as stored, reaches the new
    transporter too (the recipients are read after the lock is taken). Without the function the cancel
    takes the general path, which lists them under the lock as well."""
    url = postgres_server.create_database(f"cancel_race_{len(function)}")
    store = SQLAlchemyStore.from_url(url)
    store.create_all()
    if function == "without it":
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP FUNCTION bl_everyone_json(text, text, text)")
    clock = ManualClock()
    lifecycle = BroadcastLifecycle(store, clock=clock)
    recorder = EventRecorder()
    lifecycle.bus.connect(recorder)
    bookings = lifecycle.kind("booking")
    entity_id = bookings.create("c1", slots=2).id
    bookings.start_broadcast(entity_id, ["t1", "t2"])
    clock.advance(timedelta(seconds=1))  # recipients are listed by when they were notified
    with Session(store.engine) as session:
        bookings.notify_more(entity_id, ["t-late"], tx=session)  # locks the row until commit
        cancelling = threading.Thread(target=lambda: bookings.cancel(entity_id, reason="plans changed"))
        cancelling.start()
        _wait_for_lock_waiter(url)
        session.commit()
    cancelling.join()
    (cancelled,) = [e for e in recorder.events if e.topic is Topic.CANCELLED]
    assert [r.id for r in cancelled.recipients] == ["c1", "t1", "t2", "t-late"]
    with store.engine.connect() as conn:
        stored = conn.execute(select(outbox_table.c.recipients).where(
            outbox_table.c.event_id == cancelled.event_id)).scalar_one()
    assert [rid for _, rid in stored] == ["c1", "t1", "t2", "t-late"]
    assert bookings.get(entity_id).status is BroadcastStatus.CANCELLED
    store.close()
