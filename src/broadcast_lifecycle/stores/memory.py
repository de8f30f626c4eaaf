"""``InMemoryStore``: the reference store, thread-safe, for tests and single-process use."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from .._quick import quick_constructor
from ..errors import (
    BroadcastNotFound,
    DuplicateBroadcast,
    IdempotencyKeyReused,
    InvalidArgument,
    OpenBroadcastExists,
)
from ..events import BroadcastEvent
from ..expiry import Expiry, is_due
from ..kinds import KindConfig
from ..records import BroadcastSnapshot, EntityId, HistoryEntry, IdempotentOutcome, RecipientRecord
from ..states import CLOSED, TERMINAL
from ..validation import is_entity_id
from .base import (
    AfterCommit,
    Change,
    Committed,
    ExpiredBatch,
    Loaded,
    NewBroadcast,
    NewRecipients,
    OutboxEntry,
    PruneTarget,
)
from .outbox_state import DeadLetter, DeliveryAttempt, ReceiverDelivery

__all__ = ["InMemoryStore"]

_Key = tuple[str, EntityId]

_entry = quick_constructor(OutboxEntry)
_committed = quick_constructor(Committed)
_loaded = quick_constructor(Loaded)
_recipient = quick_constructor(RecipientRecord)


class InMemoryStore:
    """Keeps everything in dicts behind one lock; every write is atomic and all-or-nothing.

    It cannot join a host transaction: pass ``tx=None`` (the default).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._broadcasts: dict[_Key, BroadcastSnapshot] = {}
        self._recipients: dict[_Key, dict[str, RecipientRecord]] = {}
        self._history: dict[_Key, list[HistoryEntry]] = {}
        self._outbox: dict[str, OutboxEntry] = {}  # pending and dead entries: a delivered one is dropped
        self._receivers: dict[str, dict[str, ReceiverDelivery]] = {}  # event id -> receiver -> state
        self._keys: dict[str, IdempotentOutcome] = {}
        self._key_times: dict[str, datetime] = {}

    def recall(self, key: str, tx: object = None) -> IdempotentOutcome | None:
        """See :meth:`BroadcastStore.recall`."""
        _no_tx(tx)
        with self._lock:
            return self._keys.get(key)

    def insert(self, new: NewBroadcast, after_commit: AfterCommit, tx: object = None) -> Committed:
        """See :meth:`BroadcastStore.insert`."""
        _no_tx(tx)
        if new.columns:
            raise InvalidArgument("columns= needs a store with host models (SQLAlchemyStore(models=...)); "
                                  "InMemoryStore keeps no columns of yours")
        with self._lock:
            entity_id = new.entity_id if new.entity_id is not None else self._next_id(new.kind.name)
            key = (new.kind.name, entity_id)
            if new.idempotency_key in self._keys:
                raise IdempotencyKeyReused(new.idempotency_key, "is already recorded")
            if key in self._broadcasts:
                raise DuplicateBroadcast(new.kind.name, entity_id)
            if new.kind.one_open_per_customer and any(
                s.kind == new.kind.name and s.customer_id == new.customer_id and s.status not in CLOSED
                for s in self._broadcasts.values()
            ):
                raise OpenBroadcastExists(new.kind.name, new.customer_id)
            snapshot = new.snapshot(entity_id)
            events = new.events(snapshot)
            self._broadcasts[key] = snapshot
            self._recipients[key] = {}
            self._history[key] = [new.history_entry(entity_id)]
            if (outcome := new.outcome(snapshot)) is not None:
                self._keys[outcome.key] = outcome
                self._key_times[outcome.key] = new.at
            self._outbox.update((e.event_id, _entry(e, new.at)) for e in events)
        committed = _committed(snapshot, events)
        after_commit(committed)
        return committed

    def load(self, kind: str, entity_id: EntityId, transporter_id: str | None = None,
             tx: object = None) -> Loaded:
        """See :meth:`BroadcastStore.load`."""
        _no_tx(tx)
        with self._lock:
            snapshot = self._get((kind, entity_id))
            holder = self._recipients[(kind, entity_id)].get(transporter_id or "")
        return _loaded(snapshot, holder.slots_held if holder else None)

    def apply(self, change: Change, after_commit: AfterCommit, tx: object = None) -> Committed | None:
        """See :meth:`BroadcastStore.apply`."""
        _no_tx(tx)
        key = (change.before.kind, change.before.id)
        with self._lock:
            if self._get(key).version != change.before.version:
                return None
            if change.idempotency_key in self._keys:
                raise IdempotencyKeyReused(change.idempotency_key, "is already recorded")
            after = change.after()
            if change.kind.one_open_per_customer and change.before.status in CLOSED and after.status not in CLOSED:
                self._refuse_a_second_open(change)
            recipients = self._recipients[key]
            for transporter in change.recipients:
                recipients.setdefault(transporter, _recipient(transporter, change.at))
            if change.transporter_id is not None and change.decision.fill_delta:
                holder = recipients[change.transporter_id]
                recipients[change.transporter_id] = _recipient(
                    holder.transporter_id, holder.notified_at, holder.slots_held + change.decision.fill_delta,
                    change.decision.trigger.value)
            events = (change.events(after, _in_order(recipients), _holders(recipients)) if change.needs_recipients
                      else change.events(after, ()))
            self._broadcasts[key] = after
            self._history[key].append(change.history_entry())
            outbox, at = self._outbox, change.at
            for event in events:
                outbox[event.event_id] = _entry(event, at)
            if (outcome := change.outcome(after)) is not None:
                self._keys[outcome.key] = outcome
                self._key_times[outcome.key] = change.at
        committed = _committed(after, events)
        after_commit(committed)
        return committed

    def add_recipients(self, new: NewRecipients, after_commit: AfterCommit, tx: object = None) -> Committed:
        """See :meth:`BroadcastStore.add_recipients`."""
        _no_tx(tx)
        key = (new.kind.name, new.entity_id)
        events: tuple[BroadcastEvent, ...] = ()
        with self._lock:
            snapshot = self._get(key)
            if snapshot.status in new.open_states:
                recipients = self._recipients[key]
                added = [t for t in new.transporters if t not in recipients]
                for transporter in added:
                    recipients[transporter] = _recipient(transporter, new.at)
                events = new.events(snapshot, added)
                self._outbox.update((e.event_id, _entry(e, new.at)) for e in events)
        committed = _committed(snapshot, events)
        if events:
            after_commit(committed)
        return committed

    def recipients(self, kind: str, entity_id: EntityId, tx: object = None) -> tuple[RecipientRecord, ...]:
        """See :meth:`BroadcastStore.recipients`."""
        _no_tx(tx)
        with self._lock:
            self._get((kind, entity_id))
            recipients = self._recipients[(kind, entity_id)]
            return tuple(recipients[transporter] for transporter in _in_order(recipients))

    def history(self, kind: str, entity_id: EntityId, tx: object = None) -> tuple[HistoryEntry, ...]:
        """See :meth:`BroadcastStore.history`."""
        _no_tx(tx)
        with self._lock:
            self._get((kind, entity_id))
            return tuple(self._history[(kind, entity_id)])

    def expire_overdue(self, kind: KindConfig, now: datetime, limit: int, actor: str,
                       with_events: bool = True) -> ExpiredBatch:
        """See :meth:`BroadcastStore.expire_overdue`."""
        events: list[BroadcastEvent] = []
        count = 0
        with self._lock:
            for key, before in list(self._broadcasts.items()):
                if count == limit:
                    break
                if key[0] != kind.name or not is_due(before, now):
                    continue
                expiry = Expiry(kind=kind, before=before, at=now, actor=actor)
                batch = expiry.events(_in_order(self._recipients[key]))
                self._broadcasts[key] = expiry.after()
                self._history[key].append(expiry.history_entry())
                self._outbox.update((e.event_id, _entry(e, now)) for e in batch)
                events += batch
                count += 1
        return ExpiredBatch(count, lambda: events)

    def pending_events(self, limit: int, created_before: datetime | None = None) -> Sequence[OutboxEntry]:
        """See :meth:`BroadcastStore.pending_events`."""
        with self._lock:
            return [
                self._with_receivers(entry) for entry in self._outbox.values()
                if _live(entry) and (created_before is None or entry.created_at < created_before)
            ][:limit]

    def claim_events(self, now: datetime, limit: int, created_before: datetime,
                     lease_until: datetime) -> Sequence[OutboxEntry]:
        """See :meth:`BroadcastStore.claim_events`."""
        with self._lock:
            due = [
                entry for entry in self._outbox.values()
                if _live(entry) and entry.created_at < created_before
                and (entry.next_attempt_at is None or entry.next_attempt_at <= now)
            ][:limit]
            for entry in due:
                self._outbox[entry.event.event_id] = replace(entry, next_attempt_at=lease_until)
            return [self._with_receivers(entry) for entry in due]

    def mark_delivered(self, event_ids: Sequence[str], at: datetime) -> None:
        """See :meth:`BroadcastStore.mark_delivered`; delivered entries are dropped at once (nothing
        here reads them again), so this store has no delivered events to prune."""
        with self._lock:
            for event_id in event_ids:
                self._outbox.pop(event_id, None)
                self._receivers.pop(event_id, None)

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        """See :meth:`BroadcastStore.record_attempt`."""
        with self._lock:
            entry = self._outbox.get(attempt.event_id)
            if entry is None:
                return
            if attempt.outcome == "delivered":
                del self._outbox[attempt.event_id]
                self._receivers.pop(attempt.event_id, None)
                return
            states = self._receivers.setdefault(attempt.event_id, {})
            states.update((state.receiver, state) for state in attempt.receivers)
            failed = attempt.failed
            self._outbox[attempt.event_id] = replace(
                entry, attempts=entry.attempts + (1 if failed else 0),
                last_error=attempt.error if failed else entry.last_error,
                next_attempt_at=attempt.next_attempt_at, dead_at=attempt.at if attempt.outcome == "dead" else None)

    def dead_letters(self, limit: int) -> Sequence[DeadLetter]:
        """See :meth:`BroadcastStore.dead_letters`."""
        with self._lock:
            letters = [
                DeadLetter(event=self._outbox[event_id].event, receiver=state.receiver, attempts=state.attempts,
                           last_error=state.last_error, dead_at=state.dead_at,
                           created_at=self._outbox[event_id].created_at)
                for event_id, states in self._receivers.items() for state in states.values()
                if state.dead_at is not None
            ]
        return sorted(letters, key=lambda letter: letter.dead_at, reverse=True)[:limit]

    def prune(self, target: PruneTarget, before: datetime, limit: int) -> int:
        """See :meth:`BroadcastStore.prune`."""
        with self._lock:
            if target is PruneTarget.OUTBOX:
                return 0  # delivered events were dropped when delivered
            if target is PruneTarget.IDEMPOTENCY:
                gone = [idem for idem, at in self._key_times.items() if at < before][:limit]
                for idem in gone:
                    del self._keys[idem]
                    del self._key_times[idem]
                return len(gone)
            done = [key for key, snapshot in self._broadcasts.items()
                    if snapshot.status in TERMINAL and snapshot.state_changed_at < before
                    and self._history[key]][:limit]
            for key in done:
                self._history[key] = []
            return len(done)

    def _with_receivers(self, entry: OutboxEntry) -> OutboxEntry:
        states = self._receivers.get(entry.event.event_id)
        return replace(entry, receivers=tuple(states.values())) if states else entry

    def _refuse_a_second_open(self, change: Change) -> None:
        """``OpenBroadcastExists`` when ``change`` opens its broadcast again while the customer has
        another open one (as the SQL store's partial unique index refuses it)."""
        before = change.before
        if any(s.kind == before.kind and s.customer_id == before.customer_id and s.status not in CLOSED
               and s.id != before.id for s in self._broadcasts.values()):
            raise OpenBroadcastExists(before.kind, before.customer_id, entity_id=before.id,
                                      from_state=before.status.value, trigger=change.decision.trigger.value)

    def _next_id(self, kind: str) -> int:
        """The next automatic id that no broadcast of ``kind`` holds (a host may have taken some explicitly)."""
        candidate = next(self._ids)
        while (kind, candidate) in self._broadcasts:
            candidate = next(self._ids)
        return candidate

    def _get(self, key: _Key) -> BroadcastSnapshot:
        snapshot = self._broadcasts.get(key) if is_entity_id(key[1]) else None  # True is no alias of 1 here
        if snapshot is None:
            raise BroadcastNotFound(*key)
        return snapshot


def _holders(recipients: dict[str, RecipientRecord]) -> frozenset[str]:
    """The transporters holding at least one slot."""
    return frozenset(t for t, record in recipients.items() if record.slots_held > 0)


def _in_order(recipients: dict[str, RecipientRecord]) -> tuple[str, ...]:
    """Transporter ids in notification order, ties by id: the order every store lists them in."""
    return tuple(sorted(recipients, key=lambda t: (recipients[t].notified_at, t)))


def _live(entry: OutboxEntry) -> bool:
    return entry.delivered_at is None and entry.dead_at is None


def _no_tx(tx: object) -> None:
    if tx is not None:
        raise InvalidArgument("InMemoryStore cannot join a host transaction; pass tx=None")
