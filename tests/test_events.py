"""Events as a host's socket layer uses them: offers to newly notified transporters, the trigger, the reason
and the deadline in every payload, per-recipient payloads that name nobody, on every store."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from conftest import ManualClock
from sqlalchemy.orm import Session

from broadcast_lifecycle import (
    BroadcastEvent,
    BroadcastLifecycle,
    BroadcastStatus,
    InMemoryStore,
    InvalidArgument,
    InvalidTransition,
    KindConfig,
    Recipient,
    Topic,
    TransitionRefused,
)
from broadcast_lifecycle.events import Addressed, EventPayload
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

Make = Callable[[ManualClock], BroadcastLifecycle]
_databases = iter(range(1, 1_000_000))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    """Builds lifecycles on one store: the in-memory store, a SQLite file, or a database on the suite's PostgreSQL."""
    stores: list[SQLAlchemyStore] = []
    url = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.db'}"
    elif request.param == "postgres":
        url = request.getfixturevalue("postgres_server").create_database(f"events_{next(_databases)}")
    memory = InMemoryStore()

    def build(clock: ManualClock) -> BroadcastLifecycle:
        if url is None:
            return BroadcastLifecycle(memory, clock=clock)
        store = SQLAlchemyStore.from_url(url)
        store.create_all()
        stores.append(store)
        return BroadcastLifecycle(store, clock=clock)

    yield build
    for store in stores:
        store.close()


def _scenario(lc: BroadcastLifecycle, clock: ManualClock) -> None:
    """Every kind of event: offers, fills, a release with a reason, a cancel with a reason, a trip, an expiry by
    the sweeper and one that pre-empted a late accept."""
    full = lc.kind("booking").create("customer-ann", slots=2).id
    lc.kind("booking").start_broadcast(full, ["truck-amy", "truck-bob"])
    lc.kind("booking").activate(full, ttl=timedelta(hours=1))
    lc.kind("booking").notify_more(full, ["truck-bob", "truck-cid"])
    lc.kind("booking").accept(full, "truck-amy")
    lc.kind("booking").accept(full, "truck-cid")
    lc.kind("booking").release(full, "truck-cid", reason="engine trouble")
    lc.kind("booking").accept(full, "truck-bob")
    lc.kind("booking").start_trip(full)
    lc.kind("booking").complete(full)
    cancelled = lc.kind("order").create("customer-ann", slots=3).id
    lc.kind("order").start_broadcast(cancelled, ["truck-amy", "truck-dan"])
    lc.kind("order").cancel(cancelled, reason="found a cheaper option")
    expiring = lc.kind("booking").create("customer-ann").id
    lc.kind("booking").start_broadcast(expiring, ["truck-eve"])
    lc.kind("booking").activate(expiring, ttl=timedelta(minutes=5))
    late = lc.kind("booking").create("customer-ann").id
    lc.kind("booking").start_broadcast(late, ["truck-eve", "truck-dan"])
    lc.kind("booking").activate(late, ttl=timedelta(minutes=5))
    clock.advance(timedelta(minutes=6))
    with pytest.raises(TransitionRefused, match="expired at"):
        lc.kind("booking").accept(late, "truck-dan")  # expires it: that expiry's reason must not name truck-dan
    lc.expire_due()


_PEOPLE = ("customer-ann", "truck-amy", "truck-bob", "truck-cid", "truck-dan", "truck-eve")


def _recorded(lc: BroadcastLifecycle, clock: ManualClock) -> list[BroadcastEvent]:
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    _scenario(lc, clock)
    return recorder.events


# -- the payload ---------------------------------------------------------------------------------------------


def test_payload_has_the_typed_keys_and_the_kind_id_and_is_plain_json() -> None:
    """Every payload has exactly EventPayload's keys plus the kind's id field, and json.dumps takes it as it is."""
    events = _recorded(BroadcastLifecycle(clock=(clock := ManualClock())), clock)
    assert {e.name for e in events} >= {"BOOKING_OFFERED", "ORDER_OFFERED", "BOOKING_FULLY_FILLED",
                                        "BOOKING_COMPLETED", "ORDER_CANCELLED", "BOOKING_EXPIRED"}
    for event in events:
        payload = event.payload()
        assert set(payload) == set(EventPayload.__annotations__) | {event.id_field}
        assert (payload["event"], payload["kind"], payload["trigger"]) == (event.name, event.kind, event.trigger)
        assert dict(payload)[event.id_field] == payload["entityId"] == event.entity_id
        assert json.loads(json.dumps(payload)) == payload


def test_events_carry_trigger_reason_and_deadline(make: Make) -> None:
    """A cancel's and a release's reason, the sweep's reason, each trigger and the deadline reach the payloads."""
    clock = ManualClock()
    events = _recorded(make(clock), clock)
    by_name = {(e.name, e.trigger): e.payload() for e in events}
    assert by_name[("ORDER_CANCELLED", "cancel")]["reason"] == "found a cheaper option"
    assert sorted(e.reason or "" for e in events if e.name == "BOOKING_EXPIRED") == [
        "deadline passed", "deadline passed before accept"]
    released = [e for e in events if e.trigger == "release"]
    assert [(e.name, e.reason, [r.id for r in e.recipients]) for e in released] == [
        ("BROADCAST_STATE_CHANGED", "engine trouble", ["customer-ann"]),
        ("BOOKING_OFFERED", "engine trouble", ["truck-bob", "truck-cid"]),  # truck-amy still holds its slot
    ]
    assert [e.trigger for e in events if e.kind == "order"] == ["create", "start_broadcast", "start_broadcast",
                                                                 "cancel", "cancel"]
    fully_filled = by_name[("BOOKING_FULLY_FILLED", "accept")]
    assert fully_filled["expiresAt"] == "2026-01-01T13:00:00+00:00"
    assert by_name[("BROADCAST_STATE_CHANGED", "create")]["reason"] is None


def test_no_payload_names_a_person(make: Make) -> None:
    """No recipient's payload names a transporter or the customer: not itself, not anyone else."""
    clock = ManualClock()
    for event in _recorded(make(clock), clock):
        for copy in event.addressed():
            text = json.dumps(copy.payload)
            assert [person for person in _PEOPLE if person in text] == [], event.name


def test_addressed_gives_each_recipient_its_own_copy() -> None:
    """addressed() pairs each recipient, in order, with a payload of its own: changing one changes no other."""
    lc = BroadcastLifecycle(clock=ManualClock())
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    entity_id = lc.kind("booking").create("c1").id
    lc.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
    lc.kind("booking").cancel(entity_id, reason="no longer needed")
    cancelled = recorder.events[-1]
    copies = cancelled.addressed()
    assert [c.recipient for c in copies] == [Recipient("customer", "c1"), Recipient("transporter", "t1"),
                                             Recipient("transporter", "t2")]
    assert all(c.payload == cancelled.payload() for c in copies)
    copies[1].payload["reason"] = "edited by one socket handler"
    assert copies[2].payload["reason"] == "no longer needed"
    with pytest.raises(dataclasses.FrozenInstanceError):
        copies[0].recipient = Recipient("customer", "someone else")  # type: ignore[misc]
    assert Addressed(recipient=copies[0].recipient, payload=copies[0].payload) == copies[0]


def test_the_event_itself_is_not_the_wire_format() -> None:
    """The event is the bus's envelope: serialised whole (dataclasses.asdict) it lists every recipient, which
    is why hosts send addressed() payloads (docs/events.md); it is frozen, slotted and keyword-only."""
    lc = BroadcastLifecycle(clock=ManualClock())
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    entity_id = lc.kind("booking").create("c1").id
    lc.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
    lc.kind("booking").cancel(entity_id)
    cancelled = recorder.events[-1]
    assert dataclasses.asdict(cancelled)["recipients"] == (("customer", "c1"), ("transporter", "t1"),
                                                           ("transporter", "t2"))
    assert "recipients" not in cancelled.payload() and "t1" not in json.dumps(cancelled.payload())
    positional: list[Any] = [getattr(cancelled, f.name) for f in dataclasses.fields(cancelled)]
    with pytest.raises(TypeError, match="positional"):
        BroadcastEvent(*positional)  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cancelled.reason = "changed"  # type: ignore[misc]
    assert not hasattr(cancelled, "__dict__")


def test_offer_names_follow_the_kind() -> None:
    """OFFERED is {PREFIX}_OFFERED unless the kind names it; an id field that shadows a payload key is refused."""
    lc = BroadcastLifecycle(clock=ManualClock(), kinds=[
        KindConfig("booking", event_prefix="RIDE"),
        KindConfig("order", event_names={Topic.OFFERED: "NEW_JOB"}),
    ])
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    lc.kind("booking").start_broadcast(lc.kind("booking").create("c1").id, ["t1"])
    lc.kind("order").start_broadcast(lc.kind("order").create("c1").id, ["t1"])
    assert [e.name for e in recorder.events if e.topic is Topic.OFFERED] == ["RIDE_OFFERED", "NEW_JOB"]
    with pytest.raises(InvalidArgument, match="id_field of parcel must not be a payload key, got 'status'"):
        KindConfig("parcel", id_field="status")


# -- offers, on every store ---------------------------------------------------------------------------------


def test_offers_wait_in_the_outbox_and_reach_exactly_the_new_transporters(make: Make) -> None:
    """Written with nobody listening, the offers of start_broadcast, activate and notify_more stay pending; a relay
    delivers each to exactly the transporters that command added, at the broadcast's version and deadline."""
    clock = ManualClock()
    writer = make(clock)
    entity_id = writer.kind("booking").create("c1", slots=2).id
    writer.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
    active = writer.kind("booking").activate(entity_id, ttl=timedelta(hours=1))
    writer.kind("booking").notify_more(entity_id, ["t2", "t3", "t1", "t4"])
    writer.kind("booking").notify_more(entity_id, ["t4", "t1"])  # nobody new: no offer
    assert len(writer.store.pending_events(100)) == 6

    relay_side = make(clock)
    recorder = EventRecorder()
    relay_side.bus.connect(recorder)
    clock.advance(timedelta(minutes=1))
    assert relay_side.relay().relay_once().delivered == 6
    offers = sorted((e for e in recorder.events if e.topic is Topic.OFFERED), key=lambda e: (e.version, e.trigger))
    assert [(e.trigger, e.version, e.status, e.previous_status, e.recipients) for e in offers] == [
        ("start_broadcast", 2, BroadcastStatus.BROADCASTING, BroadcastStatus.CREATED,
         (Recipient("transporter", "t1"), Recipient("transporter", "t2"))),
        ("activate", 3, BroadcastStatus.ACTIVE, BroadcastStatus.BROADCASTING,
         (Recipient("transporter", "t1"), Recipient("transporter", "t2"))),
        ("notify_more", 3, BroadcastStatus.ACTIVE, BroadcastStatus.ACTIVE,
         (Recipient("transporter", "t3"), Recipient("transporter", "t4"))),
    ]
    assert offers[0].expires_at is None
    assert offers[1].expires_at == offers[2].expires_at == active.snapshot.expires_at
    assert relay_side.store.pending_events(100) == []


def test_notify_more_on_a_closed_broadcast_offers_nothing(make: Make) -> None:
    """notify_more on a filled broadcast raises InvalidTransition and writes neither a recipient nor an offer."""
    clock = ManualClock()
    lc = make(clock)
    entity_id = lc.kind("booking").create("c1").id
    lc.kind("booking").start_broadcast(entity_id, ["t1"])
    lc.kind("booking").activate(entity_id, ttl=timedelta(hours=1))
    lc.kind("booking").accept(entity_id, "t1")
    pending = len(lc.store.pending_events(100))
    with pytest.raises(InvalidTransition, match="notify_more"):
        lc.kind("booking").notify_more(entity_id, ["t2"])
    assert len(lc.store.pending_events(100)) == pending
    assert [r.transporter_id for r in lc.kind("booking").recipients(entity_id)] == ["t1"]


def test_a_transporters_actionable_offers_follow_from_its_events_alone(make: Make) -> None:
    """Offers add a broadcast to a transporter's list and closing events remove it: what is left is exactly the
    open broadcasts it was notified of, each with the deadline as it stands now (activation and a release that
    opens a full broadcast again offer it again; see docs/events.md)."""
    clock = ManualClock()
    lc = make(clock)
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    _scenario(lc, clock)
    still_open = lc.kind("booking").create("customer-ann", slots=2).id
    lc.kind("booking").start_broadcast(still_open, ["truck-amy"])
    deadline = lc.kind("booking").activate(still_open, ttl=timedelta(hours=2)).snapshot.expires_at
    lc.kind("booking").notify_more(still_open, ["truck-bob"])
    lc.kind("booking").accept(still_open, "truck-bob")

    lists: dict[str, dict[tuple[str, str | int], str | None]] = {}
    for transporter in _PEOPLE[1:]:
        actionable = lists.setdefault(transporter, {})
        for event in recorder.for_recipient("transporter", transporter):
            (payload,) = [c.payload for c in event.addressed() if c.recipient.id == transporter]
            key = (payload["kind"], payload["entityId"])
            if payload["event"].endswith("_OFFERED"):
                actionable[key] = payload["expiresAt"]
            elif payload["status"] in ("fully_filled", "in_progress", "completed", "cancelled", "expired"):
                actionable.pop(key, None)
    assert deadline is not None
    assert lists == {"truck-amy": {("booking", still_open): deadline.isoformat()},
                     "truck-bob": {("booking", still_open): deadline.isoformat()},
                     "truck-cid": {}, "truck-dan": {}, "truck-eve": {}}
    open_for = {r.transporter_id for r in lc.kind("booking").recipients(still_open)}
    assert lc.kind("booking").get(still_open).status is BroadcastStatus.PARTIALLY_FILLED
    assert {t for t, actionable in lists.items() if actionable} == open_for


def test_a_trip_started_partially_filled_closes_the_offer_for_those_holding_no_slot() -> None:
    """With allow_partial_trip, start_trip from partially_filled closes the broadcast: a notified transporter holding
    no slot hears an event that takes it off its list of offers, as a fill, cancel or expiry does."""
    lc = BroadcastLifecycle(InMemoryStore(), kinds=[KindConfig("booking", allow_partial_trip=True)])
    bookings = lc.kind("booking")
    entity_id = bookings.create("c1", slots=2).id
    bookings.start_broadcast(entity_id, ["t1", "t2"])
    bookings.activate(entity_id, ttl=timedelta(hours=1))
    bookings.accept(entity_id, "t1")
    started = bookings.start_trip(entity_id)
    assert started.snapshot.status is BroadcastStatus.IN_PROGRESS
    assert [(e.name, e.recipients) for e in started.events] == [
        ("BROADCAST_STATE_CHANGED", (Recipient("customer", "c1"),)),
        ("BOOKING_CLOSED",
         (Recipient("customer", "c1"), Recipient("transporter", "t1"), Recipient("transporter", "t2"))),
    ]
    full = bookings.create("c2", slots=1).id
    bookings.start_broadcast(full, ["t1"])
    bookings.activate(full, ttl=timedelta(hours=1))
    bookings.accept(full, "t1")
    assert [e.name for e in bookings.start_trip(full).events] == ["BROADCAST_STATE_CHANGED"], (
        "a full broadcast's transporters heard it close at FULLY_FILLED already")


# -- with a host session, and racing a terminal transition (SQL stores) ----------------------------------------


def test_an_offer_joined_to_a_host_session_leaves_only_after_its_commit(database_url: str) -> None:
    """notify_more(tx=session): the offer is sent when the session commits, and never if it rolls back."""
    store = SQLAlchemyStore.from_url(database_url)
    store.create_all()
    lc = BroadcastLifecycle(store, clock=ManualClock())
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    entity_id = lc.kind("booking").create("c1").id
    lc.kind("booking").start_broadcast(entity_id, ["t1"])
    sent = len(recorder.events)
    with Session(store.engine) as session:
        lc.kind("booking").notify_more(entity_id, ["t2"], tx=session)
        assert len(recorder.events) == sent
        session.rollback()
    assert len(recorder.events) == sent and store.pending_events(100) == []
    with Session(store.engine) as session:
        lc.kind("booking").notify_more(entity_id, ["t3"], tx=session)
        assert len(recorder.events) == sent
        session.commit()
    (offer,) = recorder.events[sent:]
    assert (offer.name, offer.recipients) == ("BOOKING_OFFERED", (Recipient("transporter", "t3"),))
    assert [r.transporter_id for r in lc.kind("booking").recipients(entity_id)] == ["t1", "t3"]
    store.close()


def test_notify_more_racing_cancel_offers_only_what_the_cancel_announces(database_url: str) -> None:
    """notify_more and cancel started together: either notify_more wins, offers the broadcast and the cancel
    event names the new transporter, or it sees the broadcast cancelled and writes no offer (20 rounds)."""
    store = SQLAlchemyStore.from_url(database_url)
    store.create_all()
    lc = BroadcastLifecycle(store, clock=ManualClock())
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    for n in range(20):  # measured: notify_more wins 8-13 of 20 rounds
        entity_id = lc.kind("booking").create(f"c{n}").id
        lc.kind("booking").start_broadcast(entity_id, ["t1"])
        late = Recipient("transporter", f"late-{n}")
        widened = _race(partial(lc.kind("booking").notify_more, entity_id, [late.id]),
                        partial(lc.kind("booking").cancel, entity_id))
        mine = [e for e in recorder.events if e.entity_id == entity_id]
        offered = [e for e in mine if e.topic is Topic.OFFERED and late in e.recipients]
        (terminal,) = [e for e in mine if e.topic is Topic.CANCELLED]
        if widened:
            assert len(offered) == 1 and offered[0].version == 2 and late in terminal.recipients
        else:
            assert offered == [] and late not in terminal.recipients
    store.close()


def _race(widen: Callable[[], object], close: Callable[[], object]) -> bool:
    """Run ``widen`` and ``close`` in two threads started at a barrier; True unless ``widen`` was refused
    as an invalid transition."""
    barrier = threading.Barrier(2)
    refused: list[InvalidTransition] = []

    def run_widen() -> None:
        barrier.wait()
        try:
            widen()
        except InvalidTransition as exc:
            refused.append(exc)

    def run_close() -> None:
        barrier.wait()
        close()

    threads = [threading.Thread(target=run_widen), threading.Thread(target=run_close)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return not refused
