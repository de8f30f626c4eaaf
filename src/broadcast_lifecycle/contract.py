"""The store contract: the behaviour every :class:`~broadcast_lifecycle.stores.base.BroadcastStore`
must show, as a test class. Subclass it in your tests and implement :meth:`StoreContract.make_store`
(a fresh, empty store per call); pytest collects the ``test_*`` methods, and :func:`run_contract`
runs them without pytest.

    class TestMyStore(StoreContract):
        def make_store(self) -> BroadcastStore:
            return MyStore(...)

The tests live in parts, one concern each: this module (round trips, transitions, the one-open
policy, idempotency keys, bad inputs, the cross-store comparison), ``contract_writes`` (the
compare-and-set, history, times, recipients), ``contract_sweep``, ``contract_relay``, ``contract_delivery``,
``contract_ids``, ``contract_threads`` and ``contract_batch``.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from .contract_base import T0, Clock, ContractBase, run_contract
from .contract_batch import BatchContract
from .contract_delivery import DeliveryContract
from .contract_ids import IdsContract
from .contract_inputs import BAD_INPUTS, FOREIGN_TO_INT_KEYS, foreign_id_inputs
from .contract_relay import RelayContract
from .contract_script import assert_same, records_of, run_script
from .contract_sweep import SweepContract
from .contract_threads import ThreadsContract
from .contract_writes import WritesContract
from .errors import (
    BroadcastNotFound,
    DuplicateBroadcast,
    IdempotencyKeyReused,
    OpenBroadcastExists,
    TransitionRefused,
)
from .events import Topic
from .results import CommandResult
from .states import OPEN, BroadcastStatus
from .stores.base import Change, Committed
from .stores.memory import InMemoryStore

__all__ = ["FOREIGN_TO_INT_KEYS", "StoreContract", "run_contract"]

_T0 = T0


class StoreContract(WritesContract, SweepContract, RelayContract, DeliveryContract, IdsContract, ThreadsContract,
                    BatchContract, ContractBase):
    """Behaviour a store must show; run it against each store you ship (see docs/adapters.md).

    Fill in :meth:`~ContractBase.make_store` (set-up) and, when the default ``close()`` call is not
    enough, :meth:`~ContractBase.release_store` (tear-down); declare the ids your store holds with
    ``explicit_ids`` and ``foreign_ids``.
    """

    def test_insert_then_load_round_trips(self) -> None:
        """A created broadcast loads back with every field, in UTC, at version 1."""
        lc, _, clock = self._lifecycle()
        snap = lc.kind("booking").create("c1", slots=3, expires_at=_T0 + timedelta(hours=1))
        loaded = lc.kind("booking").get(snap.id)
        assert loaded == snap.snapshot
        assert (loaded.status, loaded.version, loaded.slots_requested, loaded.slots_filled) == (
            BroadcastStatus.CREATED, 1, 3, 0)
        assert loaded.state_changed_at == clock.now and loaded.state_changed_at.tzinfo is not None
        assert loaded.expires_at == _T0 + timedelta(hours=1)

    def test_unknown_id_is_not_found(self) -> None:
        """Loading, listing history or recipients of an unknown id raises BroadcastNotFound."""
        lc, _, _ = self._lifecycle()
        for call in (lc.kind("booking").get, lc.kind("booking").history, lc.kind("booking").recipients):
            try:
                call(987654)
            except BroadcastNotFound as exc:
                assert exc.entity_id == 987654
            else:
                raise AssertionError(f"{call.__name__} did not raise BroadcastNotFound")

    def test_explicit_ids_of_every_type(self) -> None:
        """Ids the host picks are kept; a taken id raises DuplicateBroadcast."""
        lc, _, _ = self._lifecycle()
        for entity_id in self.explicit_ids:
            assert self._create_explicit(lc, "c1", entity_id).id == entity_id
            assert lc.kind("booking").get(entity_id).id == entity_id
            try:
                lc.kind("booking").create("c2", entity_id=entity_id)
            except DuplicateBroadcast:
                pass
            else:
                raise AssertionError("a taken id was accepted")

    def test_transition_writes_state_history_and_recipients(self) -> None:
        """Each transition bumps the version, stamps the time and adds one history row."""
        lc, _, clock = self._lifecycle()
        entity_id = self._active(lc)
        clock.now += timedelta(seconds=5)
        snap = lc.kind("booking").accept(entity_id, "t2")
        assert (snap.status, snap.snapshot.slots_filled, snap.version) == (BroadcastStatus.PARTIALLY_FILLED, 1, 4)
        assert snap.snapshot.state_changed_at == clock.now == lc.kind("booking").get(entity_id).state_changed_at
        history = lc.kind("booking").history(entity_id)
        assert [h.version for h in history] == [1, 2, 3, 4]
        assert [(h.from_status, h.to_status, h.trigger, h.actor) for h in history[-1:]] == [
            (BroadcastStatus.ACTIVE, BroadcastStatus.PARTIALLY_FILLED, "accept", "t2")]
        holdings = {r.transporter_id: r.slots_held for r in lc.kind("booking").recipients(entity_id)}
        assert holdings == {"t1": 0, "t2": 1, "t3": 0}

    def test_stale_version_writes_nothing(self) -> None:
        """apply() with a stale version returns None and changes nothing."""
        lc, _, _ = self._lifecycle()
        entity_id = self._active(lc)
        store = lc.store
        stale = store.load("booking", entity_id, "t1").snapshot
        lc.kind("booking").accept(entity_id, "t2")
        from .decision import decide
        from .guards import CommandContext
        from .lifecycle import Trigger

        decision = decide(stale, Trigger.ACCEPT, CommandContext(_T0, 1, "t1", 0))
        calls: list[Committed] = []
        change = Change(lc.kind("booking").config, stale, decision, _T0, "t1", transporter_id="t1")
        assert store.apply(change, calls.append) is None
        assert calls == []
        assert lc.kind("booking").get(entity_id).version == stale.version + 1
        assert len(lc.kind("booking").history(entity_id)) == stale.version + 1
        assert {r.transporter_id: r.slots_held for r in lc.kind("booking").recipients(entity_id)}["t1"] == 0

    def test_terminal_events_reach_every_recipient(self) -> None:
        """A cancel announces BOOKING_CANCELLED to the customer and every notified transporter."""
        lc, recorder, _ = self._lifecycle()
        entity_id = self._active(lc)
        lc.kind("booking").notify_more(entity_id, ["t4"])
        lc.kind("booking").cancel(entity_id, actor="c1", reason="changed plans")
        (cancelled,) = [e for e in recorder.events if e.name == "BOOKING_CANCELLED"]
        assert {r.id for r in cancelled.recipients} == {"c1", "t1", "t2", "t3", "t4"}
        assert lc.kind("booking").history(entity_id)[-1].reason == "changed plans"

    def test_offers_go_to_new_transporters_through_the_outbox(self) -> None:
        """start_broadcast and notify_more write one offer each, to the transporters they add only, and
        activate offers it again to everyone notified, in the outbox (pending while nobody listens),
        carrying the version, deadline, trigger and reason; a notify_more that adds nobody writes none."""
        lc, _, _ = self._lifecycle(listening=False)
        entity_id = self._active(lc)
        lc.kind("booking").notify_more(entity_id, ["t3", "t4", "t5"])
        lc.kind("booking").notify_more(entity_id, ["t1", "t5"])
        pending = [entry.event for entry in lc.store.pending_events(100)]
        offers = sorted((e for e in pending if e.name == "BOOKING_OFFERED"), key=lambda e: (e.version, e.trigger))
        deadline = lc.kind("booking").get(entity_id).expires_at
        assert [(e.trigger, e.version, e.expires_at, [r.id for r in e.recipients]) for e in offers] == [
            ("start_broadcast", 2, None, ["t1", "t2", "t3"]), ("activate", 3, deadline, ["t1", "t2", "t3"]),
            ("notify_more", 3, deadline, ["t4", "t5"])]
        assert all(r.role == "transporter" for e in offers for r in e.recipients)

    def test_a_release_that_reopens_a_full_broadcast_reoffers_to_those_holding_no_slot(self) -> None:
        """A release from fully_filled offers the broadcast again to each notified transporter holding no slot
        after it (the releasing one too once it holds none), in notification order; one from partially_filled
        offers nothing; one made after the deadline offers nothing (the broadcast is due to expire)."""
        lc, recorder, clock = self._lifecycle()
        bookings = lc.kind("booking")
        entity_id = self._active(lc, slots=3, transporters=("t1", "t2", "t3", "t4"))
        bookings.accept(entity_id, "t1", slots=2)
        bookings.accept(entity_id, "t2")

        def offers(result: CommandResult) -> list[tuple[str, list[str]]]:
            return [(e.trigger, [r.id for r in e.recipients]) for e in result.events if e.topic is Topic.OFFERED]

        assert offers(bookings.release(entity_id, "t1")) == [("release", ["t3", "t4"])]  # t1 and t2 still hold
        assert offers(bookings.release(entity_id, "t1")) == []  # from partially_filled: still open, nothing new
        bookings.accept(entity_id, "t4", slots=2)
        reopened = bookings.release(entity_id, "t4", slots=2)
        assert offers(reopened) == [("release", ["t1", "t3", "t4"])]  # t2 holds a slot
        (offer,) = [e for e in reopened.events if e.topic is Topic.OFFERED]
        assert (offer.version, offer.status, offer.previous_status) == (
            reopened.snapshot.version, BroadcastStatus.PARTIALLY_FILLED, BroadcastStatus.FULLY_FILLED)
        assert offer in recorder.events
        bookings.accept(entity_id, "t3", slots=2)
        clock.advance(timedelta(minutes=6))  # past the deadline: a full broadcast does not expire, an open one does
        late = bookings.release(entity_id, "t3")
        assert late.snapshot.status is BroadcastStatus.PARTIALLY_FILLED and offers(late) == []

    def test_notify_more_refused_when_closed(self) -> None:
        """notify_more on a closed broadcast adds nobody."""
        lc, _, _ = self._lifecycle()
        entity_id = self._active(lc, slots=1)
        lc.kind("booking").accept(entity_id, "t1")
        try:
            lc.kind("booking").notify_more(entity_id, ["t9"])
        except TransitionRefused:
            pass
        else:
            raise AssertionError("notify_more on a fully filled broadcast was accepted")
        assert "t9" not in {r.transporter_id for r in lc.kind("booking").recipients(entity_id)}
        assert OPEN.isdisjoint({lc.kind("booking").get(entity_id).status})

    def test_expire_due_takes_only_overdue_open(self) -> None:
        """expire_due expires exactly the overdue open broadcasts, once, with their events."""
        lc, _, clock = self._lifecycle()
        overdue = self._active(lc)
        clock.now += timedelta(minutes=3)
        later = self._active(lc)
        filled = self._active(lc, slots=1)
        lc.kind("booking").accept(filled, "t1")
        clock.now += timedelta(minutes=3)
        assert lc.expire_due() == 1
        assert lc.expire_due() == 0
        assert lc.kind("booking").get(overdue).status is BroadcastStatus.EXPIRED
        assert lc.kind("booking").get(later).status is BroadcastStatus.ACTIVE
        assert lc.kind("booking").get(filled).status is BroadcastStatus.FULLY_FILLED

    def test_outbox_keeps_undelivered_events(self) -> None:
        """Events a receiver failed on stay pending with the error; delivered ones do not."""
        lc, _, _ = self._lifecycle()

        def fail_on_cancel(event: object) -> None:
            if getattr(event, "name", "") == "BOOKING_CANCELLED":
                raise RuntimeError("socket down")

        lc.bus.connect(fail_on_cancel)
        entity_id = self._active(lc)
        lc.kind("booking").cancel(entity_id)
        pending = lc.store.pending_events(10)
        assert [p.event.name for p in pending] == ["BOOKING_CANCELLED"]
        assert pending[0].attempts == 1 and "socket down" in (pending[0].last_error or "")
        assert pending[0].event.entity_id == entity_id
        lc.store.mark_delivered([pending[0].event.event_id], _T0)
        assert lc.store.pending_events(10) == []

    def test_one_open_broadcast_per_customer(self) -> None:
        """With the policy on, a second open broadcast for a customer is refused until the first closes."""
        lc, _, _ = self._lifecycle()
        first = lc.kind("order").create("c7")
        try:
            lc.kind("order").create("c7")
        except OpenBroadcastExists as exc:
            assert exc.customer_id == "c7"
        else:
            raise AssertionError("a second open order was created")
        lc.kind("order").create("c8")
        lc.kind("booking").create("c7")
        lc.kind("order").cancel(first.id)
        assert lc.kind("order").create("c7").status is BroadcastStatus.CREATED

    def test_concurrent_accepts_never_overfill(self) -> None:
        """Eight threads racing for three slots: exactly three win and the count is three."""
        lc, recorder, _ = self._lifecycle()
        entity_id = lc.kind("booking").create("c1", slots=3).id
        transporters = [f"t{i}" for i in range(8)]
        lc.kind("booking").start_broadcast(entity_id, transporters)
        lc.kind("booking").activate(entity_id, ttl=timedelta(minutes=5))
        barrier = threading.Barrier(len(transporters))
        wins: list[str] = []
        refusals: list[TransitionRefused] = []

        def accept(transporter: str) -> None:
            barrier.wait()
            try:
                lc.kind("booking").accept(entity_id, transporter)
                wins.append(transporter)
            except TransitionRefused as exc:
                refusals.append(exc)

        threads = [threading.Thread(target=accept, args=(t,)) for t in transporters]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert (len(wins), len(refusals)) == (3, 5)
        snap = lc.kind("booking").get(entity_id)
        assert (snap.slots_filled, snap.status) == (3, BroadcastStatus.FULLY_FILLED)
        assert recorder.names().count("BOOKING_FULLY_FILLED") == 1
        assert sum(r.slots_held for r in lc.kind("booking").recipients(entity_id)) == 3

    def test_idempotent_retry_returns_first_outcome(self) -> None:
        """A repeated command with the same key replays the first outcome: no second transition or event."""
        lc, recorder, clock = self._lifecycle()
        bookings = lc.kind("booking")
        entity_id = self._active(lc, slots=3)
        first = bookings.accept(entity_id, "t1", idempotency_key="accept-t1-1")
        events = len(recorder.events)
        clock.now += timedelta(seconds=30)
        again = bookings.accept(entity_id, "t1", idempotency_key="accept-t1-1")
        assert (again.snapshot, again.replayed, again.events) == (first.snapshot, True, ())
        assert not first.replayed and first.events
        assert bookings.get(entity_id).slots_filled == 1
        assert len(recorder.events) == events
        assert [h.trigger for h in bookings.history(entity_id)].count("accept") == 1
        created = bookings.create("c9", idempotency_key="create-c9")
        replayed = bookings.create("c9", idempotency_key="create-c9")
        assert (replayed.snapshot, replayed.replayed) == (created.snapshot, True)

    def test_idempotency_key_reused_for_another_command(self) -> None:
        """A key first used for one command is refused for a different one by the same actor, changing nothing."""
        lc, _, _ = self._lifecycle()
        bookings = lc.kind("booking")
        entity_id = self._active(lc, slots=3)
        bookings.accept(entity_id, "t1", idempotency_key="k-1")
        version = bookings.get(entity_id).version
        try:
            bookings.cancel(entity_id, actor="t1", idempotency_key="k-1")
        except IdempotencyKeyReused as exc:
            assert exc.key == "k-1" and "accept" in str(exc)
        else:
            raise AssertionError("a reused key was accepted for another command")
        assert bookings.get(entity_id).version == version

    def test_idempotency_key_of_another_actor_is_refused(self) -> None:
        """Another actor sending the same key is refused without learning the first outcome, which stays."""
        lc, _, _ = self._lifecycle()
        bookings = lc.kind("booking")
        entity_id = self._active(lc, slots=3)
        first = bookings.accept(entity_id, "t1", idempotency_key="shared")
        try:
            bookings.accept(entity_id, "t2", idempotency_key="shared")
        except IdempotencyKeyReused as exc:
            assert exc.key == "shared" and "another actor" in str(exc) and "t1" not in str(exc)
        else:
            raise AssertionError("another actor's key was answered with the first actor's outcome")
        holdings = {r.transporter_id: r.slots_held for r in bookings.recipients(entity_id)}
        assert holdings == {"t1": 1, "t2": 0, "t3": 0}
        again = bookings.accept(entity_id, "t1", idempotency_key="shared")
        assert (again.snapshot, again.replayed) == (first.snapshot, True)

    def test_idempotency_key_with_other_arguments_is_refused(self) -> None:
        """The same actor reusing a key with other arguments (slots, broadcast) is refused, changing nothing."""
        lc, _, _ = self._lifecycle()
        bookings = lc.kind("booking")
        entity_id = self._active(lc, slots=3)
        other = self._active(lc, slots=3, customer="c2")
        bookings.accept(entity_id, "t1", idempotency_key="k-2")
        for target, slots in ((entity_id, 2), (other, 1)):
            try:
                bookings.accept(target, "t1", slots=slots, idempotency_key="k-2")
            except IdempotencyKeyReused as exc:
                assert exc.key == "k-2"
            else:
                raise AssertionError("a key was replayed for a command with other arguments")
        assert (bookings.get(entity_id).slots_filled, bookings.get(other).slots_filled) == (1, 0)

    def test_concurrent_duplicates_apply_once(self) -> None:
        """Eight threads sending the same keyed accept at once produce one transition and one outcome."""
        lc, recorder, _ = self._lifecycle()
        entity_id = self._active(lc, slots=3)
        barrier = threading.Barrier(8)
        outcomes: list[CommandResult] = []

        def accept() -> None:
            barrier.wait()
            outcomes.append(lc.kind("booking").accept(entity_id, "t2", idempotency_key="dup"))

        threads = [threading.Thread(target=accept) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(outcomes) == 8 and len({o.snapshot for o in outcomes}) == 1
        assert sorted(o.replayed for o in outcomes) == [False] + [True] * 7
        assert lc.kind("booking").get(entity_id).slots_filled == 1
        assert recorder.names().count("BROADCAST_STATE_CHANGED") == 4

    def test_bad_inputs_get_the_same_error_on_every_store(self) -> None:
        """Each input of the bad-input table raises its error, with a message naming the argument or
        what is allowed, and changes nothing."""
        lc, recorder, _ = self._lifecycle()
        entity_id = self._active(lc)
        before, events = lc.kind("booking").history(entity_id), len(recorder.events)
        wrong: list[str] = []
        for row in (*BAD_INPUTS, *foreign_id_inputs(self.foreign_ids)):
            try:
                row.call(lc, entity_id)
            except row.error as exc:
                if row.says not in str(exc):
                    wrong.append(f"{row.label}: message {str(exc)!r} does not say {row.says!r}")
            except Exception as exc:  # reported below, with every other row that went wrong
                wrong.append(f"{row.label}: {type(exc).__name__}: {exc} (expected {row.error.__name__})")
            else:
                wrong.append(f"{row.label}: no error (expected {row.error.__name__})")
        assert not wrong, "\n".join(wrong)
        assert lc.kind("booking").history(entity_id) == before and len(recorder.events) == events

    def test_same_records_as_the_reference_store(self) -> None:
        """A fixed command script leaves the same history rows and recipients and announces the same
        events as on InMemoryStore (ids, event ids and times aside)."""
        records = []
        for store in (InMemoryStore(), self.new_store()):
            lc, recorder, clock = self._lifecycle(store)

            def advance(delta: timedelta, clock: Clock = clock) -> None:
                clock.now += delta

            created = run_script(lc, advance)
            records.append(records_of(lc, recorder, created))
        reference, found = records
        for what in reference:
            assert_same(what, reference[what], found[what])

