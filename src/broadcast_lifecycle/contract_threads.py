"""The store contract, threads: concurrent commands keep every broadcast whole, concurrent sweepers
expire each broadcast once, and ``notify_more`` racing a terminal transition never leaves a
recipient without the terminal event."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

from .contract_base import ContractBase, race
from .errors import TransitionRefused
from .records import EntityId
from .states import BroadcastStatus

__all__ = ["ThreadsContract"]

_TRIP = ["create", "start_broadcast", "activate", "accept", "accept", "start_trip", "complete"]


class ThreadsContract(ContractBase):
    """The store under threads that run commands at the same moment."""

    def test_notify_more_racing_a_terminal_transition(self) -> None:
        """A transporter that notify_more adds while a cancel commits either gets the cancel's event or
        is refused and not recorded: no recipient is ever left without the terminal event."""
        lc, recorder, _ = self._lifecycle()
        bookings = lc.kind("booking")
        for n in range(self.race_rounds):
            entity_id = self._active(lc, customer=f"c{n}")
            late = f"late-{n}"
            racers = [partial(bookings.notify_more, entity_id, [late]), partial(bookings.cancel, entity_id)]
            errors = race(*(racers if n % 2 else reversed(racers)))  # either may start first
            unexpected = [e for e in errors if not isinstance(e, TransitionRefused)]
            assert not unexpected, f"round {n}: {unexpected!r}"
            (cancelled,) = [e for e in recorder.events if e.name == "BOOKING_CANCELLED" and e.entity_id == entity_id]
            told = {r.id for r in cancelled.recipients if r.role == "transporter"}
            notified = {r.transporter_id for r in bookings.recipients(entity_id)}
            assert notified <= told, (f"round {n}: {sorted(notified - told)} recorded as notified but not told of "
                                      "the cancel (the recipients were added after the cancel listed them)")

    def test_concurrent_commands_keep_every_broadcast_whole(self) -> None:
        """Threads each running a whole trip at once get distinct ids and complete histories."""
        lc, recorder, _ = self._lifecycle()
        bookings = lc.kind("booking")
        ids: list[EntityId] = []

        def trip(customer: str) -> None:
            entity_id = bookings.create(customer, slots=2).id
            ids.append(entity_id)
            bookings.start_broadcast(entity_id, ["t1", "t2"])
            bookings.activate(entity_id, ttl=timedelta(minutes=5))
            bookings.accept(entity_id, "t1")
            bookings.accept(entity_id, "t2")
            bookings.start_trip(entity_id)
            bookings.complete(entity_id)

        errors = race(*(partial(trip, f"c{n}") for n in range(6)))
        assert not errors, f"concurrent trips failed: {errors!r}"
        assert len(set(ids)) == 6, f"the store gave concurrent creates the same id: {ids}"
        for entity_id in ids:
            history = bookings.history(entity_id)
            assert [h.trigger for h in history] == _TRIP and [h.version for h in history] == list(range(1, 8))
            assert bookings.get(entity_id).status is BroadcastStatus.COMPLETED
            changes = sorted(e.version for e in recorder.events
                             if e.entity_id == entity_id and e.name == "BROADCAST_STATE_CHANGED")
            assert changes == list(range(1, 8)), f"{entity_id!r} announced versions {changes}"

    def test_concurrent_sweepers_expire_each_broadcast_once(self) -> None:
        """Four sweepers racing over the same overdue broadcasts expire each exactly once, with one
        history row and one expiry event each."""
        lc, _, clock = self._lifecycle(listening=False)
        bookings = lc.kind("booking")
        overdue = [self._active(lc, customer=f"c{n}") for n in range(10)]
        now = clock.now + timedelta(minutes=6)
        counts: list[int] = []

        def sweep() -> None:
            for _ in range(len(overdue)):  # bounded: a sweeper that expires broadcasts again never stops
                count = lc.store.expire_overdue(bookings.config, now, 3, "system", False).count
                if count == 0:
                    return
                counts.append(count)

        errors = race(*(sweep for _ in range(4)))
        assert not errors, f"concurrent sweeps failed: {errors!r}"
        assert sum(counts) == len(overdue), f"sweepers reported {sum(counts)} expiries of {len(overdue)} broadcasts"
        for entity_id in overdue:
            assert [h.trigger for h in bookings.history(entity_id)].count("expire") == 1
        expired = [p.event for p in lc.store.pending_events(10_000) if p.event.name == "BOOKING_EXPIRED"]
        assert sorted(map(str, (e.entity_id for e in expired))) == sorted(map(str, overdue))
