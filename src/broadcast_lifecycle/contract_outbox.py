"""The store contract, the outbox: events kept whole and listed oldest first; claims with a lease
that a second relay cannot take until it runs out, after the grace and the retry time; failures
counted; dead letters parked, newest first; delivered events gone."""

from __future__ import annotations

from datetime import timedelta

from .contract_base import T0, ContractBase
from .events import BroadcastEvent
from .service import BroadcastLifecycle
from .stores.base import BroadcastStore, OutboxEntry

__all__ = ["OutboxContract"]

_MINUTE = timedelta(minutes=1)


class OutboxContract(ContractBase):
    """What the outbox methods must do; every test starts with four events written at three times."""

    def _written(self) -> tuple[BroadcastLifecycle, list[BroadcastEvent]]:
        """A lifecycle with no receiver and the events of a create (at T0), a start_broadcast
        (T0 + 1 s) and a cancel (T0 + 2 s), in the order written; all are pending."""
        lc, _, clock = self._lifecycle(listening=False)
        bookings = lc.kind("booking")
        created = bookings.create("c1")
        clock.advance(timedelta(seconds=1))
        started = bookings.start_broadcast(created.id, ["t1", "t2"])
        clock.advance(timedelta(seconds=1))
        cancelled = bookings.cancel(created.id)
        events = [*created.events, *started.events, *cancelled.events]
        assert len(events) == 4, f"expected 4 events from create, start_broadcast and cancel, got {events}"
        return lc, events

    def test_pending_events_are_whole_and_oldest_first(self) -> None:
        """Pending entries hold the events exactly as the commands returned them, written at the
        command's time, unattempted, oldest first; ``limit`` and ``created_before`` are honoured."""
        lc, events = self._written()
        store = lc.store
        pending = store.pending_events(100)
        assert sorted(p.event.event_id for p in pending) == sorted(e.event_id for e in events)
        by_id = {e.event_id: e for e in events}
        written_at = [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2), T0 + timedelta(seconds=2)]
        at_of = {e.event_id: at for e, at in zip(events, written_at, strict=True)}
        for entry in pending:
            assert entry.event == by_id[entry.event.event_id], (
                f"the outbox changed an event:\n  written: {by_id[entry.event.event_id]}\n  read:    {entry.event}")
            assert entry.created_at == at_of[entry.event.event_id]
            assert (entry.attempts, entry.last_error, entry.next_attempt_at, entry.dead_at) == (0, None, None, None)
        assert [p.created_at for p in pending] == sorted(p.created_at for p in pending), "not oldest first"
        assert [p.event.event_id for p in store.pending_events(2)] == [e.event_id for e in events[:2]]
        assert [p.event.event_id for p in store.pending_events(100, created_before=T0 + timedelta(seconds=2))] == [
            e.event_id for e in events[:2]]

    def test_claim_takes_a_lease_no_other_relay_can_take(self) -> None:
        """A claim takes the due events and leases them until ``lease_until``: another claim gets none
        of them before then, and all of them once the lease has run out."""
        lc, events = self._written()
        store = lc.store
        now, lease_until = T0 + _MINUTE, T0 + 3 * _MINUTE
        first = store.claim_events(now, 100, now, lease_until)
        assert sorted(e.event.event_id for e in first) == sorted(e.event_id for e in events)
        assert {e.event.event_id: e.event for e in first} == {e.event_id: e for e in events}
        for later in (now, now + _MINUTE, lease_until - timedelta(microseconds=1)):
            taken = store.claim_events(later, 100, later, later + 2 * _MINUTE)
            assert list(taken) == [], (
                f"a second relay took {len(taken)} leased events at {later.isoformat()} (lease until "
                f"{lease_until.isoformat()})")
        assert {p.next_attempt_at for p in store.pending_events(100)} == {lease_until}
        again = store.claim_events(lease_until, 100, lease_until, lease_until + _MINUTE)
        assert sorted(e.event.event_id for e in again) == sorted(e.event_id for e in events), (
            "events whose lease ran out were not claimable again")

    def test_claim_honours_grace_and_limit(self) -> None:
        """A claim takes only events written before ``created_before``, at most ``limit``, oldest first."""
        lc, events = self._written()
        store = lc.store
        now, lease = T0 + _MINUTE, T0 + 10 * _MINUTE
        early = store.claim_events(now, 100, T0 + timedelta(seconds=1), lease)
        assert [e.event.event_id for e in early] == [events[0].event_id], (
            f"claimed {[e.event.name for e in early]} with created_before after the create only")
        one = store.claim_events(now, 1, now, lease)
        assert [e.event.event_id for e in one] == [events[1].event_id], "limit 1 did not take the oldest due event"

    def test_failures_are_counted_and_retried_at_their_time(self) -> None:
        """A failure counts an attempt, keeps the latest error and holds the event back until its retry
        time; the event stays pending, not dead."""
        lc, events = self._written()
        store = lc.store
        event_id = events[0].event_id
        store.record_failure(event_id, "socket down", T0 + _MINUTE, T0 + 2 * _MINUTE)
        store.record_failure(event_id, "still down", T0 + 2 * _MINUTE, T0 + 5 * _MINUTE)
        entry = _entry(store, event_id)
        assert (entry.attempts, entry.last_error, entry.next_attempt_at, entry.dead_at) == (
            2, "still down", T0 + 5 * _MINUTE, None), f"after two failures the entry is {entry}"
        before = T0 + 5 * _MINUTE - timedelta(seconds=1)
        held = store.claim_events(before, 100, before, before + _MINUTE)
        assert event_id not in {e.event.event_id for e in held}, "claimed before its retry time"
        due = T0 + 5 * _MINUTE + timedelta(minutes=2)
        assert event_id in {e.event.event_id for e in store.claim_events(due, 100, due, due + _MINUTE)}
        assert list(store.dead_events(10)) == []

    def test_exhausted_events_are_dead_letters_newest_first(self) -> None:
        """A failure with no retry time parks the event as dead: listed by dead_events newest first,
        with its error and attempts, no longer pending and never claimed."""
        lc, events = self._written()
        store = lc.store
        for event, at in zip(events[:3], (T0 + _MINUTE, T0 + 3 * _MINUTE, T0 + 2 * _MINUTE), strict=True):
            store.record_failure(event.event_id, f"gave up on {event.name}", at, None)
        dead = list(store.dead_events(10))
        assert [(d.event.event_id, d.dead_at) for d in dead] == [
            (events[1].event_id, T0 + 3 * _MINUTE), (events[2].event_id, T0 + 2 * _MINUTE),
            (events[0].event_id, T0 + _MINUTE)], f"dead letters listed as {[(d.event.name, d.dead_at) for d in dead]}"
        assert all(d.attempts == 1 and d.last_error == f"gave up on {d.event.name}" for d in dead)
        assert [d.event.event_id for d in store.dead_events(1)] == [events[1].event_id]
        assert [p.event.event_id for p in store.pending_events(100)] == [events[3].event_id]
        far = T0 + timedelta(days=30)
        assert [e.event.event_id for e in store.claim_events(far, 100, far, far + _MINUTE)] == [events[3].event_id]

    def test_delivered_events_are_gone(self) -> None:
        """Events marked delivered are neither pending, claimable nor dead; the others stay pending."""
        lc, events = self._written()
        store = lc.store
        store.mark_delivered([events[0].event_id, events[2].event_id], T0 + _MINUTE)
        rest = sorted([events[1].event_id, events[3].event_id])
        assert sorted(p.event.event_id for p in store.pending_events(100)) == rest
        far = T0 + timedelta(days=30)
        assert sorted(e.event.event_id for e in store.claim_events(far, 100, far, far + _MINUTE)) == rest
        assert list(store.dead_events(10)) == []


def _entry(store: BroadcastStore, event_id: str) -> OutboxEntry:
    matches = [p for p in store.pending_events(10_000) if p.event.event_id == event_id]
    assert len(matches) == 1, f"event {event_id} is pending {len(matches)} times"
    return matches[0]
