"""``BroadcastLifecycle``: the facade a host calls. Load, decide, apply atomically, announce."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .bus import SignalBus
from .clock import Clock, require_aware, utc_now
from .decision import decide, is_overdue
from .errors import (
    ConcurrentUpdate,
    IdempotencyKeyReused,
    InvalidArgument,
    InvalidTransition,
    TransitionRefused,
)
from .guards import CommandContext, Guard
from .kinds import DEFAULT_KINDS, KindConfig
from .lifecycle import Trigger
from .outbox import OutboxRelay, RetryPolicy, deliver
from .records import BroadcastSnapshot, EntityId, HistoryEntry, RecipientRecord
from .states import OPEN
from .stores.base import BroadcastStore, Change, ChangesInPlace, Committed, DecidesUnderLock, Loaded, NewBroadcast
from .stores.memory import InMemoryStore
from .validation import require_id, require_slots, require_transporters

__all__ = ["BroadcastLifecycle"]

logger = logging.getLogger(__name__)

_IN_PLACE = frozenset({Trigger.ACCEPT, Trigger.RELEASE})

SYSTEM_ACTOR = "system"
"""The actor recorded for transitions the library makes on its own (expiry)."""


class BroadcastLifecycle:
    """Runs every command on a broadcast as a guarded, persisted, announced transition.

    Each command loads the broadcast, decides with the transition table, writes the result by
    compare-and-set (retrying a lost race up to ``max_attempts`` times, then raising
    :class:`ConcurrentUpdate`) and sends the events on ``bus`` once the write has committed. A store
    that can decide under its write lock (``DecidesUnderLock``, e.g. SQLite) does all of that in one
    transaction; one that changes in place (``ChangesInPlace``, e.g. PostgreSQL) takes accepts and
    releases with the guards in the write.
    Pass ``tx`` (e.g. a SQLAlchemy ``Session``) to write inside the caller's transaction; the
    events then leave when that transaction commits, and never if it rolls back.
    """

    def __init__(
        self,
        store: BroadcastStore | None = None,
        *,
        bus: SignalBus | None = None,
        clock: Clock = utc_now,
        kinds: Iterable[KindConfig] = DEFAULT_KINDS,
        max_attempts: int = 16,
        retry: RetryPolicy | None = None,
    ) -> None:
        if max_attempts < 1:
            raise InvalidArgument(f"max_attempts must be at least 1, got {max_attempts}")
        self.store: BroadcastStore = store if store is not None else InMemoryStore()
        self._under_lock = (self.store if isinstance(self.store, DecidesUnderLock) and self.store.decides_under_lock()
                            else None)
        # Changing in place is how a store without a decision lock avoids lost races; one with it has none.
        self._in_place = self.store if isinstance(self.store, ChangesInPlace) and self._under_lock is None else None
        self.bus = bus if bus is not None else SignalBus()
        self._clock = clock
        self._kinds = {k.name: k for k in kinds}
        self._max_attempts = max_attempts
        self.retry = retry or RetryPolicy()
        self._guards: dict[Trigger, list[Guard]] = defaultdict(list)

    def add_guard(self, trigger: Trigger, guard: Guard) -> None:
        """Run ``guard`` after the built-in guards of ``trigger``; a reason it returns refuses."""
        if Trigger(trigger) is Trigger.CREATE:
            raise InvalidArgument("create has no snapshot to guard; validate before calling create()")
        self._guards[Trigger(trigger)].append(guard)

    def kind(self, name: str) -> KindConfig:
        """The settings of kind ``name``."""
        try:
            return self._kinds[name]
        except KeyError:
            raise InvalidArgument(f"unknown kind {name!r}; known kinds: {', '.join(sorted(self._kinds))}") from None

    # -- commands --------------------------------------------------------------------------

    def create(
        self, kind: str, customer_id: str, slots: int = 1, *, entity_id: EntityId | None = None,
        expires_at: datetime | None = None, actor: str | None = None,
        metadata: Mapping[str, Any] | None = None, tx: object = None, idempotency_key: str | None = None,
    ) -> BroadcastSnapshot:
        """Create a broadcast of ``slots`` slots for ``customer_id`` in state ``created``.

        Repeating a create with the same ``idempotency_key`` returns the first one's snapshot.
        """
        config = self.kind(kind)
        require_id("customer_id", customer_id)
        require_slots("slots", slots)
        now = self._now()
        deadline = require_aware("expires_at", expires_at) if expires_at is not None else None
        if deadline is not None and deadline <= now:
            raise InvalidArgument(f"expires_at must be in the future, got {deadline.isoformat()} (now {now})")
        new = NewBroadcast(
            config, customer_id, slots, now, entity_id, deadline,
            actor if actor is not None else customer_id, dict(metadata or {}), idempotency_key,
        )
        if idempotency_key is not None and (first := self._recall(idempotency_key, kind, None, "create", tx)):
            return first
        try:
            return self.store.insert(new, self._announce, tx).snapshot
        except IdempotencyKeyReused:
            if idempotency_key is not None and (first := self._recall(idempotency_key, kind, None, "create", tx)):
                return first
            raise

    def start_broadcast(self, kind: str, entity_id: EntityId, transporters: Sequence[str], *,
                        actor: str | None = None, tx: object = None,
                        idempotency_key: str | None = None) -> BroadcastSnapshot:
        """Notify ``transporters`` (recorded as recipients): created -> broadcasting."""
        return self._run(kind, entity_id, Trigger.START_BROADCAST, actor=actor, tx=tx,
                         recipients=require_transporters(transporters), idempotency_key=idempotency_key)

    def notify_more(self, kind: str, entity_id: EntityId, transporters: Sequence[str], *,
                    tx: object = None) -> BroadcastSnapshot:
        """Add recipients while the broadcast is open (radius expansion); changes no state.

        On an overdue broadcast it expires it instead and raises ``TransitionRefused("expired at ...")``.
        """
        self.kind(kind)
        added = require_transporters(transporters)
        current = self.get(kind, entity_id, tx=tx)
        now = self._now()
        if current.status in OPEN and current.expires_at is not None and is_overdue(current, now):
            self._run(kind, entity_id, Trigger.EXPIRE, actor=SYSTEM_ACTOR, tx=tx)
            raise TransitionRefused(kind, entity_id, current.status.value, "notify_more",
                                    f"expired at {current.expires_at.isoformat()}")
        snapshot = self.store.add_recipients(kind, entity_id, added, now, OPEN, tx)
        if snapshot.status not in OPEN:
            raise InvalidTransition(kind, entity_id, snapshot.status.value, "notify_more", (s.value for s in OPEN))
        return snapshot

    def activate(self, kind: str, entity_id: EntityId, *, ttl: timedelta | None = None,
                 deadline: datetime | None = None, actor: str | None = None,
                 tx: object = None,
                 idempotency_key: str | None = None) -> BroadcastSnapshot:
        """Open for acceptances until ``deadline`` (or now + ``ttl``, or the kind's default ttl)."""
        if ttl is not None and deadline is not None:
            raise InvalidArgument("pass ttl= or deadline=, not both")
        if ttl is not None and ttl <= timedelta(0):
            raise InvalidArgument(f"ttl must be positive, got {ttl}")
        fixed = require_aware("deadline", deadline) if deadline is not None else None
        return self._run(kind, entity_id, Trigger.ACTIVATE, actor=actor, tx=tx, deadline=fixed, ttl=ttl,
                         idempotency_key=idempotency_key)

    def accept(self, kind: str, entity_id: EntityId, transporter_id: str, slots: int = 1, *,
               tx: object = None,
               idempotency_key: str | None = None) -> BroadcastSnapshot:
        """``transporter_id`` takes ``slots`` slots: -> partially_filled or fully_filled."""
        require_id("transporter_id", transporter_id)
        require_slots("slots", slots)
        return self._run(kind, entity_id, Trigger.ACCEPT, actor=transporter_id, tx=tx,
                         transporter_id=transporter_id, slots=slots, idempotency_key=idempotency_key)

    def release(self, kind: str, entity_id: EntityId, transporter_id: str, slots: int = 1, *,
                reason: str | None = None, tx: object = None,
                idempotency_key: str | None = None) -> BroadcastSnapshot:
        """``transporter_id`` gives back ``slots`` slots: -> partially_filled or active."""
        require_id("transporter_id", transporter_id)
        require_slots("slots", slots)
        return self._run(kind, entity_id, Trigger.RELEASE, actor=transporter_id, reason=reason, tx=tx,
                         transporter_id=transporter_id, slots=slots, idempotency_key=idempotency_key)

    def start_trip(self, kind: str, entity_id: EntityId, *, actor: str | None = None,
                   tx: object = None,
                   idempotency_key: str | None = None) -> BroadcastSnapshot:
        """The trip begins: fully_filled (or partially_filled, if the kind allows) -> in_progress."""
        return self._run(kind, entity_id, Trigger.START_TRIP, actor=actor, tx=tx, idempotency_key=idempotency_key)

    def complete(self, kind: str, entity_id: EntityId, *, actor: str | None = None,
                 tx: object = None,
                 idempotency_key: str | None = None) -> BroadcastSnapshot:
        """The trip finished: in_progress -> completed."""
        return self._run(kind, entity_id, Trigger.COMPLETE, actor=actor, tx=tx, idempotency_key=idempotency_key)

    def cancel(self, kind: str, entity_id: EntityId, *, actor: str | None = None, reason: str | None = None,
               metadata: Mapping[str, Any] | None = None, tx: object = None,
               idempotency_key: str | None = None) -> BroadcastSnapshot:
        """Cancel a broadcast that has not started its trip; ``reason`` and ``metadata`` go to the history."""
        return self._run(kind, entity_id, Trigger.CANCEL, actor=actor, reason=reason, metadata=metadata, tx=tx,
                         idempotency_key=idempotency_key)

    def expire(self, kind: str, entity_id: EntityId, *, now: datetime | None = None,
               tx: object = None) -> BroadcastSnapshot:
        """Expire a broadcast whose deadline has passed (by ``now``, default the clock's time)."""
        at = require_aware("now", now) if now is not None else None
        return self._run(kind, entity_id, Trigger.EXPIRE, actor=SYSTEM_ACTOR, tx=tx, now=at)

    def expire_due(self, now: datetime | None = None, batch_size: int = 1000) -> int:
        """Expire every overdue broadcast, set-wise, batch by batch; returns how many this call expired.

        Safe to run in several processes at once. Events of the expired broadcasts are dispatched
        after each batch commits when this process has receivers; otherwise the relay delivers them.
        """
        if batch_size < 1:
            raise InvalidArgument(f"batch_size must be at least 1, got {batch_size}")
        cutoff = require_aware("now", now) if now is not None else self._now()
        expired = 0
        listening = self.bus.has_receivers()
        for kind in self._kinds.values():
            while True:
                batch = self.store.expire_overdue(kind, cutoff, batch_size, SYSTEM_ACTOR, listening)
                expired += batch.count
                if batch.count and listening:
                    deliver(self.store, self.bus, ((event, 0) for event in batch.load_events()), self.retry,
                            self._now)
                if batch.count < batch_size:
                    break
        return expired

    # -- queries ---------------------------------------------------------------------------

    def get(self, kind: str, entity_id: EntityId, *, tx: object = None) -> BroadcastSnapshot:
        """The broadcast as last committed."""
        self.kind(kind)
        return self.store.load(kind, entity_id, tx=tx).snapshot

    def history(self, kind: str, entity_id: EntityId, *, tx: object = None) -> tuple[HistoryEntry, ...]:
        """The broadcast's transitions, oldest first."""
        self.kind(kind)
        return self.store.history(kind, entity_id, tx)

    def recipients(self, kind: str, entity_id: EntityId, *, tx: object = None) -> tuple[RecipientRecord, ...]:
        """Transporters notified of the broadcast, with the slots they hold."""
        self.kind(kind)
        return self.store.recipients(kind, entity_id, tx)

    # -- internals -------------------------------------------------------------------------

    def _run(
        self, kind: str, entity_id: EntityId, trigger: Trigger, *, actor: str | None = None,
        reason: str | None = None, metadata: Mapping[str, Any] | None = None, tx: object = None,
        transporter_id: str | None = None,
        slots: int = 1, recipients: tuple[str, ...] = (), deadline: datetime | None = None,
        ttl: timedelta | None = None, now: datetime | None = None, idempotency_key: str | None = None,
    ) -> BroadcastSnapshot:
        config = self.kind(kind)
        if (trigger in _IN_PLACE and transporter_id is not None and tx is None and idempotency_key is None
                and reason is None and not self._guards.get(trigger) and self._in_place is not None):
            # The hot path: guards in the write itself, no read and no lost race (see ChangesInPlace).
            done = self._in_place.change_in_place(config, trigger, entity_id, transporter_id, slots, self._now(),
                                                  self._announce)
            if isinstance(done, Committed):
                return done.snapshot
            found = done  # declined: decide on the row as the store found it, without reading it again
        else:
            found = None
        command = _Command(config, trigger, actor, reason, metadata or {}, transporter_id, slots, recipients,
                           deadline, ttl, now, idempotency_key)
        planned: list[Change] = []

        def plan(loaded: Loaded) -> Change:
            planned.append(self._plan(command, loaded))
            return planned[-1]

        for _ in range(self._max_attempts):
            if idempotency_key is not None and (
                    first := self._recall(idempotency_key, kind, entity_id, trigger.value, tx)):
                return first
            try:
                if self._under_lock is not None:
                    committed = self._under_lock.decide_and_apply(kind, entity_id, transporter_id, plan,
                                                                  self._announce, tx)
                else:
                    plan(found or self.store.load(kind, entity_id, transporter_id, tx))
                    found = None
                    committed = self.store.apply(planned[-1], self._announce, tx)
            except IdempotencyKeyReused:
                if idempotency_key is None:
                    raise
                continue  # a concurrent duplicate recorded it first: recall it on the next pass
            if committed is None:
                continue
            change = planned[-1]
            if change.decision.superseded is not None and change.before.expires_at is not None:
                raise TransitionRefused(kind, entity_id, change.before.status.value, trigger.value,
                                        f"expired at {change.before.expires_at.isoformat()}")
            return committed.snapshot
        raise ConcurrentUpdate(kind, entity_id, trigger.value, self._max_attempts)

    def _plan(self, command: _Command, loaded: Loaded) -> Change:
        """Decide ``command`` on the broadcast as loaded: the change to apply, or the refusal raised."""
        before = loaded.snapshot
        config, trigger, deadline = command.config, command.trigger, command.deadline
        at = command.now if command.now is not None else self._now()
        if trigger is Trigger.ACTIVATE:
            deadline = _deadline(at, deadline, command.ttl, before.expires_at, config.default_ttl)
        ctx = CommandContext(at, command.slots, command.transporter_id, loaded.holding, deadline,
                             config.allow_partial_trip)
        decision = decide(before, trigger, ctx, self._guards.get(trigger, ()))
        stamp = max(at, before.state_changed_at)
        if decision.superseded is not None:
            return Change(config, before, decision, stamp, SYSTEM_ACTOR,
                          f"deadline passed before {trigger.value} by {command.actor or 'unknown'}")
        return Change(config, before, decision, stamp, command.actor, command.reason, command.metadata,
                      command.transporter_id, command.recipients, command.idempotency_key)

    def relay(self, *, grace: timedelta = timedelta(seconds=10), lease: timedelta = timedelta(minutes=2),
              batch_size: int = 200) -> OutboxRelay:
        """An outbox relay on this lifecycle's store, bus, clock and retry policy."""
        return OutboxRelay(self.store, self.bus, self._now, policy=self.retry, grace=grace, lease=lease,
                           batch_size=batch_size)

    def _recall(self, key: str, kind: str, entity_id: EntityId | None, trigger: str,
                tx: object) -> BroadcastSnapshot | None:
        """The first outcome recorded under ``key``, if it was this same command."""
        first = self.store.recall(key, tx)
        if first is None:
            return None
        snap = first.snapshot
        if (snap.kind, first.trigger) != (kind, trigger) or (entity_id is not None and snap.id != entity_id):
            raise IdempotencyKeyReused(key, f"was first used for {first.trigger} on {snap.kind} {snap.id!r}")
        return snap

    def _announce(self, committed: Committed) -> None:
        """Send a committed write's events; the outbox keeps what was not delivered, for the relay."""
        if not self.bus.has_receivers():
            return  # nobody here listens: the events stay pending for a relay where receivers are
        deliver(self.store, self.bus, ((event, 0) for event in committed.events), self.retry, self._now)

    def _now(self) -> datetime:
        return require_aware("the clock's time", self._clock())


@dataclass(frozen=True, slots=True)
class _Command:
    """A command's arguments, as :meth:`BroadcastLifecycle._plan` needs them on each attempt."""

    config: KindConfig
    trigger: Trigger
    actor: str | None
    reason: str | None
    metadata: Mapping[str, Any]
    transporter_id: str | None
    slots: int
    recipients: tuple[str, ...]
    deadline: datetime | None
    ttl: timedelta | None
    now: datetime | None
    idempotency_key: str | None


def _deadline(now: datetime, deadline: datetime | None, ttl: timedelta | None,
              current: datetime | None, default_ttl: timedelta | None) -> datetime | None:
    if deadline is not None:
        return deadline
    if ttl is not None:
        return now + ttl
    if current is not None:
        return current
    return now + default_ttl if default_ttl is not None else None
