"""Deliberately wrong stores: each is the reference store with one planted bug, and names the
contract test that must catch it (``caught_by``). tests/test_contract_catches.py runs the whole
contract on each and asserts it fails there. A new invariant in the contract comes with a new store
here that breaks only it.

Bugs that are races widen their window with :func:`_gap` (a real store's window is as wide as its
I/O), so the contract's races see them every time rather than once in a while.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, ClassVar
from uuid import UUID, uuid4

from broadcast_lifecycle import (
    BroadcastEvent,
    BroadcastSnapshot,
    BroadcastStatus,
    EntityId,
    HistoryEntry,
    KindConfig,
    Recipient,
    RecipientRecord,
    Topic,
)
from broadcast_lifecycle.stores import (
    EXPIRABLE,
    AfterCommit,
    Change,
    Committed,
    DeadLetter,
    DeliveryAttempt,
    ExpiredBatch,
    InMemoryStore,
    Loaded,
    NewBroadcast,
    NewRecipients,
    OutboxEntry,
    PruneTarget,
    is_due,
)


def _gap() -> None:
    """The moment a racy store leaves between what it checked and what it writes."""
    time.sleep(0.002)


class WrongStore(InMemoryStore):
    """An InMemoryStore with one planted bug."""

    caught_by: ClassVar[str]
    """The contract test that must fail on this store."""


# -- the compare-and-set ------------------------------------------------------------------------


class OutboxOnLostRace(WrongStore):
    """Writes the change's events to the outbox even when its compare-and-set lost (phantom events)."""

    caught_by = "test_lost_race_writes_nothing_anywhere"

    def apply(self, change: Change, after_commit: AfterCommit, tx: object = None) -> Committed | None:
        committed = super().apply(change, after_commit, tx)
        if committed is None:
            with self._lock:
                self._outbox.update((e.event_id, OutboxEntry(e, change.at)) for e in change.events(change.after(), ()))
        return committed


class HistoryOnLostRace(WrongStore):
    """Appends the history row of a change whose compare-and-set lost."""

    caught_by = "test_lost_race_writes_nothing_anywhere"

    def apply(self, change: Change, after_commit: AfterCommit, tx: object = None) -> Committed | None:
        committed = super().apply(change, after_commit, tx)
        if committed is None:
            with self._lock:
                self._history[(change.before.kind, change.before.id)].append(change.history_entry())
        return committed


class KeyOnLostRace(WrongStore):
    """Records the idempotency key of a change whose compare-and-set lost."""

    caught_by = "test_lost_race_writes_nothing_anywhere"

    def apply(self, change: Change, after_commit: AfterCommit, tx: object = None) -> Committed | None:
        committed = super().apply(change, after_commit, tx)
        if committed is None and (outcome := change.outcome(change.after())) is not None:
            with self._lock:
                self._keys[outcome.key] = outcome
        return committed


class IgnoresTheHostTransaction(WrongStore):
    """Takes any ``tx`` and commits on its own: the host believes the write joined its transaction."""

    caught_by = "test_a_transaction_the_store_cannot_join_is_refused"

    def insert(self, new: NewBroadcast, after_commit: AfterCommit, tx: object = None) -> Committed:
        return super().insert(new, after_commit)

    def apply(self, change: Change, after_commit: AfterCommit, tx: object = None) -> Committed | None:
        return super().apply(change, after_commit)

    def load(self, kind: str, entity_id: EntityId, transporter_id: str | None = None, tx: object = None) -> Loaded:
        return super().load(kind, entity_id, transporter_id)


class UnlockedCompareAndSet(WrongStore):
    """Checks the version, lets go of the lock, then writes: concurrent writers all win."""

    caught_by = "test_concurrent_accepts_never_overfill"

    def apply(self, change: Change, after_commit: AfterCommit, tx: object = None) -> Committed | None:
        if self.load(change.before.kind, change.before.id).snapshot.version != change.before.version:
            return None
        _gap()
        with self._lock:  # the write no longer checks: it forces the version the decision saw
            key = (change.before.kind, change.before.id)
            self._broadcasts[key] = replace(self._broadcasts[key], version=change.before.version)
        return super().apply(change, after_commit, tx)


# -- the sweeper ---------------------------------------------------------------------------------


class _HandSweeper(WrongStore):
    """A sweeper written by hand, as a store author might before the core's ``Expiry`` existed;
    each subclass gets one part of it wrong."""

    def due(self, before: BroadcastSnapshot, now: datetime, kind: KindConfig) -> bool:
        return before.kind == kind.name and is_due(before, now)

    def expire_overdue(self, kind: KindConfig, now: datetime, limit: int, actor: str,
                       with_events: bool = True) -> ExpiredBatch:
        with self._lock:
            due = self.pick(kind, now, limit)
            events = self.expire_all(kind, due, now, actor)
        return ExpiredBatch(len(due), lambda: events)

    def pick(self, kind: KindConfig, now: datetime, limit: int) -> list[tuple[str, EntityId]]:
        return [key for key, before in self._broadcasts.items() if self.due(before, now, kind)][:self.limit(limit)]

    def limit(self, limit: int) -> int:
        return limit

    def expire_all(self, kind: KindConfig, due: list[tuple[str, EntityId]], now: datetime,
                   actor: str) -> list[BroadcastEvent]:
        return [event for key in due for event in self.expire(kind, key, now, actor)]

    def expire(self, kind: KindConfig, key: tuple[str, EntityId], now: datetime, actor: str) -> list[BroadcastEvent]:
        before = self._broadcasts[key]
        after = replace(before, status=BroadcastStatus.EXPIRED, version=before.version + 1,
                        state_changed_at=self.stamp(before, now))
        transporters = sorted(self._recipients[key], key=lambda t: (self._recipients[key][t].notified_at, t))
        events = [self.event(kind, after, before, Topic.STATE_CHANGED, ()),
                  self.event(kind, after, before, Topic.EXPIRED, self.told(transporters))]
        self._broadcasts[key] = after
        self.write_history(key, HistoryEntry(before.kind, before.id, before.status, BroadcastStatus.EXPIRED, "expire",
                                             actor, "deadline passed", now, after.version, {}))
        self.write_outbox(events, now)
        return events

    def stamp(self, before: BroadcastSnapshot, now: datetime) -> datetime:
        return now

    def told(self, transporters: list[str]) -> tuple[str, ...]:
        return tuple(transporters)

    def write_history(self, key: tuple[str, EntityId], entry: HistoryEntry) -> None:
        self._history[key].append(entry)

    def write_outbox(self, events: list[BroadcastEvent], now: datetime) -> None:
        self._outbox.update((e.event_id, OutboxEntry(e, now)) for e in events)

    @staticmethod
    def event(kind: KindConfig, after: BroadcastSnapshot, before: BroadcastSnapshot, topic: Topic,
              transporters: Sequence[str]) -> BroadcastEvent:
        recipients = (Recipient("customer", after.customer_id), *(Recipient("transporter", t) for t in transporters))
        return BroadcastEvent(event_id=str(uuid4()),
                              name=kind.event_name(topic), topic=topic, kind=after.kind, id_field=kind.id_field,
                              entity_id=after.id, recipients=recipients, status=after.status,
                              previous_status=before.status, state_changed_at=after.state_changed_at,
                              version=after.version, slots_filled=after.slots_filled,
                              slots_requested=after.slots_requested, expires_at=after.expires_at, trigger="expire",
                              reason="deadline passed")


class HandSweeper(_HandSweeper):
    """The hand-written sweeper with nothing wrong (a control: the contract passes it)."""

    caught_by = ""


class SweepsWithoutDeadline(_HandSweeper):
    """Expires broadcasts that have no deadline at all."""

    caught_by = "test_sweep_takes_only_overdue_broadcasts_with_a_deadline"

    def due(self, before: BroadcastSnapshot, now: datetime, kind: KindConfig) -> bool:
        return before.kind == kind.name and before.status in EXPIRABLE and (
            before.expires_at is None or now >= before.expires_at)


class SweepsClosed(_HandSweeper):
    """Expires every broadcast whose deadline passed, filled, in progress or terminal alike."""

    caught_by = "test_sweep_takes_only_overdue_broadcasts_with_a_deadline"

    def due(self, before: BroadcastSnapshot, now: datetime, kind: KindConfig) -> bool:
        return before.kind == kind.name and before.expires_at is not None and now >= before.expires_at


class SweepsEarly(_HandSweeper):
    """Expires broadcasts 60 s before their deadline."""

    caught_by = "test_sweep_is_never_early"

    def due(self, before: BroadcastSnapshot, now: datetime, kind: KindConfig) -> bool:
        return super().due(before, now + timedelta(seconds=60), kind) and before.state_changed_at <= now


class SweepsStampedAfterNow(_HandSweeper):
    """Expires broadcasts stamped after the sweep's ``now`` (it trusts a clock that went back)."""

    caught_by = "test_sweep_leaves_broadcasts_stamped_after_now"

    def due(self, before: BroadcastSnapshot, now: datetime, kind: KindConfig) -> bool:
        return super().due(replace(before, state_changed_at=now), now, kind)


class SweepWithoutHistory(_HandSweeper):
    """Expires without writing the history row."""

    caught_by = "test_sweep_writes_state_history_and_events"

    def write_history(self, key: tuple[str, EntityId], entry: HistoryEntry) -> None:
        pass


class SweepWithoutOutbox(_HandSweeper):
    """Returns the expiry's events but writes none to the outbox (a crash before dispatch loses them)."""

    caught_by = "test_sweep_writes_state_history_and_events"

    def write_outbox(self, events: list[BroadcastEvent], now: datetime) -> None:
        pass


class SweepForgetsTransporters(_HandSweeper):
    """Announces the expiry to the customer only."""

    caught_by = "test_sweep_writes_state_history_and_events"

    def told(self, transporters: list[str]) -> tuple[str, ...]:
        return ()


class SweepStampsTheDeadline(_HandSweeper):
    """Stamps an expired broadcast with its deadline instead of the sweep's ``now``."""

    caught_by = "test_sweep_writes_state_history_and_events"

    def stamp(self, before: BroadcastSnapshot, now: datetime) -> datetime:
        return before.expires_at or now


class SweepIgnoresTheLimit(_HandSweeper):
    """Expires every overdue broadcast in one call, whatever the limit."""

    caught_by = "test_sweep_honours_the_limit_and_the_kind"

    def limit(self, limit: int) -> int:
        return 1_000_000


class SweepsEveryKind(_HandSweeper):
    """Expires overdue broadcasts of every kind, not only the one asked for."""

    caught_by = "test_sweep_honours_the_limit_and_the_kind"

    def due(self, before: BroadcastSnapshot, now: datetime, kind: KindConfig) -> bool:
        return is_due(before, now)


class UnlockedSweep(_HandSweeper):
    """Picks the overdue broadcasts, lets go of the lock, then expires them without checking again."""

    caught_by = "test_concurrent_sweepers_expire_each_broadcast_once"

    def expire_overdue(self, kind: KindConfig, now: datetime, limit: int, actor: str,
                       with_events: bool = True) -> ExpiredBatch:
        with self._lock:
            due = self.pick(kind, now, limit)
        _gap()
        with self._lock:
            events = self.expire_all(kind, due, now, actor)
        return ExpiredBatch(len(due), lambda: events)


# -- the outbox ----------------------------------------------------------------------------------


class OutboxDropsTransporters(WrongStore):
    """Keeps each event in the outbox addressed to the customer only (the relay would tell nobody else)."""

    caught_by = "test_pending_events_are_whole_and_oldest_first"

    def apply(self, change: Change, after_commit: AfterCommit, tx: object = None) -> Committed | None:
        committed = super().apply(change, after_commit, tx)
        with self._lock:
            for event in committed.events if committed else ():
                entry = self._outbox[event.event_id]
                self._outbox[event.event_id] = replace(entry, event=replace(event, recipients=event.recipients[:1]))
        return committed


class PendingNewestFirst(WrongStore):
    """Lists pending events newest first."""

    caught_by = "test_pending_events_are_whole_and_oldest_first"

    def pending_events(self, limit: int, created_before: datetime | None = None) -> Sequence[OutboxEntry]:
        return sorted(super().pending_events(1_000_000, created_before), key=lambda e: e.created_at,
                      reverse=True)[:limit]


class PendingIncludesDead(WrongStore):
    """Lists dead events as pending."""

    caught_by = "test_exhausted_events_are_dead_letters_newest_first"

    def pending_events(self, limit: int, created_before: datetime | None = None) -> Sequence[OutboxEntry]:
        with self._lock:
            return list(self._outbox.values())[:limit]


class ClaimWithoutLease(WrongStore):
    """Claims events without leasing them: a second relay takes them too."""

    caught_by = "test_claim_takes_a_lease_no_other_relay_can_take"

    def claim_events(self, now: datetime, limit: int, created_before: datetime,
                     lease_until: datetime) -> Sequence[OutboxEntry]:
        with self._lock:
            return [e for e in self._outbox.values() if e.dead_at is None and e.created_at < created_before
                    and (e.next_attempt_at is None or e.next_attempt_at <= now)][:limit]


class ClaimIgnoresGrace(WrongStore):
    """Claims events however recently they were written (racing the after-commit dispatch)."""

    caught_by = "test_claim_honours_grace_and_limit"

    def claim_events(self, now: datetime, limit: int, created_before: datetime,
                     lease_until: datetime) -> Sequence[OutboxEntry]:
        return super().claim_events(now, limit, datetime.max.replace(tzinfo=now.tzinfo), lease_until)


class RetryTimeIgnored(WrongStore):
    """Records a failure but makes the event due again at once."""

    caught_by = "test_failures_are_counted_and_retried_at_their_time"

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        super().record_attempt(replace(attempt, next_attempt_at=attempt.at) if attempt.outcome == "pending"
                               else attempt)


class FailuresNotCounted(WrongStore):
    """Keeps the error of a failure but does not count the attempt."""

    caught_by = "test_failures_are_counted_and_retried_at_their_time"

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        super().record_attempt(attempt)
        with self._lock:
            entry = self._outbox[attempt.event_id]
            self._outbox[attempt.event_id] = replace(entry, attempts=0)


class NeverDeadLettered(WrongStore):
    """Retries an event forever: a receiver out of attempts leaves it pending, and no dead letter."""

    caught_by = "test_exhausted_events_are_dead_letters_newest_first"

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        if attempt.outcome == "dead":
            attempt = replace(attempt, outcome="pending", next_attempt_at=attempt.at,
                              receivers=tuple(replace(r, dead_at=None, next_attempt_at=attempt.at)
                                              for r in attempt.receivers))
        super().record_attempt(attempt)


class DeadLettersOldestFirst(WrongStore):
    """Lists dead letters oldest first."""

    caught_by = "test_exhausted_events_are_dead_letters_newest_first"

    def dead_letters(self, limit: int) -> Sequence[DeadLetter]:
        return list(reversed(super().dead_letters(1_000_000)))[:limit]


class DeliversOnlyTheFirst(WrongStore):
    """Marks only the first of the events it is given as delivered."""

    caught_by = "test_delivered_events_are_gone"

    def mark_delivered(self, event_ids: Sequence[str], at: datetime) -> None:
        super().mark_delivered(event_ids[:1], at)


class ReceiversForgotten(WrongStore):
    """Counts a delivery pass but keeps no receiver's state: a relay calls every receiver again."""

    caught_by = "test_record_attempt_and_claim_keep_per_receiver_state"

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        super().record_attempt(replace(attempt, receivers=()))


class HandledReceiverForgotten(WrongStore):
    """Keeps only the failed receivers' state: a relay in another process calls the healthy one again."""

    caught_by = "test_delivery_is_tracked_per_receiver"

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        super().record_attempt(replace(attempt, receivers=tuple(
            r for r in attempt.receivers if r.delivered_at is None)))


class PrunesPending(WrongStore):
    """Prunes idempotency records and pending events alike, by age."""

    caught_by = "test_prune_deletes_only_what_is_old_and_done"

    def prune(self, target: PruneTarget, before: datetime, limit: int) -> int:
        if target is PruneTarget.OUTBOX:
            with self._lock:
                gone = [i for i, e in self._outbox.items() if e.created_at < before and e.dead_at is None][:limit]
                for event_id in gone:
                    del self._outbox[event_id]
                return len(gone)
        return super().prune(target, before, limit)


class PrunesUnfinishedHistory(WrongStore):
    """Prunes the history of every broadcast whose last change is old, finished or not."""

    caught_by = "test_prune_deletes_only_what_is_old_and_done"

    def prune(self, target: PruneTarget, before: datetime, limit: int) -> int:
        if target is PruneTarget.HISTORY:
            with self._lock:
                old = [k for k, s in self._broadcasts.items() if s.state_changed_at < before and self._history[k]]
                for key in old[:limit]:
                    self._history[key] = []
                return len(old[:limit])
        return super().prune(target, before, limit)


class MissingClaimAndDead:
    """The reference store without ``claim_events`` and ``dead_letters``."""

    caught_by: ClassVar[str] = "test_store_has_every_protocol_method"

    def __init__(self) -> None:
        self._inner = InMemoryStore()

    def __getattr__(self, name: str) -> Any:
        if name in ("claim_events", "dead_letters"):
            raise AttributeError(name)
        return getattr(self._inner, name)


# -- recipients, history, times and ids ----------------------------------------------------------


class RecipientsById(WrongStore):
    """Lists recipients by transporter id instead of notification order."""

    caught_by = "test_recipients_in_notification_order"

    def recipients(self, kind: str, entity_id: EntityId, tx: object = None) -> tuple[RecipientRecord, ...]:
        return tuple(sorted(super().recipients(kind, entity_id, tx), key=lambda r: r.transporter_id))


class RecipientsAsInserted(WrongStore):
    """Lists recipients in the order the store happened to insert them (ties not by id)."""

    caught_by = "test_recipients_in_notification_order"

    def recipients(self, kind: str, entity_id: EntityId, tx: object = None) -> tuple[RecipientRecord, ...]:
        super().recipients(kind, entity_id, tx)
        with self._lock:
            return tuple(self._recipients[(kind, entity_id)].values())


class RenotifyResets(WrongStore):
    """Notifying a transporter again resets its notification time and holding."""

    caught_by = "test_recipients_in_notification_order"

    def add_recipients(self, new: NewRecipients, after_commit: AfterCommit, tx: object = None) -> Committed:
        committed = super().add_recipients(new, after_commit, tx)
        if committed.snapshot.status in new.open_states:
            with self._lock:
                self._recipients[(new.kind.name, new.entity_id)].update(
                    (t, RecipientRecord(t, new.at)) for t in new.transporters)
        return committed


class UnlockedAddRecipients(WrongStore):
    """Checks the status, lets go of the lock, then adds the recipients: a terminal transition in
    between misses them."""

    caught_by = "test_notify_more_racing_a_terminal_transition"

    def add_recipients(self, new: NewRecipients, after_commit: AfterCommit, tx: object = None) -> Committed:
        snapshot = self.load(new.kind.name, new.entity_id).snapshot
        if snapshot.status not in new.open_states:
            return Committed(snapshot, ())
        _gap()
        with self._lock:
            recipients = self._recipients[(new.kind.name, new.entity_id)]
            added = [t for t in new.transporters if t not in recipients]
            recipients.update((t, RecipientRecord(t, new.at)) for t in added)
            events = new.events(snapshot, added)
            self._outbox.update((e.event_id, OutboxEntry(e, new.at)) for e in events)
        return Committed(snapshot, events)


class OffersEveryoneAgain(WrongStore):
    """Offers the broadcast again to transporters notify_more names who were notified before."""

    caught_by = "test_offers_go_to_new_transporters_through_the_outbox"

    def add_recipients(self, new: NewRecipients, after_commit: AfterCommit, tx: object = None) -> Committed:
        committed = super().add_recipients(new, after_commit, tx)
        if committed.snapshot.status not in new.open_states:
            return committed
        events = new.events(committed.snapshot, new.transporters)
        with self._lock:
            for event in committed.events:
                self._outbox.pop(event.event_id, None)
            self._outbox.update((e.event_id, OutboxEntry(e, new.at)) for e in events)
        return Committed(committed.snapshot, events)


class OfferOutsideTheOutbox(WrongStore):
    """Returns notify_more's offer but keeps it out of the outbox (a crash before dispatch loses it)."""

    caught_by = "test_offers_go_to_new_transporters_through_the_outbox"

    def add_recipients(self, new: NewRecipients, after_commit: AfterCommit, tx: object = None) -> Committed:
        committed = super().add_recipients(new, after_commit, tx)
        with self._lock:
            for event in committed.events:
                self._outbox.pop(event.event_id, None)
        return committed


class ReoffersHolders(WrongStore):
    """Re-offers a full broadcast a release opens again to every notified transporter, those still holding a
    slot too (it lists the recipients but not who holds)."""

    caught_by = "test_a_release_that_reopens_a_full_broadcast_reoffers_to_those_holding_no_slot"

    def apply(self, change: Change, after_commit: AfterCommit, tx: object = None) -> Committed | None:
        if Topic.OFFERED not in change.decision.topics or not change.decision.fill_delta:
            return super().apply(change, after_commit, tx)
        committed = super().apply(change, lambda _: None, tx)
        if committed is None:
            return None
        everyone = tuple(Recipient("transporter", r.transporter_id)
                         for r in self.recipients(change.before.kind, change.before.id))
        events = tuple(replace(e, recipients=everyone) if e.topic is Topic.OFFERED else e for e in committed.events)
        with self._lock:
            self._outbox.update((e.event_id, OutboxEntry(e, change.at)) for e in events)
        wide = Committed(committed.snapshot, events)
        after_commit(wide)
        return wide


class HistoryDropsMetadata(WrongStore):
    """Keeps history rows without their metadata."""

    caught_by = "test_history_keeps_every_field"

    def history(self, kind: str, entity_id: EntityId, tx: object = None) -> tuple[HistoryEntry, ...]:
        return tuple(replace(h, metadata={}) for h in super().history(kind, entity_id, tx))


class TimesToTheSecond(WrongStore):
    """Keeps times to the second (a DATETIME column without fractions)."""

    caught_by = "test_times_come_back_to_the_microsecond"

    def load(self, kind: str, entity_id: EntityId, transporter_id: str | None = None, tx: object = None) -> Loaded:
        loaded = super().load(kind, entity_id, transporter_id, tx)
        s = loaded.snapshot
        return replace(loaded, snapshot=replace(s, state_changed_at=s.state_changed_at.replace(microsecond=0)))


class NaiveHistoryTimes(WrongStore):
    """Gives history times back without their timezone."""

    caught_by = "test_times_come_back_to_the_microsecond"

    def history(self, kind: str, entity_id: EntityId, tx: object = None) -> tuple[HistoryEntry, ...]:
        return tuple(replace(h, at=h.at.replace(tzinfo=None)) for h in super().history(kind, entity_id, tx))


class DigitStringIdAsInt(WrongStore):
    """Reads a digit-only string id back as an int: "777" becomes 777."""

    caught_by = "test_ids_come_back_as_given"

    def insert(self, new: NewBroadcast, after_commit: AfterCommit, tx: object = None) -> Committed:
        if isinstance(new.entity_id, str) and new.entity_id.isdigit():
            new = replace(new, entity_id=int(new.entity_id))
        return super().insert(new, after_commit, tx)


class UuidIdAsString(WrongStore):
    """Reads a UUID id back as its text."""

    caught_by = "test_ids_come_back_as_given"

    def insert(self, new: NewBroadcast, after_commit: AfterCommit, tx: object = None) -> Committed:
        if isinstance(new.entity_id, UUID):
            new = replace(new, entity_id=str(new.entity_id))
        return super().insert(new, after_commit, tx)


class RacyAutomaticIds(WrongStore):
    """Picks an automatic id, lets go of the lock, then inserts: concurrent creates pick the same id."""

    caught_by = "test_concurrent_commands_keep_every_broadcast_whole"

    def insert(self, new: NewBroadcast, after_commit: AfterCommit, tx: object = None) -> Committed:
        if new.entity_id is None:
            with self._lock:
                picked = len(self._broadcasts) + 1
            _gap()
            new = replace(new, entity_id=picked)
        return super().insert(new, after_commit, tx)


WRONG_STORES: tuple[type[WrongStore] | type[MissingClaimAndDead], ...] = (
    OutboxOnLostRace, HistoryOnLostRace, KeyOnLostRace, IgnoresTheHostTransaction, UnlockedCompareAndSet,
    SweepsWithoutDeadline, SweepsClosed, SweepsEarly, SweepsStampedAfterNow, SweepWithoutHistory,
    SweepWithoutOutbox, SweepForgetsTransporters, SweepStampsTheDeadline, SweepIgnoresTheLimit, SweepsEveryKind,
    UnlockedSweep,
    OutboxDropsTransporters, PendingNewestFirst, PendingIncludesDead, ClaimWithoutLease, ClaimIgnoresGrace,
    RetryTimeIgnored, FailuresNotCounted, NeverDeadLettered, DeadLettersOldestFirst, DeliversOnlyTheFirst,
    ReceiversForgotten, HandledReceiverForgotten, PrunesPending, PrunesUnfinishedHistory, MissingClaimAndDead,
    RecipientsById, RecipientsAsInserted, RenotifyResets, UnlockedAddRecipients, OffersEveryoneAgain,
    OfferOutsideTheOutbox, ReoffersHolders, HistoryDropsMetadata,
    TimesToTheSecond, NaiveHistoryTimes, DigitStringIdAsInt, UuidIdAsString, RacyAutomaticIds,
)
"""Every wrong store; the contract must fail on each."""
