"""The store contract, the sweeper (``expire_overdue``): only overdue broadcasts of its kind, never
early, never those stamped after ``now``, each with its history row and its events to exactly the
customer and the notified transporters, in the outbox, at most ``limit`` per call."""

from __future__ import annotations

from datetime import timedelta

from .contract_base import T0, ContractBase, without_id
from .expiry import SWEEP_REASON, Expiry
from .records import EntityId
from .states import BroadcastStatus
from .stores.base import NewBroadcast

__all__ = ["SweepContract"]

_FAR = T0 + timedelta(days=400)


class SweepContract(ContractBase):
    """What ``expire_overdue`` must expire, and what it must write."""

    def test_sweep_takes_only_overdue_broadcasts_with_a_deadline(self) -> None:
        """A sweep far in the future expires exactly the broadcasts with a deadline in an expirable
        state: none without a deadline, none filled, in progress or terminal."""
        lc, _, _ = self._lifecycle()
        bookings = lc.kind("booking")
        no_deadline = bookings.create("c1").id
        broadcasting = bookings.create("c2").id
        bookings.start_broadcast(broadcasting, ["t1"])
        created_with_deadline = bookings.create("c3", expires_at=T0 + timedelta(minutes=2)).id
        active = self._active(lc, customer="c4")
        partial = self._active(lc, customer="c5")
        bookings.accept(partial, "t1")
        filled = self._active(lc, slots=1, customer="c6")
        bookings.accept(filled, "t1")
        travelling = self._active(lc, slots=1, customer="c7")
        bookings.accept(travelling, "t1")
        bookings.start_trip(travelling)
        cancelled = self._active(lc, customer="c8")
        bookings.cancel(cancelled)
        batch = lc.store.expire_overdue(bookings.config, _FAR, 100, "system")
        expired = {i for i in (no_deadline, broadcasting, created_with_deadline, active, partial, filled, travelling,
                               cancelled) if bookings.get(i).status is BroadcastStatus.EXPIRED}
        assert expired == {created_with_deadline, active, partial} and batch.count == 3, (
            f"the sweep expired {sorted(map(str, expired))} (count {batch.count}); only the 3 overdue ones may go")

    def test_sweep_is_never_early(self) -> None:
        """A broadcast is not expired a second (or a microsecond) before its deadline, and is at it."""
        lc, _, _ = self._lifecycle()
        bookings = lc.kind("booking")
        entity_id = self._active(lc)
        deadline = bookings.get(entity_id).expires_at
        assert deadline is not None
        for early in (timedelta(seconds=1), timedelta(microseconds=1)):
            count = lc.store.expire_overdue(bookings.config, deadline - early, 100, "system").count
            assert count == 0 and bookings.get(entity_id).status is BroadcastStatus.ACTIVE, (
                f"expired {early} before its deadline")
        assert lc.store.expire_overdue(bookings.config, deadline, 100, "system").count == 1
        assert bookings.get(entity_id).status is BroadcastStatus.EXPIRED

    def test_sweep_leaves_broadcasts_stamped_after_now(self) -> None:
        """A broadcast written at a time after the sweep's ``now`` (a clock that went back) waits,
        deadline passed or not, until ``now`` reaches its stamp."""
        lc, _, _ = self._lifecycle()
        config = lc.kind("booking").config
        stamped = T0 + timedelta(minutes=10)
        new = NewBroadcast(config, "c1", 1, stamped, expires_at=T0 + timedelta(minutes=5))
        entity_id = lc.store.insert(new, lambda _: None).snapshot.id
        assert lc.store.expire_overdue(config, T0 + timedelta(minutes=6), 100, "system").count == 0
        assert lc.kind("booking").get(entity_id).status is BroadcastStatus.CREATED
        assert lc.store.expire_overdue(config, stamped, 100, "system").count == 1
        assert lc.kind("booking").get(entity_id).status is BroadcastStatus.EXPIRED

    def test_sweep_writes_state_history_and_events(self) -> None:
        """An expired broadcast is stamped ``now`` one version up, with a history row (actor, the sweep
        reason) and two events in the outbox and in the batch: state-changed to the customer and
        {KIND}_EXPIRED to the customer and every notified transporter, in notification order."""
        for with_events in (True, False):
            lc, _, clock = self._lifecycle(listening=False)
            bookings = lc.kind("booking")
            entity_id = self._active(lc, slots=3, transporters=("t3", "t1"))
            clock.advance(timedelta(seconds=30))
            bookings.notify_more(entity_id, ["t0"])
            bookings.accept(entity_id, "t3")
            before = bookings.get(entity_id)
            now = T0 + timedelta(minutes=7)
            earlier = {p.event.event_id for p in lc.store.pending_events(10_000)}
            batch = lc.store.expire_overdue(bookings.config, now, 100, "sweeper-7", with_events)
            expected = Expiry(kind=bookings.config, before=before, at=now, actor="sweeper-7")
            assert batch.count == 1
            assert bookings.get(entity_id) == expected.after()
            assert bookings.history(entity_id)[-1] == expected.history_entry(), (
                f"the expiry's history row is {bookings.history(entity_id)[-1]}, expected {expected.history_entry()}")
            assert expected.history_entry().reason == SWEEP_REASON
            want = sorted(without_id(e) for e in expected.events(["t1", "t3", "t0"]))
            written = [p.event for p in lc.store.pending_events(10_000) if p.event.event_id not in earlier]
            assert sorted(without_id(e) for e in written) == want, (
                f"the outbox got {written}\nexpected (event ids aside) {want}")
            if with_events:
                loaded = list(batch.load_events())
                assert sorted(without_id(e) for e in loaded) == want
                assert {e.event_id for e in loaded} == {e.event_id for e in written}

    def test_sweep_honours_the_limit_and_the_kind(self) -> None:
        """A sweep expires at most ``limit`` broadcasts, of its kind only; repeated, it takes them all once."""
        lc, _, _ = self._lifecycle()
        bookings = lc.kind("booking")
        overdue: list[EntityId] = [self._active(lc, customer=f"c{n}") for n in range(5)]
        order = self._active(lc, kind="order", customer="c9")
        counts = [lc.store.expire_overdue(bookings.config, _FAR, 2, "system").count for _ in range(4)]
        assert counts == [2, 2, 1, 0], f"sweeps with limit 2 expired {counts} of 5"
        assert all(bookings.get(i).status is BroadcastStatus.EXPIRED for i in overdue)
        assert lc.kind("order").get(order).status is BroadcastStatus.ACTIVE, "a booking sweep expired an order"
        for entity_id in overdue:
            assert [h.trigger for h in bookings.history(entity_id)].count("expire") == 1
