"""The store contract, the outbox as relays use it: events kept whole and listed oldest first; claims with a lease
that a second relay cannot take until it runs out, after the grace and the retry time; failures
counted; dead letters parked, newest first; delivered events gone. (What each named receiver's
state must be, and pruning: ``contract_delivery``.)"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from .contract_base import T0, ContractBase
from .events import BroadcastEvent
from .service import BroadcastLifecycle
from .stores.base import BroadcastStore, OutboxEntry
from .stores.outbox_state import DeliveryAttempt, ReceiverDelivery

__all__ = ["RelayContract"]

_MINUTE = timedelta(minutes=1)


class RelayContract(ContractBase):
    """What the outbox methods must do; every test starts with the events of three commands written
    at three times."""

    def _written(self) -> tuple[BroadcastLifecycle, list[list[BroadcastEvent]]]:
        """A lifecycle with no receiver, and the events of a create (at T0), a start_broadcast
        (T0 + 1 s: the state change and the offer) and a cancel (T0 + 2 s), by command; all pending."""
        lc, _, clock = self._lifecycle(listening=False)
        bookings = lc.kind("booking")
        created = bookings.create("c1")
        clock.advance(timedelta(seconds=1))
        started = bookings.start_broadcast(created.id, ["t1", "t2"])
        clock.advance(timedelta(seconds=1))
        cancelled = bookings.cancel(created.id)
        by_command = [list(created.events), list(started.events), list(cancelled.events)]
        assert all(by_command), f"expected events from create, start_broadcast and cancel, got {by_command}"
        return lc, by_command

    def test_pending_events_are_whole_and_oldest_first(self) -> None:
        """Pending entries hold the events exactly as the commands returned them, written at the
        command's time, unattempted, oldest first; ``limit`` and ``created_before`` are honoured."""
        lc, by_command = self._written()
        store = lc.store
        events = [e for batch in by_command for e in batch]
        pending = store.pending_events(100)
        assert sorted(p.event.event_id for p in pending) == _ids(events)
        by_id = {e.event_id: e for e in events}
        at_of = {e.event_id: T0 + timedelta(seconds=n) for n, batch in enumerate(by_command) for e in batch}
        for entry in pending:
            assert entry.event == by_id[entry.event.event_id], (
                f"the outbox changed an event:\n  written: {by_id[entry.event.event_id]}\n  read:    {entry.event}")
            assert entry.created_at == at_of[entry.event.event_id]
            assert (entry.attempts, entry.last_error, entry.next_attempt_at, entry.dead_at) == (0, None, None, None)
        assert [p.created_at for p in pending] == sorted(p.created_at for p in pending), "not oldest first"
        assert _ids(p.event for p in store.pending_events(1)) == _ids(by_command[0])
        first_two = [*by_command[0], *by_command[1]]
        assert _ids(p.event for p in store.pending_events(len(first_two))) == _ids(first_two)
        assert _ids(p.event for p in store.pending_events(100, created_before=T0 + timedelta(seconds=2))) == _ids(
            first_two)

    def test_claim_takes_a_lease_no_other_relay_can_take(self) -> None:
        """A claim takes the due events and leases them until ``lease_until``: another claim gets none
        of them before then, and all of them once the lease has run out."""
        lc, by_command = self._written()
        store = lc.store
        events = [e for batch in by_command for e in batch]
        now, lease_until = T0 + _MINUTE, T0 + 3 * _MINUTE
        first = store.claim_events(now, 100, now, lease_until)
        assert {e.event.event_id: e.event for e in first} == {e.event_id: e for e in events}
        for later in (now, now + _MINUTE, lease_until - timedelta(microseconds=1)):
            taken = store.claim_events(later, 100, later, later + 2 * _MINUTE)
            assert list(taken) == [], (
                f"a second relay took {len(taken)} leased events at {later.isoformat()} (lease until "
                f"{lease_until.isoformat()})")
        assert {p.next_attempt_at for p in store.pending_events(100)} == {lease_until}
        again = store.claim_events(lease_until, 100, lease_until, lease_until + _MINUTE)
        assert _ids(e.event for e in again) == _ids(events), "events whose lease ran out were not claimable again"

    def test_claim_honours_grace_and_limit(self) -> None:
        """A claim takes only events written before ``created_before``, at most ``limit``, oldest first."""
        lc, by_command = self._written()
        store = lc.store
        now, lease = T0 + _MINUTE, T0 + 10 * _MINUTE
        early = store.claim_events(now, 100, T0 + timedelta(seconds=1), lease)
        assert _ids(e.event for e in early) == _ids(by_command[0]), (
            f"claimed {[e.event.name for e in early]} with created_before after the create only")
        one = store.claim_events(now, 1, now, lease)
        assert len(one) == 1 and one[0].event.event_id in _ids(by_command[1]), (
            "limit 1 did not take one of the oldest due events")

    def test_failures_are_counted_and_retried_at_their_time(self) -> None:
        """A failure counts an attempt, keeps the latest error and holds the event back until its retry
        time; the event stays pending, not dead."""
        lc, by_command = self._written()
        store = lc.store
        event_id = by_command[0][0].event_id
        store.record_attempt(_failure(event_id, 1, "socket down", T0 + _MINUTE, T0 + 2 * _MINUTE))
        store.record_attempt(_failure(event_id, 2, "still down", T0 + 2 * _MINUTE, T0 + 5 * _MINUTE))
        entry = _entry(store, event_id)
        assert (entry.attempts, entry.last_error, entry.next_attempt_at, entry.dead_at) == (
            2, "still down", T0 + 5 * _MINUTE, None), f"after two failures the entry is {entry}"
        assert [(r.receiver, r.attempts) for r in entry.receivers] == [("sockets", 2)]
        before = T0 + 5 * _MINUTE - timedelta(seconds=1)
        held = store.claim_events(before, 100, before, before + _MINUTE)
        assert event_id not in {e.event.event_id for e in held}, "claimed before its retry time"
        due = T0 + 5 * _MINUTE + timedelta(minutes=2)
        assert event_id in {e.event.event_id for e in store.claim_events(due, 100, due, due + _MINUTE)}
        assert list(store.dead_letters(10)) == []

    def test_exhausted_events_are_dead_letters_newest_first(self) -> None:
        """A receiver's failure with no retry time parks the event as dead: listed by dead_letters newest
        first, with the receiver, its error and attempts, no longer pending and never claimed."""
        lc, by_command = self._written()
        store = lc.store
        first, second, third = (batch[0] for batch in by_command)
        for event, at in ((first, T0 + _MINUTE), (second, T0 + 3 * _MINUTE), (third, T0 + 2 * _MINUTE)):
            store.record_attempt(_failure(event.event_id, 1, f"gave up on {event.name}", at, None))
        dead = list(store.dead_letters(10))
        assert [(d.event.event_id, d.dead_at) for d in dead] == [
            (second.event_id, T0 + 3 * _MINUTE), (third.event_id, T0 + 2 * _MINUTE),
            (first.event_id, T0 + _MINUTE)], f"dead letters listed as {[(d.event.name, d.dead_at) for d in dead]}"
        assert all(d.receiver == "sockets" and d.attempts == 1 and d.last_error == f"gave up on {d.event.name}"
                   for d in dead)
        assert [d.event.event_id for d in store.dead_letters(1)] == [second.event_id]
        live = _ids(e for batch in by_command for e in batch[1:])
        assert _ids(p.event for p in store.pending_events(100)) == live
        far = T0 + timedelta(days=30)
        assert _ids(e.event for e in store.claim_events(far, 100, far, far + _MINUTE)) == live

    def test_delivered_events_are_gone(self) -> None:
        """Events marked delivered are neither pending, claimable nor dead; the others stay pending."""
        lc, by_command = self._written()
        store = lc.store
        delivered = [by_command[0][0], by_command[2][0]]
        store.mark_delivered([e.event_id for e in delivered], T0 + _MINUTE)
        rest = sorted(set(_ids(e for batch in by_command for e in batch)) - set(_ids(delivered)))
        assert _ids(p.event for p in store.pending_events(100)) == rest
        far = T0 + timedelta(days=30)
        assert _ids(e.event for e in store.claim_events(far, 100, far, far + _MINUTE)) == rest
        assert list(store.dead_letters(10)) == []


def _ids(events: Iterable[BroadcastEvent]) -> list[str]:
    return sorted(e.event_id for e in events)


def _entry(store: BroadcastStore, event_id: str) -> OutboxEntry:
    matches = [p for p in store.pending_events(10_000) if p.event.event_id == event_id]
    assert len(matches) == 1, f"event {event_id} is pending {len(matches)} times"
    return matches[0]


def _failure(event_id: str, attempts: int, error: str, at: datetime, retry_at: datetime | None) -> DeliveryAttempt:
    """A pass in which the one receiver, ``sockets``, failed: to retry at ``retry_at``, or dead without one."""
    state = ReceiverDelivery(receiver="sockets", attempts=attempts, last_error=error, next_attempt_at=retry_at,
                             dead_at=at if retry_at is None else None)
    if retry_at is None:
        return DeliveryAttempt(event_id=event_id, at=at, receivers=(state,), outcome="dead", error=error)
    return DeliveryAttempt(event_id=event_id, at=at, receivers=(state,), outcome="pending", next_attempt_at=retry_at,
                           error=error)
