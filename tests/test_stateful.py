"""A hypothesis state machine that fires random commands, valid and invalid, at a few broadcasts.

After every step it checks the lifecycle's invariants from what the public API shows
(``get``, ``history``, ``recipients``, the events a recorder received), and after every command it
checks the outcome against a small independent model of the design's table (DESIGN.md).

To run the same machine on another store, subclass :class:`LifecycleMachine`, override
:meth:`LifecycleMachine.make_lifecycle` (and :meth:`LifecycleMachine.close_lifecycle` to clean up),
and expose ``TestX = MySubclass.TestCase``. ``test_stateful_stores.py`` runs it on SQLite and
PostgreSQL through every write path, against this in-memory run as a reference.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from conftest import ManualClock
from hypothesis import HealthCheck, currently_in_test_context, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
)

from broadcast_lifecycle import (
    CLOSED,
    OPEN,
    BroadcastEvent,
    BroadcastLifecycle,
    BroadcastSnapshot,
    BroadcastStatus,
    EntityId,
    HistoryEntry,
    InMemoryStore,
    InvalidArgument,
    InvalidTransition,
    KindConfig,
    KindHandle,
    OpenBroadcastExists,
    Recipient,
    RecipientRecord,
    Topic,
    TransitionRefused,
)
from broadcast_lifecycle.testing import EventRecorder

S = BroadcastStatus
KINDS = (KindConfig("booking"), KindConfig("order", one_open_per_customer=True, allow_partial_trip=True))
PARTIAL_TRIP = {k.name for k in KINDS if k.allow_partial_trip}
ONE_OPEN = {k.name for k in KINDS if k.one_open_per_customer}
TRANSPORTERS = ("t1", "t2", "t3", "t4", "t5")
CUSTOMERS = ("c1", "c2")
MAX_BROADCASTS = 4
STATE_CHANGED = "BROADCAST_STATE_CHANGED"

# The design's table (DESIGN.md), written out independently of the library's own table.
EXPIRABLE = frozenset({S.CREATED, S.BROADCASTING, S.ACTIVE, S.PARTIALLY_FILLED})
ALLOWED: dict[str, frozenset[S]] = {
    "start_broadcast": frozenset({S.CREATED}),
    "activate": frozenset({S.BROADCASTING}),
    "extend": frozenset({S.BROADCASTING, S.ACTIVE, S.PARTIALLY_FILLED}),
    "accept": frozenset({S.ACTIVE, S.PARTIALLY_FILLED}),
    "release": frozenset({S.PARTIALLY_FILLED, S.FULLY_FILLED}),
    "start_trip": frozenset({S.PARTIALLY_FILLED, S.FULLY_FILLED}),
    "complete": frozenset({S.IN_PROGRESS}),
    "cancel": frozenset({S.CREATED, S.BROADCASTING, S.ACTIVE, S.PARTIALLY_FILLED, S.FULLY_FILLED}),
    "expire": EXPIRABLE,
}
ANNOUNCED_TO_ALL = frozenset({S.FULLY_FILLED, S.EXPIRED, S.CANCELLED, S.COMPLETED})
TERMINAL = frozenset({S.COMPLETED, S.CANCELLED, S.EXPIRED})


def announced_to_all(kind: str, row: HistoryEntry) -> str | None:
    """The event a transition announces to the customer and every notified transporter, if any."""
    if row.trigger == "extend":
        return f"{kind.upper()}_EXTENDED"
    if row.trigger == "start_trip" and row.from_status is S.PARTIALLY_FILLED:
        return f"{kind.upper()}_CLOSED"
    return f"{kind.upper()}_{row.to_status.name}" if row.to_status in ANNOUNCED_TO_ALL else None

Key = tuple[str, EntityId]


def note(text: str) -> None:
    """Count ``text`` in hypothesis's statistics (``--hypothesis-show-statistics``); nothing when the
    machine runs outside hypothesis (a scripted test)."""
    if currently_in_test_context():
        hypothesis_event(text)


def make_lifecycle(clock: ManualClock, kinds: Sequence[KindConfig]) -> BroadcastLifecycle:
    """The lifecycle under test: the in-memory store."""
    return BroadcastLifecycle(InMemoryStore(), clock=clock, kinds=kinds)


class Outcome(Enum):
    """What the model expects a command to do."""

    OK = "ok"
    REFUSED = "refused"
    INVALID = "invalid"
    EXPIRED = "expired"
    """The documented overdue case: refused 'expired at ...' and the broadcast expired."""
    BAD_ARGS = "bad arguments"


@dataclass
class Tracked:
    """The test's own record of one broadcast: what it was told, not what the store says."""

    kind: str
    entity_id: EntityId
    customer: str
    notified: list[str] = field(default_factory=list)
    holdings: dict[str, int] = field(default_factory=dict)
    notified_at: dict[int, frozenset[str]] = field(default_factory=dict)
    """Transporters notified when each version was committed."""
    last_version: int = 1
    last_changed_at: datetime | None = None
    terminal_status: S | None = None


@dataclass(frozen=True)
class Observed:
    """What the public API shows about one broadcast."""

    snapshot: BroadcastSnapshot
    history: tuple[HistoryEntry, ...]
    recipients: tuple[RecipientRecord, ...]


class LifecycleMachine(RuleBasedStateMachine):
    """Random command sequences against a BroadcastLifecycle, checked after every step."""

    broadcasts: Bundle[Key] = Bundle("broadcasts")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.lifecycle = self.make_lifecycle(self.clock, KINDS)
        self.recorder = EventRecorder()
        self.disconnect_recorder: Callable[[], None] | None = self.lifecycle.bus.connect(self.recorder)
        self.tracked: dict[Key, Tracked] = {}

    # -- the store under test ---------------------------------------------------------------------

    def make_lifecycle(self, clock: ManualClock, kinds: Sequence[KindConfig]) -> BroadcastLifecycle:
        """Build the lifecycle under test; override to run the machine against another store."""
        return make_lifecycle(clock, kinds)

    def close_lifecycle(self) -> None:
        """Release what make_lifecycle acquired; override with make_lifecycle."""

    def teardown(self) -> None:
        self.close_lifecycle()

    def commands(self, kind: str) -> KindHandle:
        """Where the rules send a command of ``kind``; override to send it elsewhere too."""
        return self.lifecycle.kind(kind)

    def sweep(self, now: datetime | None, batch_size: int) -> int:
        """Run ``expire_due`` (at the clock's time when ``now`` is None); override with :meth:`commands`."""
        if now is None:
            return self.lifecycle.expire_due(batch_size=batch_size)
        return self.lifecycle.expire_due(now, batch_size=batch_size)

    # -- observing ----------------------------------------------------------------------------

    def observe(self, key: Key) -> Observed:
        """The broadcast as the public API shows it now."""
        kind, entity_id = key
        return Observed(
            self.lifecycle.kind(kind).get(entity_id),
            self.lifecycle.kind(kind).history(entity_id),
            self.lifecycle.kind(kind).recipients(entity_id),
        )

    def observe_all(self) -> dict[Key, Observed]:
        """Every tracked broadcast as the public API shows it now."""
        return {key: self.observe(key) for key in self.tracked}

    def events_of(self, key: Key) -> list[BroadcastEvent]:
        """The recorded events about one broadcast, in arrival order."""
        kind, entity_id = key
        return [e for e in self.recorder.events if e.kind == kind and e.entity_id == entity_id]

    # -- running a command and checking its outcome ------------------------------------------------

    def run(
        self, key: Key, predicted: set[Outcome], call: Callable[[], object],
        on_ok: Callable[[Observed, Observed], None] | None = None,
    ) -> Outcome:
        """Run ``call`` on ``key``, check its outcome is one of ``predicted`` and what it changed."""
        before_all = self.observe_all()
        events_before = len(self.recorder.events)
        now = self.clock.now
        outcome: Outcome
        try:
            call()
        except InvalidArgument:
            outcome = Outcome.BAD_ARGS
        except InvalidTransition:
            outcome = Outcome.INVALID
        except TransitionRefused as error:
            outcome = Outcome.EXPIRED if error.reason.startswith("expired at") else Outcome.REFUSED
            if outcome is Outcome.EXPIRED:
                deadline = before_all[key].snapshot.expires_at
                assert deadline is not None
                assert error.reason == f"expired at {deadline.isoformat()}"
        else:
            outcome = Outcome.OK
        assert outcome in predicted, f"expected {sorted(p.value for p in predicted)}, got {outcome.value}"
        note(f"outcome: {outcome.value}")
        after_all = self.observe_all()
        for other in self.tracked:
            if other != key:
                assert after_all[other] == before_all[other], f"{other} changed by a command on {key}"
        before, after = before_all[key], after_all[key]
        new_events = self.check_offers(before, after, self.recorder.events[events_before:], now)
        if outcome in (Outcome.BAD_ARGS, Outcome.INVALID, Outcome.REFUSED):
            assert after == before, f"a {outcome.value} command changed the broadcast"
            assert new_events == [], f"a {outcome.value} command emitted {[e.name for e in new_events]}"
        elif outcome is Outcome.EXPIRED:
            self.check_transition(key, before, after, new_events, now, S.EXPIRED)
            assert after.snapshot.slots_filled == before.snapshot.slots_filled
            assert after.recipients == before.recipients
        elif after.snapshot.version == before.snapshot.version:  # notify_more: no transition
            assert on_ok is not None
            on_ok(before, after)
            assert new_events == []
        else:
            self.check_transition(key, before, after, new_events, now, None)
            if on_ok is not None:
                on_ok(before, after)
        return outcome

    def check_offers(self, before: Observed, after: Observed, new_events: list[BroadcastEvent],
                     now: datetime) -> list[BroadcastEvent]:
        """Transporters a command added (and only they) were offered the broadcast, in one event at the
        broadcast's version; a transition that (re)opens the broadcast for the notified (activate, a release
        from fully_filled before the deadline) offers it again to each of them holding no slot; returns the
        command's other events."""
        known = {r.transporter_id for r in before.recipients}
        added = {Recipient("transporter", r.transporter_id) for r in after.recipients if r.transporter_id not in known}
        b, a = before.snapshot.status, after.snapshot.status
        reopened = after.snapshot.version == before.snapshot.version + 1 and (
            (b, a) == (S.BROADCASTING, S.ACTIVE) or (b is S.FULLY_FILLED and a in (S.ACTIVE, S.PARTIALLY_FILLED)
                                                     and (after.snapshot.expires_at is None
                                                          or now < after.snapshot.expires_at)))
        free = {Recipient("transporter", r.transporter_id) for r in after.recipients if r.slots_held == 0}
        expected = [group for group in (added, free if reopened else set()) if group]
        offers = [e for e in new_events if e.topic is Topic.OFFERED]
        assert len(offers) == len(expected), f"offers to {[e.recipients for e in offers]}, expected {expected}"
        for offer, group in zip(offers, expected, strict=True):
            assert set(offer.recipients) == group and len(offer.recipients) == len(group)
            assert (offer.version, offer.status) == (after.snapshot.version, after.snapshot.status)
            assert offer.payload()["expiresAt"] == (after.snapshot.expires_at.isoformat()
                                                    if after.snapshot.expires_at else None)
        return [e for e in new_events if e.topic is not Topic.OFFERED]

    def check_transition(
        self, key: Key, before: Observed, after: Observed, new_events: list[BroadcastEvent],
        now: datetime, dest: S | None,
    ) -> None:
        """One transition happened: one version, one history row, its events; record it in the model."""
        tracked = self.tracked[key]
        b, a = before.snapshot, after.snapshot
        assert a.version == b.version + 1
        assert len(after.history) == len(before.history) + 1
        assert after.history[:-1] == before.history
        row = after.history[-1]
        assert (row.from_status, row.to_status, row.version) == (b.status, a.status, a.version)
        if dest is not None:
            assert a.status is dest
        if a.status is S.EXPIRED:
            assert (row.trigger, row.actor) == ("expire", "system")
        assert a.state_changed_at == max(now, b.state_changed_at) == row.at
        expected_names = [STATE_CHANGED]
        if (to_all := announced_to_all(key[0], row)) is not None:
            expected_names.append(to_all)
        assert [e.name for e in new_events] == expected_names
        assert all((e.kind, e.entity_id, e.version) == (key[0], key[1], a.version) for e in new_events)
        tracked.notified_at[a.version] = frozenset(tracked.notified)
        note(f"reached {a.status.value}")

    def predict(self, key: Key, trigger: str, guards_pass: Callable[[BroadcastSnapshot], bool]) -> set[Outcome]:
        """The model's expectation for ``trigger`` on the broadcast now."""
        snap = self.lifecycle.kind(key[0]).get(key[1])
        now = self.clock.now
        overdue = snap.expires_at is not None and now >= snap.expires_at and snap.status in EXPIRABLE
        if trigger != "expire" and overdue:
            return {Outcome.EXPIRED}
        if snap.status not in ALLOWED[trigger]:
            return {Outcome.INVALID}
        return {Outcome.OK if guards_pass(snap) else Outcome.REFUSED}

    # -- rules: creating ------------------------------------------------------------------------

    @initialize(
        target=broadcasts,
        kind=st.sampled_from([k.name for k in KINDS]),
        slots=st.lists(st.integers(1, 3), min_size=1, max_size=2),
        expires_in=st.none() | st.integers(5, 60),
    )
    def first_broadcasts(self, kind: str, slots: list[int], expires_in: int | None) -> MultipleResults[Key]:
        """Every run starts with one or two valid broadcasts of one kind, possibly with a deadline."""
        keys = [self.create(kind, customer, n, expires_in) for customer, n in zip(CUSTOMERS, slots, strict=False)]
        assert all(isinstance(key, tuple) for key in keys)
        return multiple(*(key for key in keys if isinstance(key, tuple)))

    # -- rules: creating more ------------------------------------------------------------------------

    @rule(
        target=broadcasts,
        kind=st.sampled_from([k.name for k in KINDS]),
        customer=st.sampled_from(CUSTOMERS),
        slots=st.sampled_from([1, 2, 3, 4, 0, -1]),
        expires_in=st.none() | st.integers(-30, 180),
    )
    def create(self, kind: str, customer: str, slots: int, expires_in: int | None) -> Key | MultipleResults[Key]:
        """Create a broadcast (sometimes with a bad slot count, a past deadline, or against the open-order policy)."""
        if len(self.tracked) >= MAX_BROADCASTS:
            return multiple()
        before_all = self.observe_all()
        events_before = len(self.recorder.events)
        now = self.clock.now
        expires_at = now + timedelta(minutes=expires_in) if expires_in is not None else None
        open_same = [
            key for key, obs in before_all.items()
            if key[0] == kind and self.tracked[key].customer == customer and obs.snapshot.status not in CLOSED
        ]
        policy = next(k for k in KINDS if k.name == kind).one_open_per_customer
        try:
            snap = self.commands(kind).create(customer, slots=slots, expires_at=expires_at).snapshot
        except InvalidArgument:
            assert slots < 1 or (expires_at is not None and expires_at <= now)
            created = None
        except OpenBroadcastExists as error:
            assert slots >= 1 and policy and open_same, "OpenBroadcastExists without an open broadcast"
            assert error.customer_id == customer
            created = None
        else:
            assert slots >= 1 and not (policy and open_same)
            created = snap
        assert self.observe_all() == before_all
        new_events = self.recorder.events[events_before:]
        if created is None:
            assert new_events == []
            return multiple()
        key: Key = (kind, created.id)
        assert key not in self.tracked
        assert (created.status, created.version, created.slots_filled, created.slots_requested) == (
            S.CREATED, 1, 0, slots)
        assert created.expires_at == expires_at
        assert created.state_changed_at == created.created_at == now
        assert [(e.name, e.version, e.previous_status) for e in new_events] == [(STATE_CHANGED, 1, None)]
        self.tracked[key] = Tracked(kind, created.id, customer, notified_at={1: frozenset()})
        return key

    # -- rules: commands on a broadcast -----------------------------------------------------------------

    @rule(key=broadcasts, transporters=st.lists(st.sampled_from(TRANSPORTERS), max_size=3))
    def start_broadcast(self, key: Key, transporters: list[str]) -> None:
        """Notify transporters (an empty list is a bad argument)."""
        tracked = self.tracked[key]
        predicted = {Outcome.BAD_ARGS} if not transporters else self.predict(key, "start_broadcast", lambda s: True)

        def on_ok(before: Observed, after: Observed) -> None:
            assert after.snapshot.status is S.BROADCASTING
            unique = list(dict.fromkeys(transporters))
            assert sorted(r.transporter_id for r in after.recipients) == sorted(unique)
            tracked.notified = unique
            tracked.holdings = dict.fromkeys(unique, 0)
            tracked.notified_at[after.snapshot.version] = frozenset(unique)

        self.run(key, predicted, lambda: self.commands(key[0]).start_broadcast(key[1], transporters), on_ok)

    @rule(key=broadcasts, transporters=st.lists(st.sampled_from(TRANSPORTERS), max_size=3))
    def notify_more(self, key: Key, transporters: list[str]) -> None:
        """Add recipients while open; refused as an invalid transition otherwise."""
        tracked = self.tracked[key]
        snap = self.lifecycle.kind(key[0]).get(key[1])
        predicted: set[Outcome]
        if not transporters:
            predicted = {Outcome.BAD_ARGS}
        else:
            predicted = {Outcome.OK if snap.status in OPEN else Outcome.INVALID}
            if snap.expires_at is not None and self.clock.now >= snap.expires_at and snap.status in EXPIRABLE:
                predicted.add(Outcome.EXPIRED)  # the design lets any command treat an overdue broadcast as expired

        def on_ok(before: Observed, after: Observed) -> None:
            assert after.snapshot == before.snapshot and after.history == before.history
            added = [t for t in dict.fromkeys(transporters) if t not in tracked.notified]
            assert sorted(r.transporter_id for r in after.recipients) == sorted(tracked.notified + added)
            assert set(before.recipients) <= set(after.recipients)
            tracked.notified += added
            for transporter in added:
                tracked.holdings[transporter] = 0

        self.run(key, predicted, lambda: self.commands(key[0]).notify_more(key[1], transporters), on_ok)

    @rule(
        key=broadcasts,
        mode=st.sampled_from(["ttl", "deadline", "none", "both"]),
        minutes=st.integers(-10, 120),
    )
    def activate(self, key: Key, mode: str, minutes: int) -> None:
        """Activate with a ttl, an absolute deadline, neither, or both (a bad argument)."""
        now = self.clock.now
        ttl = timedelta(minutes=minutes) if mode in ("ttl", "both") else None
        deadline = now + timedelta(minutes=minutes) if mode in ("deadline", "both") else None
        snap = self.lifecycle.kind(key[0]).get(key[1])
        effective = deadline if deadline is not None else (now + ttl if ttl is not None else snap.expires_at)
        if mode == "both" or (ttl is not None and ttl <= timedelta(0)):
            predicted = {Outcome.BAD_ARGS}
        else:
            predicted = self.predict(key, "activate", lambda s: effective is not None and effective > now)

        def on_ok(before: Observed, after: Observed) -> None:
            assert (after.snapshot.status, after.snapshot.expires_at) == (S.ACTIVE, effective)

        self.run(key, predicted, lambda: self.commands(key[0]).activate(key[1], ttl=ttl, expires_at=deadline),
                 on_ok)

    @rule(
        key=broadcasts,
        mode=st.sampled_from(["ttl", "deadline", "deadline", "none", "both"]),
        minutes=st.integers(-10, 120),
    )
    def extend(self, key: Key, mode: str, minutes: int) -> None:
        """The customer moves the deadline (later, or not), with a ttl, an absolute deadline, neither or both."""
        now = self.clock.now
        ttl = timedelta(minutes=minutes) if mode in ("ttl", "both") else None
        deadline = now + timedelta(minutes=minutes) if mode in ("deadline", "both") else None
        effective = deadline if deadline is not None else (now + ttl if ttl is not None else None)
        if mode in ("both", "none") or (ttl is not None and ttl <= timedelta(0)):
            predicted = {Outcome.BAD_ARGS}
        else:
            predicted = self.predict(key, "extend", lambda s: (
                s.expires_at is not None and effective is not None and effective > s.expires_at))

        def on_ok(before: Observed, after: Observed) -> None:
            assert (after.snapshot.status, after.snapshot.expires_at) == (before.snapshot.status, effective)
            assert after.snapshot.slots_filled == before.snapshot.slots_filled and after.recipients == before.recipients

        self.run(key, predicted, lambda: self.commands(key[0]).extend(key[1], ttl=ttl, expires_at=deadline), on_ok)

    @rule(key=broadcasts, transporter=st.sampled_from(TRANSPORTERS), slots=st.sampled_from([1, 1, 2, 3, 4, 0, -1]))
    def accept(self, key: Key, transporter: str, slots: int) -> None:
        """A transporter (notified or not) takes some slots (possibly too many, or a bad count)."""
        tracked = self.tracked[key]
        if slots < 1:
            predicted = {Outcome.BAD_ARGS}
        else:
            predicted = self.predict(key, "accept", lambda s: (
                transporter in tracked.notified and s.slots_filled + slots <= s.slots_requested))

        def on_ok(before: Observed, after: Observed) -> None:
            b, a = before.snapshot, after.snapshot
            assert a.slots_filled == b.slots_filled + slots
            assert a.status is (S.FULLY_FILLED if a.slots_filled == a.slots_requested else S.PARTIALLY_FILLED)
            tracked.holdings[transporter] += slots

        self.run(key, predicted, lambda: self.commands(key[0]).accept(key[1], transporter, slots=slots), on_ok)

    @rule(key=broadcasts, transporter=st.sampled_from(TRANSPORTERS), slots=st.sampled_from([1, 1, 2, 3, 0, -1]))
    def release(self, key: Key, transporter: str, slots: int) -> None:
        """A transporter gives back slots it may or may not hold."""
        tracked = self.tracked[key]
        if slots < 1:
            predicted = {Outcome.BAD_ARGS}
        else:
            predicted = self.predict(key, "release", lambda s: (
                tracked.holdings.get(transporter, -1) >= slots and not self.opens_a_second(key, s)))

        def on_ok(before: Observed, after: Observed) -> None:
            b, a = before.snapshot, after.snapshot
            assert a.slots_filled == b.slots_filled - slots
            assert a.status is (S.ACTIVE if a.slots_filled == 0 else S.PARTIALLY_FILLED)
            tracked.holdings[transporter] -= slots

        self.run(key, predicted, lambda: self.commands(key[0]).release(key[1], transporter, slots=slots), on_ok)

    def opens_a_second(self, key: Key, snap: BroadcastSnapshot) -> bool:
        """Whether a release would open ``key`` (fully filled, so closed) again while its customer has
        another open broadcast of a kind that allows one: refused, as creating a second one is."""
        customer = self.tracked[key].customer
        return key[0] in ONE_OPEN and snap.status is S.FULLY_FILLED and any(
            other != key and other[0] == key[0] and tracked.customer == customer
            and self.lifecycle.kind(other[0]).get(other[1]).status not in CLOSED
            for other, tracked in self.tracked.items())

    @rule(key=broadcasts)
    def start_trip(self, key: Key) -> None:
        """Start the trip: from fully_filled, or partially_filled where the kind allows it."""
        predicted = self.predict(key, "start_trip", lambda s: (
            s.status is S.FULLY_FILLED or key[0] in PARTIAL_TRIP))
        self.run(key, predicted, lambda: self.commands(key[0]).start_trip(key[1]),
                 lambda b, a: self._expect(a, S.IN_PROGRESS))

    @rule(key=broadcasts)
    def complete(self, key: Key) -> None:
        """Finish the trip."""
        predicted = self.predict(key, "complete", lambda s: True)
        self.run(key, predicted, lambda: self.commands(key[0]).complete(key[1]),
                 lambda b, a: self._expect(a, S.COMPLETED))

    @rule(key=broadcasts)
    def cancel(self, key: Key) -> None:
        """Cancel from wherever."""
        predicted = self.predict(key, "cancel", lambda s: True)
        self.run(key, predicted, lambda: self.commands(key[0]).cancel(key[1]),
                 lambda b, a: self._expect(a, S.CANCELLED))

    @rule(key=broadcasts)
    def expire(self, key: Key) -> None:
        """Expire one broadcast, due or not."""
        now = self.clock.now
        predicted = self.predict(key, "expire", lambda s: s.expires_at is not None and now >= s.expires_at)
        self.run(key, predicted, lambda: self.commands(key[0]).expire(key[1]),
                 lambda b, a: self._expect(a, S.EXPIRED))

    @staticmethod
    def _expect(after: Observed, status: S) -> None:
        assert after.snapshot.status is status

    @rule(offset=st.none() | st.integers(-60, 60), batch_size=st.sampled_from([1, 2, 1000]))
    def expire_due(self, offset: int | None, batch_size: int) -> None:
        """Sweep overdue broadcasts, at the clock's time or an explicit one; exactly the overdue ones expire."""
        now = self.clock.now if offset is None else self.clock.now + timedelta(minutes=offset)
        before_all = self.observe_all()
        events_before = len(self.recorder.events)
        due = {
            key for key, obs in before_all.items()
            if obs.snapshot.status in EXPIRABLE and obs.snapshot.expires_at is not None
            and obs.snapshot.expires_at <= now
            # documented (BroadcastStore.expire_overdue): broadcasts stamped after ``now`` (a clock
            # that went back) wait for a later sweep; a command on them expires them at once
            and obs.snapshot.state_changed_at <= now
        }
        count = self.sweep(None if offset is None else now, batch_size)
        assert count == len(due)
        note(f"expire_due expired {min(count, 2)}{'+' if count >= 2 else ''}")
        after_all = self.observe_all()
        new_events = self.recorder.events[events_before:]
        for key in self.tracked:
            if key in due:
                mine = [e for e in new_events if (e.kind, e.entity_id) == key]
                self.check_transition(key, before_all[key], after_all[key], mine, now, S.EXPIRED)
            else:
                assert after_all[key] == before_all[key]
        assert len(new_events) == 2 * len(due)

    @rule(
        key=broadcasts,
        goal=st.sampled_from([S.BROADCASTING, S.ACTIVE, S.PARTIALLY_FILLED, S.FULLY_FILLED, S.IN_PROGRESS]),
        pick=st.integers(0, 4),
    )
    def advance(self, key: Key, goal: S, pick: int) -> None:
        """Push a broadcast along the happy path towards ``goal``, so every state is reached often."""
        for move in range(8):
            snap = self.lifecycle.kind(key[0]).get(key[1])
            notified = self.tracked[key].notified
            if snap.status is goal or snap.status in TERMINAL:
                return
            if snap.status is S.CREATED:
                self.start_broadcast(key, list(TRANSPORTERS[: pick + 1]))
            elif snap.status is S.BROADCASTING:
                self.activate(key, "ttl", 30)
            elif snap.status in (S.ACTIVE, S.PARTIALLY_FILLED):
                if goal is S.PARTIALLY_FILLED and snap.slots_open == 1:
                    return
                self.accept(key, notified[(pick + move) % len(notified)], 1)
            elif snap.status is S.FULLY_FILLED and goal is S.IN_PROGRESS:
                self.start_trip(key)
            else:
                return
            self.lifecycle_invariants()
            if self.lifecycle.kind(key[0]).get(key[1]).version == snap.version:
                return  # refused: stop here

    @rule(minutes=st.sampled_from([-90, -30, -5, 1, 5, 20, 30, 45, 90, 180]))
    def move_clock(self, minutes: int) -> None:
        """Jump the clock forward or backward."""
        self.clock.advance(timedelta(minutes=minutes))

    # -- invariants ---------------------------------------------------------------------------------

    @invariant()
    def lifecycle_invariants(self) -> None:
        """Every tracked broadcast satisfies the lifecycle's invariants."""
        for key, tracked in self.tracked.items():
            self.check_broadcast(key, tracked, self.observe(key))
        assert list(self.lifecycle.store.pending_events(1000)) == [], "a delivered event stayed in the outbox"

    def check_broadcast(self, key: Key, tracked: Tracked, obs: Observed) -> None:
        """The invariants of one broadcast."""
        snap, history = obs.snapshot, obs.history
        # version and history
        assert snap.version == len(history) >= 1
        assert [h.version for h in history] == list(range(1, snap.version + 1))
        assert (history[0].from_status, history[0].to_status, history[0].trigger) == (None, S.CREATED, "create")
        for prev, row in itertools.pairwise(history):
            assert row.from_status is prev.to_status
            assert row.from_status not in TERMINAL, "a transition left a terminal state"
            assert row.at >= prev.at
        assert history[-1].to_status is snap.status
        assert snap.state_changed_at == history[-1].at
        # monotone against what this test saw before
        assert snap.version >= tracked.last_version
        if tracked.last_changed_at is not None:
            assert snap.state_changed_at >= tracked.last_changed_at
        if tracked.terminal_status is not None:
            assert (snap.status, snap.version) == (tracked.terminal_status, tracked.last_version)
        tracked.last_version, tracked.last_changed_at = snap.version, snap.state_changed_at
        if snap.status in TERMINAL:
            tracked.terminal_status = snap.status
        # slots
        assert 0 <= snap.slots_filled <= snap.slots_requested
        if snap.status in (S.CREATED, S.BROADCASTING, S.ACTIVE):
            assert snap.slots_filled == 0
        if snap.status is S.PARTIALLY_FILLED:
            assert 0 < snap.slots_filled < snap.slots_requested
        if snap.status is S.FULLY_FILLED or (snap.status is S.IN_PROGRESS and key[0] not in PARTIAL_TRIP):
            assert snap.slots_filled == snap.slots_requested
        if snap.status is S.IN_PROGRESS:
            assert snap.slots_filled > 0
        if snap.status in (S.ACTIVE, S.PARTIALLY_FILLED, S.FULLY_FILLED):
            assert snap.expires_at is not None
        # recipients and holdings
        # compared as sets: stores order transporters notified at the same instant differently
        assert sorted(r.transporter_id for r in obs.recipients) == sorted(tracked.notified)
        assert {r.transporter_id: r.slots_held for r in obs.recipients} == tracked.holdings
        assert sum(r.slots_held for r in obs.recipients) == snap.slots_filled
        # events: one state change per version, to the customer, in order; terminal events to everyone notified
        events = self.events_of(key)
        customer = Recipient("customer", tracked.customer)
        changed = [e for e in events if e.name == STATE_CHANGED]
        assert [e.version for e in changed] == list(range(1, snap.version + 1))
        for event, row in zip(changed, history, strict=True):
            assert event.recipients == (customer,)
            assert (event.status, event.previous_status, event.state_changed_at, event.trigger, event.reason) == (
                row.to_status, row.from_status, row.at, row.trigger, row.reason)
        first = ("start_broadcast", "notify_more")
        offered = [r for e in events if e.topic is Topic.OFFERED and e.trigger in first for r in e.recipients]
        assert sorted(offered) == sorted(Recipient("transporter", t) for t in tracked.notified), "one offer each"
        by_version = {row.version: row for row in history}
        for reoffer in (e for e in events if e.topic is Topic.OFFERED and e.trigger not in first):
            row = by_version[reoffer.version]  # the transition that opened the broadcast again
            assert (row.trigger, row.from_status) in (("activate", S.BROADCASTING), ("release", S.FULLY_FILLED))
        announced = [e for e in events if e.name != STATE_CHANGED and e.topic is not Topic.OFFERED]
        expected = [(name, row.version) for row in history if (name := announced_to_all(key[0], row)) is not None]
        assert [(e.name, e.version) for e in announced] == expected
        for event in announced:
            assert set(event.recipients) == {customer} | {
                Recipient("transporter", t) for t in tracked.notified_at[event.version]
            }
            assert len(event.recipients) == len(set(event.recipients))
        assert len({e.event_id for e in events}) == len(events)


LifecycleMachine.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestInMemoryLifecycle = LifecycleMachine.TestCase
