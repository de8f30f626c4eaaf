"""SQLAlchemyStore on real SQLite and PostgreSQL: host models, id types, corrupt rows, host transactions."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from conftest import ManualClock
from sqlalchemy import Engine, String, Uuid, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from broadcast_lifecycle import (
    BroadcastLifecycle,
    BroadcastStatus,
    CorruptState,
    StoreError,
    TransitionRefused,
    Trigger,
)
from broadcast_lifecycle.stores.schema import BroadcastMixin
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder


class Base(DeclarativeBase):
    """The host application's declarative base."""


class Booking(Base, BroadcastMixin):
    """A host model with an integer key and a column of its own."""

    __tablename__ = "bookings"
    id: Mapped[int] = mapped_column(primary_key=True)
    pickup: Mapped[str] = mapped_column(String(100), default="depot")


class Order(Base, BroadcastMixin):
    """A host model with a UUID key."""

    __tablename__ = "orders"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)


class Shipment(Base, BroadcastMixin):
    """A host model with a string key."""

    __tablename__ = "shipments"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)


class AuditNote(Base):
    """A host table written in the same transaction as a transition."""

    __tablename__ = "audit_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    note: Mapped[str] = mapped_column(String(200))


def _setup(url: str) -> tuple[Engine, BroadcastLifecycle, EventRecorder, ManualClock]:
    engine = create_engine(url)
    store = SQLAlchemyStore(engine, models={"booking": Booking, "order": Order, "shipment": Shipment})
    Base.metadata.create_all(engine)
    store.create_all()
    clock = ManualClock()
    from broadcast_lifecycle import DEFAULT_KINDS, KindConfig

    lc = BroadcastLifecycle(store, clock=clock, kinds=(*DEFAULT_KINDS, KindConfig("shipment")))
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    return engine, lc, recorder, clock


@pytest.mark.parametrize(("kind", "entity_id"), [
    ("booking", 7), ("order", uuid.UUID("5f0c6a3e-4b8f-4c1e-9d7a-2b1e0c9f8a77")), ("shipment", "SHP-0001"),
])
def test_host_models_with_every_key_type(database_url: str, kind: str, entity_id: Any) -> None:
    """int, UUID and str keys all carry a broadcast through its lifecycle, with history and events."""
    engine, lc, recorder, clock = _setup(database_url)
    lc.kind(kind).create("c1", slots=2, entity_id=entity_id)
    lc.kind(kind).start_broadcast(entity_id, ["t1", "t2"])
    lc.kind(kind).activate(entity_id, ttl=timedelta(minutes=10))
    lc.kind(kind).accept(entity_id, "t1")
    clock.advance(timedelta(seconds=1))
    snap = lc.kind(kind).accept(entity_id, "t2")
    assert (snap.id, snap.status, snap.version) == (entity_id, BroadcastStatus.FULLY_FILLED, 5)
    assert [h.version for h in lc.kind(kind).history(entity_id)] == [1, 2, 3, 4, 5]
    assert recorder.names()[-1] == f"{kind.upper()}_FULLY_FILLED"
    payload = recorder.events[-1].payload()
    wire_id = str(entity_id) if isinstance(entity_id, uuid.UUID) else entity_id
    assert (payload["entityId"], dict(payload)[f"{kind}Id"]) == (wire_id, wire_id)
    model: Any = {"booking": Booking, "order": Order, "shipment": Shipment}[kind]
    with Session(engine) as session:
        row = session.get(model, entity_id)
        assert row is not None
        assert (row.status, row.slots_filled, row.version) == ("fully_filled", 2, 5)
        assert row.state_changed_at.replace(tzinfo=clock.now.tzinfo) == clock.now


def test_store_picks_ids_and_host_columns_get_defaults(database_url: str) -> None:
    """Without an explicit id the database assigns one; the host's own columns take their defaults."""
    engine, lc, _, _ = _setup(database_url)
    first, second = lc.kind("booking").create("c1"), lc.kind("booking").create("c2")
    assert isinstance(first.id, int) and second.id != first.id
    with Session(engine) as session:
        booking = session.get(Booking, first.id)
        assert booking is not None and booking.pickup == "depot"


def test_corrupt_status_names_table_id_and_value(database_url: str) -> None:
    """A status that is not a known state is reported as CorruptState, not a crash."""
    engine, lc, _, _ = _setup(database_url)
    snap = lc.kind("booking").create("c1")
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA ignore_check_constraints = ON")
        else:
            conn.exec_driver_sql("ALTER TABLE bookings DROP CONSTRAINT ck_bookings_status")
        conn.execute(text("UPDATE bookings SET status = 'teleported' WHERE id = :id"), {"id": snap.id})
    with pytest.raises(CorruptState) as info:
        lc.kind("booking").accept(snap.id, "t1")
    assert (info.value.table, info.value.entity_id, info.value.value) == ("bookings", snap.id, "teleported")
    assert "teleported" in str(info.value) and "partially_filled" in str(info.value)


def test_check_constraint_rejects_unknown_status(database_url: str) -> None:
    """The database itself refuses a status outside the known states."""
    engine, lc, _, _ = _setup(database_url)
    snap = lc.kind("booking").create("c1")
    with pytest.raises(Exception, match=r"(?i)check"), engine.begin() as conn:
        conn.execute(text("UPDATE bookings SET status = 'bogus' WHERE id = :id"), {"id": snap.id})


def test_database_errors_are_wrapped(database_url: str) -> None:
    """A failing database comes out as StoreError with the driver's error chained."""
    engine, lc, _, _ = _setup(database_url)
    snap = lc.kind("booking").create("c1")
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE bl_transition_history")
    with pytest.raises(StoreError) as info:
        lc.kind("booking").start_broadcast(snap.id, ["t1"])
    assert info.value.__cause__ is not None
    assert lc.kind("booking").get(snap.id).status is BroadcastStatus.CREATED


def test_host_transaction_commit_emits_after_commit(database_url: str) -> None:
    """Inside a host session, the transition and the host's rows commit together; events leave after."""
    engine, lc, recorder, _ = _setup(database_url)
    snap = lc.kind("booking").create("c1")
    lc.kind("booking").start_broadcast(snap.id, ["t1"])
    before = len(recorder.events)
    with Session(engine) as session:
        session.add(AuditNote(note="customer called to cancel"))
        lc.kind("booking").cancel(snap.id, actor="c1", tx=session)
        assert len(recorder.events) == before, "events left before the host committed"
        assert lc.kind("booking").get(snap.id, tx=session).status is BroadcastStatus.CANCELLED
        session.commit()
    assert recorder.names()[before:] == ["BROADCAST_STATE_CHANGED", "BOOKING_CANCELLED"]
    assert lc.kind("booking").get(snap.id).status is BroadcastStatus.CANCELLED
    assert lc.store.pending_events(10) == []
    with Session(engine) as session:
        assert session.query(AuditNote).count() == 1


def test_host_transaction_rollback_leaves_nothing(database_url: str) -> None:
    """A host session that rolls back leaves neither its rows nor the transition, and emits nothing."""
    engine, lc, recorder, _ = _setup(database_url)
    snap = lc.kind("booking").create("c1")
    lc.kind("booking").start_broadcast(snap.id, ["t1"])
    before = len(recorder.events)
    with Session(engine) as session:
        session.add(AuditNote(note="will vanish"))
        lc.kind("booking").cancel(snap.id, tx=session)
        session.rollback()
    assert len(recorder.events) == before
    after = lc.kind("booking").get(snap.id)
    assert (after.status, after.version) == (BroadcastStatus.BROADCASTING, 2)
    assert len(lc.kind("booking").history(snap.id)) == 2
    assert lc.store.pending_events(10) == []
    with Session(engine) as session:
        assert session.query(AuditNote).count() == 0
        # the session is reusable, and a later commit does not replay the rolled-back events
        session.add(AuditNote(note="kept"))
        session.commit()
    assert len(recorder.events) == before


def test_accept_paths_write_the_same_records(database_url: str) -> None:
    """Accepts and releases taken in place (PostgreSQL) and through load-decide-write leave identical records."""
    _, lc, recorder, clock = _setup(database_url)
    slow = BroadcastLifecycle(lc.store, clock=clock)
    slow.add_guard(Trigger.ACCEPT, lambda snapshot, ctx: None)  # any host guard forces the general path
    slow.bus.connect(recorder)
    records = []
    for lifecycle in (lc, slow):
        entity_id = lifecycle.kind("booking").create("c1", slots=3).id
        lifecycle.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
        lifecycle.kind("booking").activate(entity_id, ttl=timedelta(minutes=10))
        recorder.clear()
        clock.advance(timedelta(seconds=1))
        first = lifecycle.kind("booking").accept(entity_id, "t1")
        lifecycle.kind("booking").accept(entity_id, "t2", slots=2)
        lifecycle.kind("booking").release(entity_id, "t2")
        lifecycle.kind("booking").release(entity_id, "t2")
        second = lifecycle.kind("booking").release(entity_id, "t1")
        history = [(h.from_status, h.to_status, h.trigger, h.actor, h.version, h.at == clock.now)
                   for h in lifecycle.kind("booking").history(entity_id)[-5:]]
        deadline = lifecycle.kind("booking").get(entity_id).expires_at
        events = [{k: v for k, v in e.payload().items()
                   if k not in ("eventId", "bookingId", "entityId", "stateChangedAt", "expiresAt")}
                  | {"to": e.recipients, "at_now": e.state_changed_at == clock.now,
                     "deadline": e.expires_at == deadline}
                  for e in recorder.events]
        holdings = {r.transporter_id: (r.slots_held, r.response)
                    for r in lifecycle.kind("booking").recipients(entity_id)}
        records.append((first.status, second.snapshot.slots_filled, second.version, history, events, holdings))
    assert records[0] == records[1]
    assert [h[:2] for h in records[0][3]] == [
        (BroadcastStatus.ACTIVE, BroadcastStatus.PARTIALLY_FILLED),
        (BroadcastStatus.PARTIALLY_FILLED, BroadcastStatus.FULLY_FILLED),
        (BroadcastStatus.FULLY_FILLED, BroadcastStatus.PARTIALLY_FILLED),
        (BroadcastStatus.PARTIALLY_FILLED, BroadcastStatus.PARTIALLY_FILLED),
        (BroadcastStatus.PARTIALLY_FILLED, BroadcastStatus.ACTIVE),
    ]
    assert records[0][1:3] == (0, 8)


def test_overdue_accept_still_expires_on_the_spot(database_url: str) -> None:
    """An accept after the deadline is refused with 'expired at' and expires the broadcast, whatever the path."""
    _, lc, recorder, clock = _setup(database_url)
    entity_id = lc.kind("booking").create("c1", slots=3).id
    lc.kind("booking").start_broadcast(entity_id, ["t1"])
    lc.kind("booking").activate(entity_id, ttl=timedelta(minutes=10))
    clock.advance(timedelta(minutes=11))
    with pytest.raises(TransitionRefused, match="expired at"):
        lc.kind("booking").accept(entity_id, "t1")
    assert lc.kind("booking").get(entity_id).status is BroadcastStatus.EXPIRED
    assert recorder.names()[-1] == "BOOKING_EXPIRED"


def test_create_all_on_an_older_database_names_the_missing_columns_and_the_migration(database_url: str) -> None:
    """create_all() on a database whose library table lacks columns (an older schema) refuses, naming the table,
    the columns and the migration to run, instead of leaving every later write to fail."""
    store = SQLAlchemyStore.from_url(database_url)
    store.create_all()
    with store.engine.begin() as conn:
        conn.execute(text("ALTER TABLE bl_outbox DROP COLUMN reason"))
        conn.execute(text("ALTER TABLE bl_outbox DROP COLUMN expires_at"))
    with pytest.raises(StoreError, match=r"table bl_outbox lacks columns expires_at, reason: the database predates "
                                         r"the library's schema.*Run migration 0002_broadcast_lifecycle"):
        store.create_all()
    store.close()
