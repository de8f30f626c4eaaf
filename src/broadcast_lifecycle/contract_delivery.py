"""The store contract, delivery per named receiver and retention: the state of each receiver kept as
recorded and returned with its event; a healthy receiver never called again while another one fails
and dead-letters; pruning that takes only what is old and done, a batch at a time."""

from __future__ import annotations

from datetime import timedelta

from .contract_base import KINDS, T0, Clock, ContractBase
from .events import BroadcastEvent
from .outbox import RetryPolicy
from .retention import PruneReport
from .service import BroadcastLifecycle
from .states import BroadcastStatus
from .stores.base import BroadcastStore, PruneTarget
from .stores.outbox_state import DeliveryAttempt, ReceiverDelivery

__all__ = ["DeliveryContract"]

_LATER = T0 + timedelta(hours=1)


class _Receiver:
    """Counts the events it gets; raises on each while ``down``."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.calls: dict[str, int] = {}

    def __call__(self, event: BroadcastEvent) -> None:
        self.calls[event.event_id] = self.calls.get(event.event_id, 0) + 1
        if self.down:
            raise ConnectionError("socket server unreachable")


class DeliveryContract(ContractBase):
    """Per-receiver delivery state (``record_attempt``, the receivers of claimed and pending entries,
    ``dead_letters``) and ``prune``."""

    keeps_delivered_events: bool | None = None
    """True for a store that keeps delivered events until they are pruned (``prune`` must then take
    them, ``limit`` at a time), False for one that drops an event once delivered (as ``InMemoryStore``
    does: it has none to prune, ``prune(PruneTarget.OUTBOX, ...)`` returns 0); None accepts either."""

    def _named(self, store: BroadcastStore, clock: Clock, healthy: _Receiver, broken: _Receiver,
               ) -> BroadcastLifecycle:
        """A lifecycle on ``store`` with the receivers ``analytics`` (healthy) and ``sockets`` (broken)."""
        lc = BroadcastLifecycle(store, clock=clock, kinds=KINDS,
                                retry=RetryPolicy(max_attempts=2, first_delay=timedelta(seconds=5)))
        lc.bus.connect(healthy, name="analytics")
        lc.bus.connect(broken, name="sockets")
        return lc

    def test_delivery_is_tracked_per_receiver(self) -> None:
        """A receiver that fails is retried alone and dead-letters under its name; a relay with other
        receiver objects under the same names never calls the one that handled the event."""
        store, clock = self.new_store(), Clock()
        healthy, broken = _Receiver(), _Receiver(down=True)
        self._named(store, clock, healthy, broken).kind("booking").create("c1")
        (event_id,) = healthy.calls
        (entry,) = store.pending_events(10)
        states = {r.receiver: r for r in entry.receivers}
        assert (entry.attempts, entry.event.event_id, set(states)) == (1, event_id, {"analytics", "sockets"})
        assert states["analytics"].delivered_at == T0 and states["sockets"].delivered_at is None
        assert (states["sockets"].attempts, states["sockets"].last_error) == (
            1, "ConnectionError: socket server unreachable")

        healthy_there, broken_there = _Receiver(), _Receiver(down=True)
        relay_side = self._named(store, clock, healthy_there, broken_there)
        clock.advance(timedelta(minutes=1))
        report = relay_side.relay(grace=timedelta(0)).relay_once()
        assert (report.delivered, report.failed, report.dead) == (0, 0, 1)
        assert (healthy.calls, healthy_there.calls, broken_there.calls) == ({event_id: 1}, {}, {event_id: 1})
        (letter,) = store.dead_letters(10)
        assert (letter.event.event_id, letter.receiver, letter.attempts, letter.dead_at) == (
            event_id, "sockets", 2, clock.now)
        assert letter.last_error == "ConnectionError: socket server unreachable"
        assert store.pending_events(10) == []

    def test_record_attempt_and_claim_keep_per_receiver_state(self) -> None:
        """record_attempt stores each receiver's state as given; pending_events and claim_events return it;
        the event is due at its next attempt, and a dead outcome leaves the pending list for dead_letters."""
        lc, _, _ = self._lifecycle(listening=False)
        store = lc.store
        lc.kind("booking").create("c1")
        (entry,) = store.pending_events(10)
        event_id, retry = entry.event.event_id, T0 + timedelta(seconds=5)
        assert (entry.attempts, entry.receivers, entry.delivered_at) == (0, (), None)
        handled = ReceiverDelivery(receiver="a", delivered_at=T0)
        failed = ReceiverDelivery(receiver="b", attempts=1, last_error="E: x", next_attempt_at=retry)
        store.record_attempt(DeliveryAttempt(event_id=event_id, at=T0, receivers=(handled, failed),
                                             outcome="pending", next_attempt_at=retry, error="b: E: x"))
        (entry,) = store.pending_events(10)
        assert (entry.attempts, entry.last_error, entry.next_attempt_at) == (1, "b: E: x", retry)
        assert {r.receiver: r for r in entry.receivers} == {"a": handled, "b": failed}
        assert store.claim_events(T0 + timedelta(seconds=4), 10, _LATER, _LATER) == [], "claimed before it was due"
        (claimed,) = store.claim_events(retry, 10, _LATER, retry + timedelta(minutes=2))
        assert {r.receiver: r for r in claimed.receivers} == {"a": handled, "b": failed}
        dead = ReceiverDelivery(receiver="b", attempts=2, last_error="E: y", dead_at=retry)
        store.record_attempt(DeliveryAttempt(event_id=event_id, at=retry, receivers=(dead,), outcome="dead",
                                             error="b: E: y"))
        assert store.pending_events(10) == []
        (letter,) = store.dead_letters(10)
        assert (letter.event.event_id, letter.receiver, letter.attempts, letter.last_error, letter.dead_at,
                letter.created_at) == (event_id, "b", 2, "E: y", retry, T0)

    def test_prune_deletes_only_what_is_old_and_done(self) -> None:
        """prune takes delivered events and keys older than the cutoff, in batches of at most the limit;
        pending and dead events, newer rows and histories stay; history=True takes whole histories of
        broadcasts finished before the cutoff and nothing else."""
        lc, _, clock = self._lifecycle()
        store, bookings = lc.store, lc.kind("booking")
        done = bookings.create("c1", idempotency_key="old-create").id
        bookings.cancel(done, actor="c1", idempotency_key="old-cancel")  # 3 events, delivered
        still_open = self._active(lc, transporters=("t1",))  # 5 events (two offers), delivered
        silent, _, _ = self._lifecycle(store, listening=False)
        waiting = silent.kind("booking").create("c2").id  # pending: nobody listened
        clock.advance(timedelta(days=8))
        fresh = bookings.create("c3", idempotency_key="new-create").id
        bookings.cancel(fresh)
        cutoff = clock.now - timedelta(days=7)

        batches = [store.prune(PruneTarget.OUTBOX, cutoff, 4) for _ in range(3)]
        expected = {True: [[4, 4, 0]], False: [[0, 0, 0]], None: [[4, 4, 0], [0, 0, 0]]}[self.keeps_delivered_events]
        assert batches in expected, (
            f"batches of 4 deleted {batches} of 8 old delivered events (keeps_delivered_events="
            f"{self.keeps_delivered_events})")
        assert [e.event.entity_id for e in store.pending_events(10)] == [waiting]
        assert lc.prune(timedelta(days=7)) == PruneReport(before=cutoff, idempotency=2)
        assert store.recall("old-create") is None and store.recall("new-create") is not None
        assert len(bookings.history(done)) == 2

        assert lc.prune(timedelta(days=7), history=True, batch_size=1) == PruneReport(before=cutoff, history=1)
        assert bookings.history(done) == ()
        assert bookings.get(done).status is BroadcastStatus.CANCELLED
        assert [len(bookings.history(b)) for b in (still_open, waiting, fresh)] == [3, 1, 2]
        assert [e.event.entity_id for e in store.pending_events(10)] == [waiting]
