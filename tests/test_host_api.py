"""What a host wires: kind handles, actors, host guards, command results, on every store."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from conftest import ManualClock
from sqlalchemy import create_engine, event

from broadcast_lifecycle import (
    BroadcastLifecycle,
    BroadcastSnapshot,
    CommandContext,
    InMemoryStore,
    InvalidArgument,
    TransitionRefused,
    Trigger,
    WritePath,
)
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

Counter = Callable[[], int]


def owner_only(broadcast: BroadcastSnapshot, ctx: CommandContext) -> str | None:
    """Only the customer who owns the broadcast may cancel it."""
    if ctx.actor != broadcast.customer_id:
        return f"only customer {broadcast.customer_id} may cancel this {broadcast.kind}"
    return None


class _CountingStore(InMemoryStore):
    """The in-memory store, counting the reads and writes a command makes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def load(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super().load(*args, **kwargs)

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super().apply(*args, **kwargs)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def counted(request: pytest.FixtureRequest, clock: ManualClock,
            tmp_path: Any) -> Iterator[tuple[BroadcastLifecycle, Counter]]:
    """A lifecycle on each store, and a function returning how many statements (or store calls) ran."""
    if request.param == "memory":
        counting = _CountingStore()
        yield BroadcastLifecycle(counting, clock=clock), lambda: counting.calls
        return
    statements: list[str] = []
    if request.param == "sqlite":
        engine = create_engine(f"sqlite:///{tmp_path / 'count.db'}")

        @event.listens_for(engine, "connect")
        def trace(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
            dbapi_connection.set_trace_callback(statements.append)
    else:
        import psycopg

        url = request.getfixturevalue("postgres_server").create_database(f"count_{id(statements)}")
        engine = create_engine(url)

        class CountingCursor(psycopg.Cursor[Any]):
            def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
                statements.append(str(query))
                return super().execute(query, params, **kwargs)

        @event.listens_for(engine, "connect")
        def count(dbapi_connection: psycopg.Connection[Any], _record: Any) -> None:
            dbapi_connection.cursor_factory = CountingCursor

    store = SQLAlchemyStore(engine)
    store.create_all()
    yield BroadcastLifecycle(store, clock=clock), lambda: len(statements)
    store.close()
    engine.dispose()


def _open(lc: BroadcastLifecycle, customer: str) -> BroadcastSnapshot:
    bookings = lc.kind("booking")
    created = bookings.create(customer, slots=2)
    bookings.start_broadcast(created.id, ["t1", "t2"], actor="dispatcher")
    return bookings.activate(created.id, ttl=timedelta(minutes=5), actor="dispatcher").snapshot


def test_owner_guard_refuses_another_customer_with_no_extra_query(
        counted: tuple[BroadcastLifecycle, Counter]) -> None:
    """A guard on the actor and the loaded broadcast refuses c2's cancel of c1's booking, costing no query
    beyond the read of the row it judges (none where the command reads it anyway; one on PostgreSQL,
    whose unguarded cancel is a single statement that never reads the row first)."""
    lc, statements = counted
    bookings = lc.kind("booking")
    unguarded = [_open(lc, "c1").id, _open(lc, "c1").id]
    guarded = [_open(lc, "c1").id, _open(lc, "c1").id]

    def cost(call: Callable[[], object]) -> int:
        before = statements()
        with contextlib.suppress(TransitionRefused):
            call()
        return statements() - before

    bookings.cancel(_open(lc, "c1").id, actor="c1")  # a store asks once for what its database has (a function)
    plain_cost = cost(lambda: bookings.cancel(unguarded[0], actor="c1"))
    assert plain_cost > 0
    bookings.add_guard(Trigger.CANCEL, owner_only)
    with pytest.raises(TransitionRefused) as refused:
        bookings.cancel(guarded[0], actor="c2", reason="not mine")
    assert refused.value.reason == "only customer c1 may cancel this booking"
    assert (refused.value.trigger, refused.value.from_state, refused.value.entity_id) == ("cancel", "active",
                                                                                          guarded[0])
    assert bookings.get(guarded[0]).status.value == "active" and len(bookings.history(guarded[0])) == 3
    reads = 1 if isinstance(lc.store, SQLAlchemyStore) and lc.store.engine.dialect.name == "postgresql" else 0
    assert cost(lambda: bookings.cancel(guarded[1], actor="c1")) == plain_cost + reads
    assert cost(lambda: bookings.cancel(unguarded[1], actor="c2")) <= plain_cost


def test_notified_transporter_guard_sees_holding_and_actor() -> None:
    """A host guard gets the actor, the transporter and its holding (None when never notified)."""
    lc = BroadcastLifecycle()
    seen: list[tuple[str | None, str | None, int | None]] = []

    def record(_broadcast: BroadcastSnapshot, ctx: CommandContext) -> str | None:
        seen.append((ctx.actor, ctx.transporter_id, ctx.holding))
        return None

    lc.add_guard(Trigger.ACCEPT, record, kind="booking")
    booking = _open(lc, "c1")
    lc.kind("booking").accept(booking.id, "t1")
    lc.kind("booking").accept(booking.id, "t2", actor="ops-desk")
    assert seen == [("t1", "t1", 0), ("ops-desk", "t2", 0)]


def test_kind_guard_applies_to_its_kind_only() -> None:
    """A guard added on the order handle leaves bookings alone."""
    lc = BroadcastLifecycle()
    lc.kind("order").add_guard(Trigger.CANCEL, owner_only)
    booking = _open(lc, "c1")
    assert lc.kind("booking").cancel(booking.id, actor="c2").status.value == "cancelled"
    order = lc.kind("order").create("c1").id
    with pytest.raises(TransitionRefused, match="only customer c1 may cancel this order"):
        lc.kind("order").cancel(order, actor="c2")


def test_unknown_kind_fails_when_resolved() -> None:
    """Resolving an unknown kind raises InvalidArgument at once, naming the known ones."""
    lc = BroadcastLifecycle()
    with pytest.raises(InvalidArgument, match=r"unknown kind 'bokking'; known kinds: booking, order"):
        lc.kind("bokking")
    with pytest.raises(InvalidArgument, match="unknown kind"):
        lc.add_guard(Trigger.CANCEL, owner_only, kind="parcel")
    assert lc.kind("booking") is lc.kind("booking")


def test_every_command_records_its_actor(clock: ManualClock) -> None:
    """Each history row names who acted; accept defaults to the transporter, expiry to system."""
    lc = BroadcastLifecycle(clock=clock)
    bookings = lc.kind("booking")
    booking = _open(lc, "c1")
    bookings.accept(booking.id, "t1")
    bookings.release(booking.id, "t1", reason="truck broke down")
    clock.advance(timedelta(minutes=6))
    lc.expire_due()
    history = bookings.history(booking.id)
    assert [(h.trigger, h.actor, h.reason) for h in history] == [
        ("create", "c1", None), ("start_broadcast", "dispatcher", None), ("activate", "dispatcher", None),
        ("accept", "t1", None), ("release", "t1", "truck broke down"), ("expire", "system", "deadline passed"),
    ]


def test_command_result_reports_events_and_path(recorder: EventRecorder) -> None:
    """A result carries the committed snapshot, exactly the events dispatched, and its write path."""
    lc = BroadcastLifecycle()
    lc.bus.connect(recorder)
    bookings = lc.kind("booking")
    created = bookings.create("c1", slots=1)
    assert (created.path, created.replayed, created.version) == (WritePath.INSERT, False, 1)
    booking = _open(lc, "c2")
    recorder.clear()
    filled = bookings.accept(booking.id, "t1", slots=2)
    assert filled.events == tuple(recorder.events)
    assert [e.name for e in filled.events] == ["BROADCAST_STATE_CHANGED", "BOOKING_FULLY_FILLED"]
    assert filled.path is WritePath.GENERAL and filled.snapshot == bookings.get(booking.id)
    notified = bookings.notify_more(_open(lc, "c3").id, ["t9"])
    assert notified.path is WritePath.RECIPIENTS


def test_lifecycle_refuses_an_object_that_is_not_a_store() -> None:
    """Building a lifecycle on something lacking store methods names exactly the missing ones."""

    class HalfStore(InMemoryStore):
        claim_events = None  # type: ignore[assignment]
        dead_letters = None  # type: ignore[assignment]

    missing = r"HalfStore is not a BroadcastStore: it lacks claim_events, dead_letters"
    with pytest.raises(InvalidArgument, match=missing):
        BroadcastLifecycle(HalfStore())  # type: ignore[arg-type]


@pytest.mark.parametrize("returned", [False, True, "", 0])
def test_a_guard_returning_no_reason_is_a_clear_error(returned: object) -> None:
    """A guard written as a predicate (or with an empty reason) is named in an InvalidArgument; nothing changes."""
    lc = BroadcastLifecycle()
    bookings = lc.kind("booking")
    created = bookings.create("c1")

    def is_owner(_broadcast: BroadcastSnapshot, _ctx: CommandContext) -> Any:
        return returned

    bookings.add_guard(Trigger.CANCEL, is_owner)
    with pytest.raises(InvalidArgument, match=r"guard .*is_owner returned .*: a guard returns None to allow"):
        bookings.cancel(created.id, actor="c1")
    assert bookings.get(created.id).version == 1
