"""BroadcastLifecycle on the in-memory store: commands, refusals, argument checks, events and the bus."""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from conftest import START, ManualClock

from broadcast_lifecycle import (
    BroadcastEvent,
    BroadcastLifecycle,
    BroadcastNotFound,
    BroadcastSnapshot,
    BroadcastStatus,
    CommandContext,
    HistoryEntry,
    InMemoryStore,
    InvalidArgument,
    InvalidTransition,
    KindConfig,
    OpenBroadcastExists,
    Recipient,
    RecipientRecord,
    TransitionRefused,
    Trigger,
)
from broadcast_lifecycle.testing import EventRecorder

S = BroadcastStatus
HOUR = timedelta(hours=1)
CUSTOMER = Recipient("customer", "c1")


def open_booking(
    lc: BroadcastLifecycle, slots: int = 3, *, transporters: tuple[str, ...] = ("t1", "t2", "t3"),
    ttl: timedelta = HOUR, customer: str = "c1", kind: str = "booking",
) -> BroadcastSnapshot:
    """Create, broadcast to ``transporters`` and activate a broadcast; returns it active."""
    created = lc.kind(kind).create(customer, slots=slots)
    lc.kind(kind).start_broadcast(created.id, list(transporters))
    return lc.kind(kind).activate(created.id, ttl=ttl).snapshot


@dataclass(frozen=True)
class Seen:
    """Everything observable about one broadcast, to check that a command changed nothing."""

    snapshot: BroadcastSnapshot
    history: tuple[HistoryEntry, ...]
    recipients: tuple[RecipientRecord, ...]
    events: tuple[BroadcastEvent, ...]
    pending: int


def seen(lc: BroadcastLifecycle, recorder: EventRecorder, entity_id: object, kind: str = "booking") -> Seen:
    """What ``lc`` and ``recorder`` show about the broadcast now."""
    assert isinstance(entity_id, (int, str, uuid.UUID))
    return Seen(
        lc.kind(kind).get(entity_id), lc.kind(kind).history(entity_id), lc.kind(kind).recipients(entity_id),
        tuple(recorder.events), len(lc.store.pending_events(10_000)),
    )


def recipients_of(event: BroadcastEvent) -> set[Recipient]:
    """The recipients of an event, as a set."""
    return set(event.recipients)


def everyone(*transporters: str) -> set[Recipient]:
    """The customer c1 and the given transporters."""
    return {CUSTOMER, *(Recipient("transporter", t) for t in transporters)}


# -- the happy path -------------------------------------------------------------------------------


def test_full_lifecycle_records_history_and_events(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder, clock: ManualClock
) -> None:
    """create -> ... -> completed: one history row and one state-changed event per transition, versions 1..n."""
    b = open_booking(lifecycle, slots=2, transporters=("t1", "t2"))
    clock.advance(timedelta(minutes=1))
    lifecycle.kind("booking").accept(b.id, "t1")
    done = lifecycle.kind("booking").accept(b.id, "t2")
    assert (done.status, done.snapshot.slots_filled, done.version) == (S.FULLY_FILLED, 2, 5)
    lifecycle.kind("booking").start_trip(b.id, actor="ops")
    final = lifecycle.kind("booking").complete(b.id)
    history = lifecycle.kind("booking").history(b.id)
    assert [(h.from_status, h.to_status, h.trigger, h.version) for h in history] == [
        (None, S.CREATED, "create", 1),
        (S.CREATED, S.BROADCASTING, "start_broadcast", 2),
        (S.BROADCASTING, S.ACTIVE, "activate", 3),
        (S.ACTIVE, S.PARTIALLY_FILLED, "accept", 4),
        (S.PARTIALLY_FILLED, S.FULLY_FILLED, "accept", 5),
        (S.FULLY_FILLED, S.IN_PROGRESS, "start_trip", 6),
        (S.IN_PROGRESS, S.COMPLETED, "complete", 7),
    ]
    assert [h.actor for h in history][3:6] == ["t1", "t2", "ops"]
    assert final.version == 7 and final.snapshot.state_changed_at == history[-1].at == START + timedelta(minutes=1)
    changed = [e for e in recorder.events if e.name == "BROADCAST_STATE_CHANGED"]
    assert [e.version for e in changed] == list(range(1, 8))
    assert all(recipients_of(e) == {CUSTOMER} for e in changed)
    assert recorder.names().count("BOOKING_FULLY_FILLED") == 1
    assert recorder.names().count("BOOKING_COMPLETED") == 1
    for name in ("BOOKING_FULLY_FILLED", "BOOKING_COMPLETED"):
        (event,) = [e for e in recorder.events if e.name == name]
        assert recipients_of(event) == everyone("t1", "t2")


# -- refusals from the guards -------------------------------------------------------------------------


def refused(call: Callable[[], object]) -> TransitionRefused:
    """Run ``call`` and return the plain TransitionRefused it raises."""
    with pytest.raises(TransitionRefused) as info:
        call()
    assert type(info.value) is TransitionRefused
    return info.value


def test_accept_by_transporter_not_notified_is_refused(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """A transporter never notified cannot accept; the reason names it and nothing changes."""
    b = open_booking(lifecycle)
    before = seen(lifecycle, recorder, b.id)
    error = refused(lambda: lifecycle.kind("booking").accept(b.id, "t9"))
    assert error.reason == "transporter t9 was not notified of this booking"
    assert (error.kind, error.entity_id, error.from_state, error.trigger) == ("booking", b.id, "active", "accept")
    assert seen(lifecycle, recorder, b.id) == before


def test_accept_more_than_open_is_refused(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """Asking for more slots than are open is refused with the numbers, and nothing changes."""
    b = open_booking(lifecycle)
    lifecycle.kind("booking").accept(b.id, "t1", slots=2)
    before = seen(lifecycle, recorder, b.id)
    error = refused(lambda: lifecycle.kind("booking").accept(b.id, "t2", slots=2))
    assert error.reason == "only 1 of 3 slots open, asked for 2"
    assert seen(lifecycle, recorder, b.id) == before


def test_accept_on_full_broadcast_is_invalid(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """Once every slot is filled, another accept is an InvalidTransition from fully_filled."""
    b = open_booking(lifecycle, slots=1)
    lifecycle.kind("booking").accept(b.id, "t1")
    before = seen(lifecycle, recorder, b.id)
    with pytest.raises(InvalidTransition) as info:
        lifecycle.kind("booking").accept(b.id, "t2")
    assert info.value.from_state == "fully_filled"
    assert seen(lifecycle, recorder, b.id) == before


def test_activate_with_past_deadline_is_refused(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder, clock: ManualClock
) -> None:
    """A deadline that is not in the future is refused, naming it; the broadcast stays broadcasting."""
    b = lifecycle.kind("booking").create("c1", slots=1)
    lifecycle.kind("booking").start_broadcast(b.id, ["t1"])
    before = seen(lifecycle, recorder, b.id)
    deadline = START - timedelta(seconds=1)
    error = refused(lambda: lifecycle.kind("booking").activate(b.id, expires_at=deadline))
    assert error.reason == f"deadline {deadline.isoformat()} is not in the future (now {START.isoformat()})"
    assert seen(lifecycle, recorder, b.id) == before


def test_activate_without_any_deadline_is_refused(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """Without ttl, deadline or a default ttl, activate is refused with a hint."""
    b = lifecycle.kind("booking").create("c1", slots=1)
    lifecycle.kind("booking").start_broadcast(b.id, ["t1"])
    before = seen(lifecycle, recorder, b.id)
    error = refused(lambda: lifecycle.kind("booking").activate(b.id))
    assert error.reason.startswith("no deadline") and "ttl=" in error.reason
    assert seen(lifecycle, recorder, b.id) == before


def test_activate_uses_the_kind_default_ttl(clock: ManualClock) -> None:
    """A kind with a default ttl activates without arguments, expiring now + ttl."""
    lc = BroadcastLifecycle(InMemoryStore(), clock=clock, kinds=[KindConfig("booking", default_ttl=2 * HOUR)])
    b = lc.kind("booking").create("c1")
    lc.kind("booking").start_broadcast(b.id, ["t1"])
    assert lc.kind("booking").activate(b.id).snapshot.expires_at == START + 2 * HOUR


def test_release_without_holding_is_refused(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """A notified transporter holding no slot cannot release one: 'holds 0 slots'."""
    b = open_booking(lifecycle)
    lifecycle.kind("booking").accept(b.id, "t1")
    before = seen(lifecycle, recorder, b.id)
    error = refused(lambda: lifecycle.kind("booking").release(b.id, "t2"))
    assert error.reason == "transporter t2 holds 0 slots, asked to release 1"
    error = refused(lambda: lifecycle.kind("booking").release(b.id, "t9"))
    assert error.reason == "transporter t9 was not notified of this booking"
    assert seen(lifecycle, recorder, b.id) == before


def test_partial_trip_refused_unless_kind_allows(clock: ManualClock) -> None:
    """start_trip from partially_filled is refused by default and allowed with allow_partial_trip."""
    lc = BroadcastLifecycle(
        InMemoryStore(), clock=clock,
        kinds=[KindConfig("booking"), KindConfig("order", allow_partial_trip=True)],
    )
    b = open_booking(lc)
    lc.kind("booking").accept(b.id, "t1")
    error = refused(lambda: lc.kind("booking").start_trip(b.id))
    assert error.reason == "1 of 3 slots filled; booking needs every slot filled to start the trip"
    assert lc.kind("booking").get(b.id).status is S.PARTIALLY_FILLED
    o = open_booking(lc, kind="order")
    lc.kind("order").accept(o.id, "t1")
    assert lc.kind("order").start_trip(o.id).status is S.IN_PROGRESS


def test_expire_refusals(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """expire() without a deadline says 'no deadline is set'; before it, 'deadline not passed'."""
    b = lifecycle.kind("booking").create("c1")
    before = seen(lifecycle, recorder, b.id)
    assert refused(lambda: lifecycle.kind("booking").expire(b.id)).reason == "no deadline is set"
    assert seen(lifecycle, recorder, b.id) == before
    a = open_booking(lifecycle)
    reason = refused(lambda: lifecycle.kind("booking").expire(a.id)).reason
    assert reason == f"deadline not passed: expires at {(START + HOUR).isoformat()}"


def test_invalid_transition_fields(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """A trigger the state does not allow raises InvalidTransition, a TransitionRefused with its fields."""
    b = lifecycle.kind("booking").create("c1")
    before = seen(lifecycle, recorder, b.id)
    with pytest.raises(InvalidTransition) as info:
        lifecycle.kind("booking").complete(b.id)
    error = info.value
    assert isinstance(error, TransitionRefused)
    assert (error.kind, error.entity_id, error.from_state, error.trigger) == ("booking", b.id, "created", "complete")
    assert error.allowed_from == ("in_progress",)
    assert "complete is not allowed from created (allowed from: in_progress)" in str(error)
    assert seen(lifecycle, recorder, b.id) == before


# -- bad arguments ------------------------------------------------------------------------------------

BAD_SLOTS: list[object] = [0, -1, True, 2.5, "1", None]
NAIVE = datetime(2026, 1, 1, 13, 0)


@pytest.mark.parametrize("slots", BAD_SLOTS, ids=repr)
def test_create_rejects_bad_slots(lifecycle: BroadcastLifecycle, recorder: EventRecorder, slots: object) -> None:
    """create() with a slot count that is not a whole number >= 1 raises InvalidArgument and creates nothing."""
    with pytest.raises(InvalidArgument):
        lifecycle.kind("booking").create("c1", slots=slots, entity_id="b-1")  # type: ignore[arg-type]
    with pytest.raises(BroadcastNotFound):
        lifecycle.kind("booking").get("b-1")
    assert recorder.events == []


@pytest.mark.parametrize(
    "call",
    [
        lambda lc: lc.kind("booking").create("", slots=1, entity_id="b-1"),
        lambda lc: lc.kind("booking").create("c1", slots=1, entity_id="b-1", expires_at=NAIVE),
        lambda lc: lc.kind("parcel").create("c1", slots=1, entity_id="b-1"),
    ],
    ids=["empty-customer", "naive-expires_at", "unknown-kind"],
)
def test_create_rejects_bad_arguments(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder, call: Callable[[BroadcastLifecycle], object]
) -> None:
    """create() with an empty customer, a naive expires_at or an unknown kind raises InvalidArgument."""
    with pytest.raises(InvalidArgument):
        call(lifecycle)
    with pytest.raises(BroadcastNotFound):
        lifecycle.kind("booking").get("b-1")
    assert recorder.events == []


@pytest.mark.parametrize("slots", BAD_SLOTS, ids=repr)
@pytest.mark.parametrize("command", ["accept", "release"])
def test_accept_and_release_reject_bad_slots(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder, slots: object, command: str
) -> None:
    """accept/release with a bad slot count raise InvalidArgument and change nothing."""
    b = open_booking(lifecycle)
    lifecycle.kind("booking").accept(b.id, "t1")
    before = seen(lifecycle, recorder, b.id)
    with pytest.raises(InvalidArgument):
        getattr(lifecycle.kind("booking"), command)(b.id, "t1", slots=slots)
    assert seen(lifecycle, recorder, b.id) == before


BAD_COMMANDS: list[tuple[str, Callable[[BroadcastLifecycle, object], object]]] = [
    ("accept-empty-transporter", lambda lc, i: lc.kind("booking").accept(i, "")),  # type: ignore[arg-type]
    ("release-empty-transporter", lambda lc, i: lc.kind("booking").release(i, "")),  # type: ignore[arg-type]
    ("accept-unknown-kind", lambda lc, i: lc.kind("parcel").accept(i, "t1")),  # type: ignore[arg-type]
    ("cancel-unknown-kind", lambda lc, i: lc.kind("parcel").cancel(i)),  # type: ignore[arg-type]
    ("activate-naive-deadline", lambda lc, i: lc.kind("booking").activate(i, expires_at=NAIVE)),  # type: ignore[arg-type]
    ("activate-ttl-zero", lambda lc, i: lc.kind("booking").activate(i, ttl=timedelta(0))),  # type: ignore[arg-type]
    ("activate-ttl-negative", lambda lc, i: lc.kind("booking").activate(i, ttl=-HOUR)),  # type: ignore[arg-type]
    (
        "activate-ttl-and-deadline",
        lambda lc, i: lc.kind("booking").activate(i, ttl=HOUR, expires_at=START + HOUR),  # type: ignore[arg-type]
    ),
    ("start-empty-list", lambda lc, i: lc.kind("booking").start_broadcast(i, [])),  # type: ignore[arg-type]
    ("start-str", lambda lc, i: lc.kind("booking").start_broadcast(i, "t1")),  # type: ignore[arg-type]
    ("start-empty-id", lambda lc, i: lc.kind("booking").start_broadcast(i, ["t1", ""])),  # type: ignore[arg-type]
    ("notify-empty-list", lambda lc, i: lc.kind("booking").notify_more(i, [])),  # type: ignore[arg-type]
    ("notify-str", lambda lc, i: lc.kind("booking").notify_more(i, "t4")),  # type: ignore[arg-type]
    ("notify-unknown-kind", lambda lc, i: lc.kind("parcel").notify_more(i, ["t4"])),  # type: ignore[arg-type]
    ("expire-due-naive", lambda lc, i: lc.expire_due(NAIVE)),
    ("expire-due-batch-zero", lambda lc, i: lc.expire_due(batch_size=0)),
]


@pytest.mark.parametrize("stage", ["created", "broadcasting", "partially_filled"])
@pytest.mark.parametrize("call", [call for _, call in BAD_COMMANDS], ids=[name for name, _ in BAD_COMMANDS])
def test_bad_arguments_change_nothing(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder, clock: ManualClock,
    call: Callable[[BroadcastLifecycle, object], object], stage: str,
) -> None:
    """Every bad argument raises InvalidArgument before anything changes, even on an overdue broadcast."""
    b = lifecycle.kind("booking").create("c1", slots=3, expires_at=START + HOUR)
    if stage != "created":
        lifecycle.kind("booking").start_broadcast(b.id, ["t1", "t2"])
    if stage == "partially_filled":
        lifecycle.kind("booking").activate(b.id)
        lifecycle.kind("booking").accept(b.id, "t1")
    clock.advance(2 * HOUR)  # overdue: a command that got past its argument checks would expire it
    before = seen(lifecycle, recorder, b.id)
    with pytest.raises(InvalidArgument):
        call(lifecycle, b.id)
    assert seen(lifecycle, recorder, b.id) == before


@pytest.mark.parametrize(
    "call",
    [
        lambda lc: lc.kind("booking").get(404),
        lambda lc: lc.kind("booking").history(404),
        lambda lc: lc.kind("booking").recipients(404),
        lambda lc: lc.kind("booking").accept(404, "t1"),
        lambda lc: lc.kind("booking").cancel(404),
        lambda lc: lc.kind("booking").start_broadcast(404, ["t1"]),
        lambda lc: lc.kind("booking").notify_more(404, ["t1"]),
        lambda lc: lc.kind("booking").expire(404),
    ],
    ids=["get", "history", "recipients", "accept", "cancel", "start_broadcast", "notify_more", "expire"],
)
def test_unknown_id_is_not_found(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder, call: Callable[[BroadcastLifecycle], object]
) -> None:
    """Any command or query on an id that does not exist raises BroadcastNotFound naming kind and id."""
    lifecycle.kind("booking").create("c1", entity_id=1)
    events = recorder.events
    with pytest.raises(BroadcastNotFound) as info:
        call(lifecycle)
    assert (info.value.kind, info.value.entity_id) == ("booking", 404)
    assert recorder.events == events


def test_same_id_of_other_kind_is_not_found(lifecycle: BroadcastLifecycle) -> None:
    """Ids are per kind: booking 1 does not make order 1 exist."""
    lifecycle.kind("booking").create("c1", entity_id=1)
    with pytest.raises(BroadcastNotFound):
        lifecycle.kind("order").get(1)


# -- overdue broadcasts and expiry ------------------------------------------------------------------


def test_accept_after_deadline_is_refused_and_expires(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder, clock: ManualClock
) -> None:
    """An accept after the deadline is refused 'expired at ...' and the broadcast is expired, with its events."""
    b = open_booking(lifecycle)
    lifecycle.kind("booking").accept(b.id, "t1")
    recorder.clear()
    clock.advance(HOUR)
    error = refused(lambda: lifecycle.kind("booking").accept(b.id, "t2"))
    assert error.reason == f"expired at {(START + HOUR).isoformat()}"
    assert (error.from_state, error.trigger) == ("partially_filled", "accept")
    after = lifecycle.kind("booking").get(b.id)
    assert (after.status, after.slots_filled, after.version) == (S.EXPIRED, 1, b.version + 2)
    last = lifecycle.kind("booking").history(b.id)[-1]
    assert (last.from_status, last.to_status, last.trigger) == (S.PARTIALLY_FILLED, S.EXPIRED, "expire")
    assert (last.actor, last.reason) == ("system", "deadline passed before accept")
    assert last.metadata == {"preempted": {"trigger": "accept", "actor": "t2"}}
    assert all(e.reason == "deadline passed before accept" for e in recorder.events)
    assert recorder.names() == ["BROADCAST_STATE_CHANGED", "BOOKING_EXPIRED"]
    assert recipients_of(recorder.events[0]) == {CUSTOMER}
    assert recipients_of(recorder.events[1]) == everyone("t1", "t2", "t3")
    assert all(e.status is S.EXPIRED and e.previous_status is S.PARTIALLY_FILLED for e in recorder.events)
    assert {r.transporter_id: r.slots_held for r in lifecycle.kind("booking").recipients(b.id)} == {
        "t1": 1, "t2": 0, "t3": 0,
    }


def test_overdue_start_broadcast_notifies_nobody(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder, clock: ManualClock
) -> None:
    """A start_broadcast refused because the broadcast was overdue records no recipients and tells them nothing."""
    b = lifecycle.kind("booking").create("c1", expires_at=START + HOUR)
    clock.advance(2 * HOUR)
    recorder.clear()
    error = refused(lambda: lifecycle.kind("booking").start_broadcast(b.id, ["t1", "t2"]))
    assert error.reason.startswith("expired at")
    assert lifecycle.kind("booking").get(b.id).status is S.EXPIRED
    assert recorder.names() == ["BROADCAST_STATE_CHANGED", "BOOKING_EXPIRED"]
    # nobody was notified before the broadcast expired, so only the customer hears of it
    assert lifecycle.kind("booking").recipients(b.id) == ()
    assert recorder.for_recipient("transporter", "t1") == []
    assert recipients_of(recorder.events[1]) == {CUSTOMER}


def test_expire_due_expires_only_overdue(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder, clock: ManualClock
) -> None:
    """expire_due expires exactly the overdue expirable broadcasts and returns how many."""
    soon = open_booking(lifecycle, ttl=timedelta(minutes=10))
    exact = open_booking(lifecycle, ttl=timedelta(minutes=30))
    later = open_booking(lifecycle, ttl=2 * HOUR)
    no_deadline = lifecycle.kind("booking").create("c1")
    filled = open_booking(lifecycle, slots=1, ttl=timedelta(minutes=5))
    lifecycle.kind("booking").accept(filled.id, "t1")
    created_due = lifecycle.kind("booking").create("c1", expires_at=START + timedelta(minutes=20))
    clock.advance(timedelta(minutes=30))
    assert lifecycle.expire_due() == 3
    status = {b: lifecycle.kind("booking").get(b).status for b in (soon.id, exact.id, later.id, no_deadline.id,
                                                               filled.id, created_due.id)}
    assert status == {
        soon.id: S.EXPIRED, exact.id: S.EXPIRED, later.id: S.ACTIVE, no_deadline.id: S.CREATED,
        filled.id: S.FULLY_FILLED, created_due.id: S.EXPIRED,
    }
    assert recorder.names().count("BOOKING_EXPIRED") == 3
    assert lifecycle.expire_due() == 0
    clock.advance(2 * HOUR)
    assert lifecycle.expire_due() == 1
    assert lifecycle.kind("booking").get(later.id).status is S.EXPIRED


def test_expire_due_in_batches(lifecycle: BroadcastLifecycle, clock: ManualClock) -> None:
    """expire_due keeps fetching batches until every overdue broadcast is expired."""
    ids = [open_booking(lifecycle, slots=1, transporters=("t1",)).id for _ in range(7)]
    clock.advance(2 * HOUR)
    assert lifecycle.expire_due(batch_size=2) == 7
    assert {lifecycle.kind("booking").get(i).status for i in ids} == {S.EXPIRED}


def test_expire_due_with_explicit_now(lifecycle: BroadcastLifecycle, clock: ManualClock) -> None:
    """expire_due(now=t) expires what is overdue at t, and only that."""
    due = open_booking(lifecycle, ttl=HOUR)
    not_due = open_booking(lifecycle, ttl=3 * HOUR)
    assert lifecycle.expire_due(now=START + 2 * HOUR) == 1
    assert lifecycle.kind("booking").get(due.id).status is S.EXPIRED
    assert lifecycle.kind("booking").get(not_due.id).status is S.ACTIVE


def test_sweep_after_clock_went_back_never_moves_time_back(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder, clock: ManualClock
) -> None:
    """A broadcast stamped after the sweep's time waits for a later sweep; a command expires it at once."""
    waiting = lifecycle.kind("booking").create("c1", entity_id="late")
    clock.advance(-HOUR)  # the clock goes back to 11:00; "late" stays stamped 12:00
    lifecycle.kind("booking").start_broadcast("late", ["t1"])
    lifecycle.kind("booking").activate("late", ttl=timedelta(minutes=30))  # deadline 11:30, stamped 12:00
    other = open_booking(lifecycle, ttl=timedelta(minutes=30), transporters=("t2",))
    clock.advance(timedelta(minutes=40))  # 11:40: both are past their deadline
    assert lifecycle.kind("booking").get("late").state_changed_at == START == waiting.snapshot.state_changed_at
    assert lifecycle.expire_due() == 1
    assert lifecycle.kind("booking").get(other.id).status is S.EXPIRED
    assert lifecycle.kind("booking").get("late").status is S.ACTIVE  # documented: stamped after now, it waits
    error = refused(lambda: lifecycle.kind("booking").cancel("late"))
    assert error.reason == f"expired at {(START - timedelta(minutes=30)).isoformat()}"
    expired = lifecycle.kind("booking").get("late")
    assert (expired.status, expired.state_changed_at) == (S.EXPIRED, START)
    times = [h.at for h in lifecycle.kind("booking").history("late")]
    assert times == sorted(times)


def test_create_refuses_a_past_deadline(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """create() with expires_at not in the future is a bad argument and creates nothing."""
    with pytest.raises(InvalidArgument, match="expires_at must be in the future"):
        lifecycle.kind("booking").create("c1", expires_at=START)
    assert recorder.events == []


def test_sweep_never_stamps_before_the_last_change(lifecycle: BroadcastLifecycle, clock: ManualClock) -> None:
    """expire_due(now=...) earlier than a broadcast's last change leaves it for a later sweep."""
    b = lifecycle.kind("booking").create("c1")
    lifecycle.kind("booking").start_broadcast(b.id, ["t1"])
    clock.advance(-timedelta(days=1))  # the clock went back: activation is stamped START, not a day earlier
    lifecycle.kind("booking").activate(b.id, ttl=HOUR)
    clock.advance(timedelta(days=1))
    assert lifecycle.expire_due(START - timedelta(minutes=1)) == 0
    assert lifecycle.kind("booking").get(b.id).status is S.ACTIVE
    assert lifecycle.expire_due() == 1
    after = lifecycle.kind("booking").get(b.id)
    assert (after.status, after.state_changed_at) == (S.EXPIRED, START)


def test_clock_going_backwards_never_moves_state_changed_at_back(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder, clock: ManualClock
) -> None:
    """After the clock jumps back, new transitions keep state_changed_at and history times non-decreasing."""
    b = lifecycle.kind("booking").create("c1", slots=2)
    clock.advance(timedelta(minutes=10))
    lifecycle.kind("booking").start_broadcast(b.id, ["t1", "t2"])
    clock.advance(-timedelta(minutes=30))
    lifecycle.kind("booking").activate(b.id, ttl=HOUR)
    clock.advance(-timedelta(days=1))
    lifecycle.kind("booking").accept(b.id, "t1")
    times = [h.at for h in lifecycle.kind("booking").history(b.id)]
    assert times == sorted(times)
    assert lifecycle.kind("booking").get(b.id).state_changed_at == START + timedelta(minutes=10)
    assert [e.state_changed_at for e in recorder.events] == sorted(e.state_changed_at for e in recorder.events)


# -- host guards -----------------------------------------------------------------------------------


def test_host_guard_refuses_with_its_reason(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """A guard added for accept refuses with its sentence; other transporters pass."""
    busy = {"t2"}

    def free_truck(snap: BroadcastSnapshot, ctx: CommandContext) -> str | None:
        return f"transporter {ctx.transporter_id} has no free truck" if ctx.transporter_id in busy else None

    lifecycle.add_guard(Trigger.ACCEPT, free_truck)
    b = open_booking(lifecycle)
    before = seen(lifecycle, recorder, b.id)
    error = refused(lambda: lifecycle.kind("booking").accept(b.id, "t2"))
    assert error.reason == "transporter t2 has no free truck"
    assert seen(lifecycle, recorder, b.id) == before
    assert lifecycle.kind("booking").accept(b.id, "t1").snapshot.slots_filled == 1
    # the guard is only for accept
    assert lifecycle.kind("booking").cancel(b.id).status is S.CANCELLED


def test_host_guard_on_create_is_not_silently_ignored(clock: ManualClock) -> None:
    """A guard registered for create either refuses the creation or is rejected when registered."""
    lc = BroadcastLifecycle(InMemoryStore(), clock=clock)

    def blocked_customer(snap: BroadcastSnapshot, ctx: CommandContext) -> str | None:
        return f"customer {snap.customer_id} is blocked"

    try:
        lc.add_guard(Trigger.CREATE, blocked_customer)
    except InvalidArgument:
        return
    with pytest.raises(TransitionRefused, match="customer c1 is blocked"):
        lc.kind("booking").create("c1", entity_id="b-1")
    with pytest.raises(BroadcastNotFound):
        lc.kind("booking").get("b-1")


# -- the bus: failures, references, disconnects ---------------------------------------------------------


def test_failing_receiver_does_not_stop_others_and_event_stays_pending(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    """One receiver raising: others still get the event, it is logged, and it stays pending with the error."""

    def broken_socket(event: BroadcastEvent) -> None:
        raise RuntimeError("socket closed")

    lifecycle.bus.connect(broken_socket, event_name="BOOKING_CANCELLED")
    b = open_booking(lifecycle, transporters=("t1",))
    assert lifecycle.store.pending_events(100) == []  # everything before the cancel was delivered
    with caplog.at_level(logging.ERROR):
        lifecycle.kind("booking").cancel(b.id, reason="changed plans")
    assert recorder.names()[-2:] == ["BROADCAST_STATE_CHANGED", "BOOKING_CANCELLED"]
    assert any("broken_socket" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    pending = lifecycle.store.pending_events(100)
    assert [p.event.name for p in pending] == ["BOOKING_CANCELLED"]
    (entry,) = pending
    assert entry.attempts == 1
    assert entry.last_error is not None
    assert "broken_socket" in entry.last_error and "RuntimeError: socket closed" in entry.last_error
    assert entry.event.event_id == recorder.events[-1].event_id


def test_receiver_failing_on_create_keeps_the_broadcast(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder
) -> None:
    """A receiver raising does not undo or fail the committed command."""

    def boom(event: BroadcastEvent) -> None:
        raise ValueError("nope")

    lifecycle.bus.connect(boom)
    b = lifecycle.kind("booking").create("c1")
    assert lifecycle.kind("booking").get(b.id).version == 1
    assert recorder.names() == ["BROADCAST_STATE_CHANGED"]
    assert len(lifecycle.store.pending_events(100)) == 1


def test_closure_receiver_survives_garbage_collection(lifecycle: BroadcastLifecycle) -> None:
    """A closure connected and then dropped by the caller still receives events."""
    got: list[str] = []

    def connect_closure() -> None:
        def on_event(event: BroadcastEvent) -> None:
            got.append(event.name)

        lifecycle.bus.connect(on_event)

    connect_closure()
    gc.collect()
    lifecycle.kind("booking").create("c1")
    assert got == ["BROADCAST_STATE_CHANGED"]


def test_disconnect_stops_delivery(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """The function connect returns disconnects the receiver; other receivers keep receiving."""
    got: list[str] = []
    disconnect = lifecycle.bus.connect(lambda e: got.append(e.name))
    b = lifecycle.kind("booking").create("c1")
    disconnect()
    lifecycle.kind("booking").cancel(b.id)
    assert got == ["BROADCAST_STATE_CHANGED"]
    assert recorder.names() == ["BROADCAST_STATE_CHANGED", "BROADCAST_STATE_CHANGED", "BOOKING_CANCELLED"]


def test_receivers_by_name_and_kind(lifecycle: BroadcastLifecycle) -> None:
    """A receiver connected to one event name and kind gets only those events."""
    got: list[tuple[str, str]] = []
    lifecycle.bus.connect(lambda e: got.append((e.kind, e.name)), event_name="ORDER_CANCELLED", kind="order")
    b = lifecycle.kind("booking").create("c1")
    o = lifecycle.kind("order").create("c1")
    lifecycle.kind("booking").cancel(b.id)
    lifecycle.kind("order").cancel(o.id)
    assert got == [("order", "ORDER_CANCELLED")]


def test_events_dispatched_after_commit(lifecycle: BroadcastLifecycle) -> None:
    """A receiver reading the broadcast while handling an event sees the committed version and status."""
    observed: list[tuple[int, int, S]] = []

    def check(event: BroadcastEvent) -> None:
        assert isinstance(event.entity_id, int)
        now = lifecycle.kind(event.kind).get(event.entity_id)
        observed.append((event.version, now.version, now.status))

    lifecycle.bus.connect(check)
    b = open_booking(lifecycle, slots=1, transporters=("t1",))
    lifecycle.kind("booking").accept(b.id, "t1")
    assert [(v, s) for v, _, s in observed][-2:] == [(4, S.FULLY_FILLED), (4, S.FULLY_FILLED)]
    assert all(event_version == seen_version for event_version, seen_version, _ in observed)
    assert [v for v, _, _ in observed] == [1, 2, 2, 3, 3, 4, 4]  # start_broadcast, activate: state change, offer


# -- payloads ------------------------------------------------------------------------------------------


def test_payload_is_camel_case_with_exact_keys(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder, clock: ManualClock
) -> None:
    """The payload has exactly the documented camelCase keys, an ISO-8601 UTC time and the int id."""
    b = open_booking(lifecycle, slots=2)
    clock.advance(timedelta(minutes=3))
    lifecycle.kind("booking").accept(b.id, "t1")
    payload = recorder.events[-1].payload()
    assert payload == {
        "eventId": recorder.events[-1].event_id,
        "event": "BROADCAST_STATE_CHANGED",
        "kind": "booking",
        "entityId": b.id,
        "bookingId": b.id,
        "status": "partially_filled",
        "previousStatus": "active",
        "stateChangedAt": "2026-01-01T12:03:00+00:00",
        "version": 4,
        "slotsFilled": 1,
        "slotsRequested": 2,
        "expiresAt": "2026-01-01T13:00:00+00:00",
        "trigger": "accept",
        "reason": None,
    }
    assert datetime.fromisoformat(payload["stateChangedAt"]).utcoffset() == timedelta(0)
    first = recorder.events[0].payload()
    assert first["previousStatus"] is None and first["status"] == "created"


def test_order_payload_with_uuid_id(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """An order keyed by a UUID has orderId as a string, and distinct event ids per event."""
    order_id = uuid.uuid4()
    lifecycle.kind("order").create("c1", slots=2, entity_id=order_id)
    lifecycle.kind("order").cancel(order_id)
    payloads = [e.payload() for e in recorder.events]
    assert [dict(p)["orderId"] for p in payloads] == [str(order_id)] * 3  # the kind's id key: not in the TypedDict
    assert all(set(p) == {"orderId", "status", "previousStatus", "stateChangedAt", "version", "eventId", "event",
                          "kind", "entityId", "slotsFilled", "slotsRequested", "expiresAt", "trigger", "reason"}
               for p in payloads)
    assert [p["entityId"] for p in payloads] == [str(order_id)] * 3
    assert len({p["eventId"] for p in payloads}) == 3
    assert all(isinstance(p["eventId"], str) and uuid.UUID(p["eventId"]) for p in payloads)
    assert recorder.names() == ["BROADCAST_STATE_CHANGED", "BROADCAST_STATE_CHANGED", "ORDER_CANCELLED"]


def test_payload_time_is_utc_for_non_utc_clock() -> None:
    """A clock in another timezone still yields stateChangedAt in UTC."""
    tz = timezone(timedelta(hours=5, minutes=30))
    clock = ManualClock(datetime(2026, 1, 1, 17, 30, tzinfo=tz))
    lc = BroadcastLifecycle(InMemoryStore(), clock=clock)
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    lc.kind("booking").create("c1")
    assert recorder.events[0].payload()["stateChangedAt"] == "2026-01-01T12:00:00+00:00"


def test_custom_event_names(clock: ManualClock) -> None:
    """A kind's event_names override wire names; the prefix sets the rest."""
    from broadcast_lifecycle import Topic

    lc = BroadcastLifecycle(InMemoryStore(), clock=clock, kinds=[
        KindConfig("booking", event_prefix="RIDE", event_names={Topic.CANCELLED: "RIDE_CALLED_OFF"}),
    ])
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    b = lc.kind("booking").create("c1")
    lc.kind("booking").cancel(b.id)
    assert recorder.names() == ["BROADCAST_STATE_CHANGED", "BROADCAST_STATE_CHANGED", "RIDE_CALLED_OFF"]


# -- policies, recipients and release ----------------------------------------------------------------------


def test_one_open_broadcast_per_customer(clock: ManualClock) -> None:
    """With one_open_per_customer a second open broadcast is refused until the first is closed."""
    lc = BroadcastLifecycle(InMemoryStore(), clock=clock,
                            kinds=[KindConfig("booking", one_open_per_customer=True), KindConfig("order")])
    first = lc.kind("booking").create("c1")
    with pytest.raises(OpenBroadcastExists) as info:
        lc.kind("booking").create("c1", entity_id="second")
    assert isinstance(info.value, TransitionRefused)
    assert info.value.customer_id == "c1"
    assert "c1" in info.value.reason
    with pytest.raises(BroadcastNotFound):
        lc.kind("booking").get("second")
    lc.kind("booking").create("c2")  # another customer
    lc.kind("order").create("c1")  # another kind
    lc.kind("order").create("c1")  # a kind without the policy
    lc.kind("booking").cancel(first.id)
    assert lc.kind("booking").create("c1").status is S.CREATED


def test_notify_more_adds_recipients_who_get_terminal_events(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder
) -> None:
    """Recipients added while open receive the terminal event; notify_more changes no state and offers the
    broadcast to the new transporters only."""
    b = open_booking(lifecycle, transporters=("t1",))
    events = len(recorder.events)
    after = lifecycle.kind("booking").notify_more(b.id, ["t2", "t1", "t3"])
    assert (after.status, after.version) == (S.ACTIVE, b.version)
    (offer,) = recorder.events[events:]
    assert after.events == (offer,)
    assert (offer.name, offer.version, offer.trigger) == ("BOOKING_OFFERED", b.version, "notify_more")
    assert offer.recipients == (Recipient("transporter", "t2"), Recipient("transporter", "t3"))
    assert [r.transporter_id for r in lifecycle.kind("booking").recipients(b.id)] == ["t1", "t2", "t3"]
    lifecycle.kind("booking").accept(b.id, "t3")  # a newly notified transporter may accept
    lifecycle.kind("booking").cancel(b.id)
    (cancelled,) = [e for e in recorder.events if e.name == "BOOKING_CANCELLED"]
    assert recipients_of(cancelled) == everyone("t1", "t2", "t3")
    assert recorder.for_recipient("transporter", "t4") == []


def test_notify_more_refused_when_closed(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """notify_more on a closed (or not yet broadcasting) broadcast is an InvalidTransition and adds nobody."""
    b = open_booking(lifecycle, slots=1, transporters=("t1",))
    lifecycle.kind("booking").accept(b.id, "t1")
    before = seen(lifecycle, recorder, b.id)
    with pytest.raises(InvalidTransition) as info:
        lifecycle.kind("booking").notify_more(b.id, ["t2"])
    assert (info.value.from_state, info.value.trigger) == ("fully_filled", "notify_more")
    assert seen(lifecycle, recorder, b.id) == before
    c = lifecycle.kind("booking").create("c1")
    with pytest.raises(InvalidTransition):
        lifecycle.kind("booking").notify_more(c.id, ["t2"])
    assert lifecycle.kind("booking").recipients(c.id) == ()
    lifecycle.kind("booking").cancel(c.id)
    with pytest.raises(InvalidTransition):
        lifecycle.kind("booking").notify_more(c.id, ["t2"])


def test_release_paths(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """fully_filled -> partially_filled -> active as slots are released, holdings tracked per transporter."""
    b = open_booking(lifecycle, slots=3)
    lifecycle.kind("booking").accept(b.id, "t1", slots=2)
    full = lifecycle.kind("booking").accept(b.id, "t2")
    assert full.status is S.FULLY_FILLED
    partial = lifecycle.kind("booking").release(b.id, "t1", reason="truck broke down")
    assert (partial.status, partial.snapshot.slots_filled) == (S.PARTIALLY_FILLED, 2)
    assert lifecycle.kind("booking").history(b.id)[-1].reason == "truck broke down"
    lifecycle.kind("booking").release(b.id, "t1")
    active = lifecycle.kind("booking").release(b.id, "t2")
    assert (active.status, active.snapshot.slots_filled) == (S.ACTIVE, 0)
    assert {r.transporter_id: r.slots_held for r in lifecycle.kind("booking").recipients(b.id)} == {
        "t1": 0, "t2": 0, "t3": 0,
    }
    assert [e.status for e in recorder.events if e.name == "BROADCAST_STATE_CHANGED"][-3:] == [
        S.PARTIALLY_FILLED, S.PARTIALLY_FILLED, S.ACTIVE,
    ]
    # after a release the freed slot can be taken again
    assert lifecycle.kind("booking").accept(b.id, "t3", slots=3).status is S.FULLY_FILLED


def test_no_event_reaches_transporters_outside_the_broadcast(
    lifecycle: BroadcastLifecycle, recorder: EventRecorder
) -> None:
    """Transporters of one broadcast hear nothing of another, and state changes go only to the customer."""
    a = open_booking(lifecycle, slots=1, transporters=("t1",))
    open_booking(lifecycle, slots=1, transporters=("t2",), customer="c2")
    lifecycle.kind("booking").accept(a.id, "t1")
    assert all(e.entity_id == a.id for e in recorder.for_recipient("transporter", "t1"))
    assert all(e.entity_id != a.id for e in recorder.for_recipient("transporter", "t2"))
    assert all(
        {r.role for r in e.recipients} == {"customer"} for e in recorder.events if e.name == "BROADCAST_STATE_CHANGED"
    )


def test_in_memory_store_refuses_a_host_transaction(lifecycle: BroadcastLifecycle) -> None:
    """Passing tx= to the in-memory store is an InvalidArgument, not a silent non-transaction."""
    with pytest.raises(InvalidArgument):
        lifecycle.kind("booking").create("c1", tx=object())  # type: ignore[arg-type]
