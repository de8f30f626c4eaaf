"""Commands joined to the host's Session: its loaded instances stay current, and rows it inserts are adopted."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta, timezone
from typing import Any

import pytest
from conftest import ManualClock
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from broadcast_lifecycle import (
    BroadcastLifecycle,
    BroadcastMixin,
    BroadcastNotFound,
    BroadcastStatus,
    EntityId,
    IdempotencyKeyReused,
    InvalidArgument,
    SQLAlchemyStore,
    WritePath,
)
from broadcast_lifecycle.testing import EventRecorder


class Base(DeclarativeBase):
    """The host's declarative base."""


class Booking(Base, BroadcastMixin):
    """A host model with columns of its own."""

    __tablename__ = "host_bookings"
    id: Mapped[int] = mapped_column(primary_key=True)
    pickup: Mapped[str] = mapped_column(String(100))
    vehicle_type: Mapped[str] = mapped_column(String(20))


@pytest.fixture
def host(database_url: str, clock: ManualClock) -> Iterator[tuple[BroadcastLifecycle, Session, EventRecorder]]:
    """A lifecycle on the host's model, a host session on the same engine, and a recorder."""
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    store = SQLAlchemyStore(engine, models={"booking": Booking})
    store.create_all()
    lifecycle = BroadcastLifecycle(store, clock=clock)
    recorder = EventRecorder()
    lifecycle.bus.connect(recorder)
    with Session(engine, expire_on_commit=False) as session:
        yield lifecycle, session, recorder
    store.close()
    engine.dispose()


def test_loaded_instance_is_current_after_a_joined_command(
        host: tuple[BroadcastLifecycle, Session, EventRecorder]) -> None:
    """After accept joined to the session, the host's loaded Booking shows the new state with nothing to flush."""
    lifecycle, session, _ = host
    bookings = lifecycle.kind("booking")
    session.add(Booking(id=1, customer_id="c1", slots_requested=2, pickup="Dock 1", vehicle_type="van"))
    created = bookings.adopt(1, tx=session)
    session.commit()
    bookings.start_broadcast(created.id, ["t1", "t2"])
    bookings.activate(created.id, ttl=timedelta(minutes=5))
    booking = session.get(Booking, created.id)
    assert booking is not None and booking.status == "active"
    loaded_tz = booking.state_changed_at.tzinfo  # what this database's loads give (SQLite: naive UTC)
    result = bookings.accept(created.id, "t1", tx=session)
    assert (booking.status, booking.slots_filled, booking.version) == ("partially_filled", 1, 4)
    assert (booking.state_changed_at.tzinfo is None) == (loaded_tz is None)
    assert booking.state_changed_at.replace(tzinfo=booking.state_changed_at.tzinfo or timezone.utc) == (
        result.snapshot.state_changed_at)
    assert not session.dirty
    session.commit()
    assert bookings.get(created.id).slots_filled == 1


def test_adopt_records_a_row_the_host_inserted(host: tuple[BroadcastLifecycle, Session, EventRecorder]) -> None:
    """A Booking added by the host with its own columns is adopted: history row, event after commit, key replay."""
    lifecycle, session, recorder = host
    bookings = lifecycle.kind("booking")
    booking = Booking(id=7, customer_id="c1", slots_requested=2, pickup="Dock 4", vehicle_type="van")
    session.add(booking)
    adopted = bookings.adopt(7, tx=session, idempotency_key="c1:adopt-7")
    assert (adopted.path, adopted.status, adopted.version) == (WritePath.ADOPT, BroadcastStatus.CREATED, 1)
    assert recorder.events == []  # not committed yet
    session.commit()
    assert recorder.names() == ["BROADCAST_STATE_CHANGED"]
    assert [(h.trigger, h.actor) for h in bookings.history(7)] == [("create", "c1")]
    again = bookings.adopt(7, idempotency_key="c1:adopt-7")
    assert (again.replayed, again.snapshot) == (True, adopted.snapshot)
    bookings.start_broadcast(7, ["t1"])
    assert session.get(Booking, 7) is booking and booking.pickup == "Dock 4"


def test_adopt_refuses_rows_that_are_not_new(host: tuple[BroadcastLifecycle, Session, EventRecorder]) -> None:
    """Adopting twice, or a row past created, is InvalidArgument; another actor's key is refused."""
    lifecycle, session, _ = host
    bookings = lifecycle.kind("booking")
    session.add(Booking(id=8, customer_id="c1", slots_requested=1, pickup="A", vehicle_type="truck"))
    bookings.adopt(8, tx=session, idempotency_key="k8")
    session.commit()
    with pytest.raises(InvalidArgument, match="cannot be adopted: it is created at version 1 with history"):
        bookings.adopt(8, tx=session)
    session.rollback()
    with pytest.raises(IdempotencyKeyReused, match="another actor"):
        bookings.adopt(8, actor="c2", idempotency_key="k8")
    assert len(bookings.history(8)) == 1


def test_rolled_back_adoption_leaves_nothing(host: tuple[BroadcastLifecycle, Session, EventRecorder]) -> None:
    """When the host's transaction rolls back, neither its row nor the creation's records or event remain."""
    lifecycle, session, recorder = host
    session.add(Booking(id=9, customer_id="c1", slots_requested=1, pickup="A", vehicle_type="truck"))
    lifecycle.kind("booking").adopt(9, tx=session)
    session.rollback()
    assert recorder.events == []
    assert lifecycle.store.pending_events(10) == []
    assert session.get(Booking, 9) is None


def test_in_memory_store_cannot_adopt() -> None:
    """adopt() on a store without the capability says which stores have it."""
    with pytest.raises(InvalidArgument, match="cannot adopt rows the host inserted"):
        BroadcastLifecycle().kind("booking").adopt(1)


class _RaceLosingStore(SQLAlchemyStore):
    """Misses a recorded key once, as a request does that races the first one to the key."""

    blind = True

    def recall(self, key: str, tx: object = None) -> Any:
        if self.blind:
            self.blind = False
            return None
        return super().recall(key, tx)


@pytest.fixture
def racing(database_url: str, clock: ManualClock) -> Iterator[tuple[BroadcastLifecycle, _RaceLosingStore, Session]]:
    """A lifecycle on a store that loses the race to a key once, and a host session."""
    engine = create_engine(database_url)
    Base.metadata.create_all(engine)
    store = _RaceLosingStore(engine, models={"booking": Booking})
    store.create_all()
    with Session(engine, expire_on_commit=False) as session:
        yield BroadcastLifecycle(store, clock=clock), store, session
    store.close()
    engine.dispose()


def test_keyed_create_that_loses_the_race_in_a_host_session_leaves_nothing(
        racing: tuple[BroadcastLifecycle, _RaceLosingStore, Session]) -> None:
    """A keyed create that finds its key taken only at its write is replayed; the host commits no second row."""
    lifecycle, store, session = racing
    orders = lifecycle.kind("order")
    store.blind = False
    first = orders.create("c1", slots=2, idempotency_key="c1:k")
    store.blind = True
    again = orders.create("c1", slots=2, idempotency_key="c1:k", tx=session)
    assert (again.replayed, again.snapshot) == (True, first.snapshot)
    session.commit()
    assert first.id == 1
    with pytest.raises(BroadcastNotFound):
        orders.get(2)
    assert [h.trigger for h in orders.history(first.id)] == ["create"]


def test_keyed_transition_that_loses_the_race_in_a_host_session_is_undone(
        racing: tuple[BroadcastLifecycle, _RaceLosingStore, Session]) -> None:
    """A keyed accept whose key turns out taken at the write leaves no change in the host's transaction,
    which stays usable; the first outcome is replayed."""
    lifecycle, store, session = racing
    bookings = lifecycle.kind("booking")
    store.blind = False
    ids: list[EntityId] = []
    for booking_id in (1, 2):
        session.add(Booking(id=booking_id, customer_id="c1", slots_requested=2, pickup="A", vehicle_type="van"))
        ids.append(bookings.adopt(booking_id, tx=session).id)
    session.commit()
    for entity_id in ids:
        bookings.start_broadcast(entity_id, ["t1"], actor="ops")
        bookings.activate(entity_id, ttl=timedelta(minutes=5), actor="ops")
    first = bookings.accept(ids[0], "t1", idempotency_key="t1:k")
    store.blind = True
    with pytest.raises(IdempotencyKeyReused):
        bookings.accept(ids[1], "t1", idempotency_key="t1:k", tx=session)
    session.add(Booking(id=3, customer_id="c2", slots_requested=1, pickup="B", vehicle_type="van"))
    session.commit()  # the host's own work still commits
    assert bookings.get(ids[1]).slots_filled == 0 and len(bookings.history(ids[1])) == 3
    assert session.get(Booking, 3) is not None
    assert bookings.get(ids[0]) == first.snapshot


def test_create_fills_the_hosts_own_columns_and_replays_a_keyed_retry(
        host: tuple[BroadcastLifecycle, Session, EventRecorder]) -> None:
    """create(columns=) writes the host's required columns in the one INSERT; a retried keyed create replays."""
    lifecycle, session, _ = host
    bookings = lifecycle.kind("booking")
    first = bookings.create("c1", slots=2, columns={"pickup": "Dock 4", "vehicle_type": "van"},
                            idempotency_key="c1:req-1")
    again = bookings.create("c1", slots=2, columns={"pickup": "Dock 4", "vehicle_type": "van"},
                            idempotency_key="c1:req-1")
    assert (again.replayed, again.id) == (True, first.id)
    booking = session.get(Booking, first.id)
    assert booking is not None and (booking.pickup, booking.vehicle_type, booking.status) == ("Dock 4", "van",
                                                                                            "created")
    with pytest.raises(IdempotencyKeyReused, match="different arguments"):
        bookings.create("c1", slots=2, columns={"pickup": "Dock 5", "vehicle_type": "van"},
                        idempotency_key="c1:req-1")


def test_create_refuses_columns_that_are_not_the_hosts(host: tuple[BroadcastLifecycle, Session, EventRecorder]) -> None:
    """columns= naming a lifecycle column, an unknown column, or a kind without a host model is InvalidArgument."""
    lifecycle, _, _ = host
    with pytest.raises(InvalidArgument, match=r"names status, wheels, which are not columns of host_bookings"):
        lifecycle.kind("booking").create("c1", columns={"status": "active", "wheels": 6, "pickup": "A"})
    with pytest.raises(InvalidArgument, match="columns= needs a host model for kind 'order'"):
        lifecycle.kind("order").create("c1", columns={"pickup": "A"})
    with pytest.raises(InvalidArgument, match="InMemoryStore keeps no columns of yours"):
        BroadcastLifecycle().kind("booking").create("c1", columns={"pickup": "A"})
