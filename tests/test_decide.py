"""decide(): the pure decision, its refusal reasons and its overdue rule."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from broadcast_lifecycle import (
    BroadcastSnapshot,
    BroadcastStatus,
    CommandContext,
    InvalidTransition,
    Topic,
    TransitionRefused,
    Trigger,
)
from broadcast_lifecycle.decision import decide

S = BroadcastStatus
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
LATER = NOW + timedelta(hours=1)


def snap(
    status: S = S.ACTIVE,
    requested: int = 3,
    filled: int = 0,
    expires_at: datetime | None = LATER,
    kind: str = "booking",
    entity_id: int | str = 7,
) -> BroadcastSnapshot:
    """A committed broadcast at version 4."""
    return BroadcastSnapshot(
        kind=kind, id=entity_id, customer_id="c1", status=status, slots_requested=requested,
        slots_filled=filled, version=4, state_changed_at=NOW - timedelta(minutes=5),
        created_at=NOW - timedelta(hours=1), expires_at=expires_at,
    )


def ctx(
    *,
    slots: int = 1,
    transporter_id: str = "t1",
    holding: int | None = 0,
    deadline: datetime | None = None,
    allow_partial_trip: bool = False,
) -> CommandContext:
    """A context at NOW; by default from transporter t1, who was notified and holds nothing."""
    return CommandContext(NOW, slots, transporter_id, holding, deadline, allow_partial_trip)


def refusal(snapshot: BroadcastSnapshot, trigger: Trigger, context: CommandContext) -> TransitionRefused:
    """The TransitionRefused (and not InvalidTransition) that decide raises."""
    with pytest.raises(TransitionRefused) as info:
        decide(snapshot, trigger, context)
    assert type(info.value) is TransitionRefused
    assert info.value.from_state == snapshot.status.value
    assert info.value.trigger == trigger.value
    assert info.value.kind == snapshot.kind
    assert info.value.entity_id == snapshot.id
    assert info.value.reason in str(info.value)
    return info.value


# -- accept -----------------------------------------------------------------------------------


def test_accept_partial_then_full() -> None:
    """Accepting fewer than the open slots gives partially_filled; the last slot gives fully_filled."""
    d = decide(snap(requested=3, filled=0), Trigger.ACCEPT, ctx(slots=2))
    assert (d.from_status, d.to_status, d.fill_delta) == (S.ACTIVE, S.PARTIALLY_FILLED, 2)
    assert d.topics == (Topic.STATE_CHANGED,)
    assert d.superseded is None
    d = decide(snap(S.PARTIALLY_FILLED, requested=3, filled=2), Trigger.ACCEPT, ctx(slots=1))
    assert (d.to_status, d.fill_delta) == (S.FULLY_FILLED, 1)
    assert d.topics == (Topic.STATE_CHANGED, Topic.FULLY_FILLED)


def test_accept_all_slots_at_once_fills() -> None:
    """Taking every slot from active goes straight to fully_filled."""
    d = decide(snap(requested=3), Trigger.ACCEPT, ctx(slots=3))
    assert (d.to_status, d.fill_delta) == (S.FULLY_FILLED, 3)


def test_accept_refused_when_all_slots_filled() -> None:
    """A snapshot with every slot taken refuses with 'N of N slots already filled'."""
    error = refusal(snap(S.PARTIALLY_FILLED, requested=3, filled=3), Trigger.ACCEPT, ctx())
    assert error.reason == "3 of 3 slots already filled"


def test_accept_refused_when_asking_more_than_open() -> None:
    """Asking for more slots than are open names the open, requested and asked numbers."""
    error = refusal(snap(S.PARTIALLY_FILLED, requested=3, filled=2), Trigger.ACCEPT, ctx(slots=2))
    assert error.reason == "only 1 of 3 slots open, asked for 2"


def test_accept_refused_for_transporter_not_notified() -> None:
    """A transporter who was not notified is refused by id and kind."""
    error = refusal(snap(kind="order"), Trigger.ACCEPT, ctx(transporter_id="t9", holding=None))
    assert error.reason == "transporter t9 was not notified of this order"


def test_not_notified_is_checked_before_slots() -> None:
    """With both guards failing, the notification reason wins (table order)."""
    error = refusal(snap(filled=3, requested=3), Trigger.ACCEPT, ctx(transporter_id="t9", holding=None))
    assert "t9 was not notified" in error.reason


# -- release ----------------------------------------------------------------------------------


def test_release_to_partial_and_to_active() -> None:
    """Releasing some slots gives partially_filled; releasing the last filled slot gives active."""
    d = decide(snap(S.FULLY_FILLED, requested=3, filled=3), Trigger.RELEASE, ctx(holding=2, slots=2))
    assert (d.to_status, d.fill_delta) == (S.PARTIALLY_FILLED, -2)
    d = decide(snap(S.PARTIALLY_FILLED, requested=3, filled=1), Trigger.RELEASE, ctx(holding=1))
    assert (d.to_status, d.fill_delta) == (S.ACTIVE, -1)


def test_release_from_full_reoffers_and_from_partial_does_not() -> None:
    """A release that opens a full broadcast again announces the offer again; one from partially_filled
    (still open) announces only the state change."""
    d = decide(snap(S.FULLY_FILLED, requested=3, filled=3), Trigger.RELEASE, ctx(holding=3, slots=3))
    assert (d.to_status, d.topics) == (S.ACTIVE, (Topic.STATE_CHANGED, Topic.OFFERED))
    d = decide(snap(S.PARTIALLY_FILLED, requested=3, filled=2), Trigger.RELEASE, ctx(holding=2))
    assert (d.to_status, d.topics) == (S.PARTIALLY_FILLED, (Topic.STATE_CHANGED,))


def test_release_from_full_after_the_deadline_reoffers_nothing() -> None:
    """A full broadcast does not expire, but once a release opens it past its deadline it is due to expire: the
    release announces the state change only, no offer nobody could take."""
    d = decide(snap(S.FULLY_FILLED, requested=3, filled=3, expires_at=NOW), Trigger.RELEASE, ctx(holding=1))
    assert (d.to_status, d.topics) == (S.PARTIALLY_FILLED, (Topic.STATE_CHANGED,))


def test_release_refused_when_holding_nothing() -> None:
    """A notified transporter holding 0 slots cannot release one."""
    error = refusal(snap(S.PARTIALLY_FILLED, filled=1), Trigger.RELEASE, ctx(holding=0))
    assert error.reason == "transporter t1 holds 0 slots, asked to release 1"


def test_release_refused_when_asking_more_than_held() -> None:
    """Releasing more slots than held names both numbers."""
    error = refusal(snap(S.FULLY_FILLED, requested=3, filled=3), Trigger.RELEASE, ctx(holding=1, slots=2))
    assert error.reason == "transporter t1 holds 1 slot, asked to release 2"


def test_release_refused_for_transporter_not_notified() -> None:
    """Release by a transporter never notified is refused with the notification reason."""
    error = refusal(snap(S.PARTIALLY_FILLED, filled=1), Trigger.RELEASE, ctx(transporter_id="t9", holding=None))
    assert error.reason == "transporter t9 was not notified of this booking"


# -- activate ---------------------------------------------------------------------------------


def test_activate_sets_the_deadline() -> None:
    """Activate moves to active and carries the context's deadline as the new expires_at."""
    deadline = NOW + timedelta(minutes=10)
    d = decide(snap(S.BROADCASTING, expires_at=None), Trigger.ACTIVATE, ctx(deadline=deadline))
    assert (d.to_status, d.expires_at, d.fill_delta) == (S.ACTIVE, deadline, 0)
    assert d.topics == (Topic.STATE_CHANGED, Topic.OFFERED)  # the notified transporters learn the deadline


@pytest.mark.parametrize("offset", [timedelta(0), -timedelta(seconds=1)], ids=["now", "past"])
def test_activate_refused_for_deadline_not_in_future(offset: timedelta) -> None:
    """A deadline at or before now is refused, naming the deadline and now."""
    deadline = NOW + offset
    error = refusal(snap(S.BROADCASTING, expires_at=None), Trigger.ACTIVATE, ctx(deadline=deadline))
    assert error.reason == f"deadline {deadline.isoformat()} is not in the future (now {NOW.isoformat()})"


def test_activate_refused_without_deadline() -> None:
    """No deadline at all is refused with a hint about ttl and the kind's default."""
    error = refusal(snap(S.BROADCASTING, expires_at=None), Trigger.ACTIVATE, ctx(deadline=None))
    assert error.reason.startswith("no deadline")
    assert "ttl=" in error.reason and "booking" in error.reason


# -- start_trip, complete, cancel ---------------------------------------------------------------


def test_start_trip_refused_from_partial_by_default() -> None:
    """A partially filled broadcast cannot start its trip unless the kind allows it."""
    error = refusal(snap(S.PARTIALLY_FILLED, requested=3, filled=1), Trigger.START_TRIP, ctx())
    assert error.reason == "1 of 3 slots filled; booking needs every slot filled to start the trip"
    d = decide(snap(S.PARTIALLY_FILLED, requested=3, filled=1), Trigger.START_TRIP, ctx(allow_partial_trip=True))
    assert d.to_status is S.IN_PROGRESS


def test_start_trip_and_complete() -> None:
    """fully_filled -> in_progress -> completed, completion announced to everyone."""
    d = decide(snap(S.FULLY_FILLED, requested=2, filled=2), Trigger.START_TRIP, ctx())
    assert (d.to_status, d.topics) == (S.IN_PROGRESS, (Topic.STATE_CHANGED,))
    d = decide(snap(S.IN_PROGRESS, requested=2, filled=2), Trigger.COMPLETE, ctx())
    assert (d.to_status, d.topics) == (S.COMPLETED, (Topic.STATE_CHANGED, Topic.COMPLETED))


def test_cancel_announces_cancelled() -> None:
    """Cancel from any cancellable state gives cancelled with the CANCELLED topic."""
    for status in (S.CREATED, S.BROADCASTING, S.ACTIVE, S.PARTIALLY_FILLED, S.FULLY_FILLED):
        d = decide(snap(status), Trigger.CANCEL, ctx())
        assert (d.from_status, d.to_status, d.fill_delta) == (status, S.CANCELLED, 0)
        assert d.topics == (Topic.STATE_CHANGED, Topic.CANCELLED)


# -- expire and the overdue rule ----------------------------------------------------------------


def test_expire_refused_without_deadline() -> None:
    """Expiring a broadcast with no deadline is refused with 'no deadline is set'."""
    error = refusal(snap(S.CREATED, expires_at=None), Trigger.EXPIRE, ctx())
    assert error.reason == "no deadline is set"


def test_expire_refused_before_deadline() -> None:
    """Expiring before the deadline is refused, naming it."""
    error = refusal(snap(), Trigger.EXPIRE, ctx())
    assert error.reason == f"deadline not passed: expires at {LATER.isoformat()}"


def test_expire_at_deadline() -> None:
    """At exactly the deadline the broadcast expires, announced to everyone."""
    d = decide(snap(expires_at=NOW), Trigger.EXPIRE, ctx())
    assert (d.to_status, d.topics, d.superseded) == (S.EXPIRED, (Topic.STATE_CHANGED, Topic.EXPIRED), None)


@pytest.mark.parametrize(
    "trigger", [Trigger.ACCEPT, Trigger.CANCEL, Trigger.RELEASE, Trigger.ACTIVATE, Trigger.START_BROADCAST], ids=str
)
def test_overdue_broadcast_is_expired_whatever_the_trigger(trigger: Trigger) -> None:
    """Any command on an overdue expirable broadcast becomes an expiry, recording what it replaced."""
    for status in (S.CREATED, S.BROADCASTING, S.ACTIVE, S.PARTIALLY_FILLED):
        d = decide(snap(status, filled=1, expires_at=NOW), trigger, ctx(holding=1, deadline=LATER))
        assert (d.trigger, d.from_status, d.to_status) == (Trigger.EXPIRE, status, S.EXPIRED)
        assert d.superseded is trigger
        assert d.fill_delta == 0
        assert d.topics == (Topic.STATE_CHANGED, Topic.EXPIRED)


def test_overdue_fully_filled_is_not_expired() -> None:
    """A fully filled broadcast past its deadline cannot expire, so release proceeds normally."""
    d = decide(snap(S.FULLY_FILLED, requested=2, filled=2, expires_at=NOW), Trigger.RELEASE, ctx(holding=1))
    assert (d.to_status, d.superseded) == (S.PARTIALLY_FILLED, None)


def test_terminal_states_refuse_every_trigger() -> None:
    """From completed, cancelled and expired, every trigger is an InvalidTransition, overdue or not."""
    for status in (S.COMPLETED, S.CANCELLED, S.EXPIRED):
        for trigger in Trigger:
            if trigger is Trigger.CREATE:
                continue
            with pytest.raises(InvalidTransition):
                decide(snap(status, expires_at=NOW - timedelta(days=1)), trigger, ctx())


# -- InvalidTransition --------------------------------------------------------------------------


def test_invalid_transition_carries_its_fields() -> None:
    """InvalidTransition is a TransitionRefused naming kind, id, from-state, trigger and allowed states."""
    with pytest.raises(InvalidTransition) as info:
        decide(snap(S.CREATED, kind="order", entity_id="o-1"), Trigger.ACCEPT, ctx())
    error = info.value
    assert isinstance(error, TransitionRefused)
    assert (error.kind, error.entity_id, error.from_state, error.trigger) == ("order", "o-1", "created", "accept")
    assert error.allowed_from == ("active", "partially_filled")
    assert "accept is not allowed from created" in error.reason
    assert "order 'o-1'" in str(error)


# -- extra guards --------------------------------------------------------------------------------


def test_extra_guard_refuses_with_its_reason() -> None:
    """A host guard's sentence becomes the refusal reason."""

    def no_free_truck(s: BroadcastSnapshot, c: CommandContext) -> str | None:
        return f"transporter {c.transporter_id} has no free truck"

    with pytest.raises(TransitionRefused) as info:
        decide(snap(), Trigger.ACCEPT, ctx(), [no_free_truck])
    assert info.value.reason == "transporter t1 has no free truck"


def test_extra_guard_runs_after_builtin_guards() -> None:
    """A built-in refusal wins and the host guard is not consulted."""
    calls: list[Trigger] = []

    def spy(s: BroadcastSnapshot, c: CommandContext) -> str | None:
        calls.append(Trigger.ACCEPT)
        return None

    with pytest.raises(TransitionRefused, match="not notified"):
        decide(snap(), Trigger.ACCEPT, ctx(holding=None), [spy])
    assert calls == []
    decide(snap(), Trigger.ACCEPT, ctx(), [spy])
    assert calls == [Trigger.ACCEPT]


def test_decide_is_pure() -> None:
    """Deciding twice on the same inputs gives equal decisions and leaves the snapshot as it was."""
    before = snap(S.PARTIALLY_FILLED, filled=1)
    copy = replace(before)
    assert decide(before, Trigger.ACCEPT, ctx()) == decide(before, Trigger.ACCEPT, ctx())
    assert before == copy
