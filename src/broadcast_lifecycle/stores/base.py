"""The store protocol: what the service needs from persistence (the values it passes are in
:mod:`.writes`, and importable from here too).

A store keeps broadcasts, their recipients, their history and an outbox of events. Its one hard
duty is :meth:`BroadcastStore.apply`: write a decided transition, its history row and its outbox
rows atomically, and only if the broadcast is still at the version the decision was made from.
The contract suite in :mod:`broadcast_lifecycle.testing` checks a store against this protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from typing_extensions import get_protocol_members

from ..expiry import SWEEP_REASON
from ..kinds import KindConfig
from ..lifecycle import Trigger
from ..records import EntityId, HistoryEntry, IdempotentOutcome, RecipientRecord
from .outbox_state import DeadLetter, DeliveryAttempt
from .writes import (
    Adoption,
    AfterCommit,
    Change,
    Committed,
    ExpiredBatch,
    Loaded,
    NewBroadcast,
    NewRecipients,
    OutboxBucket,
    OutboxEntry,
    Plan,
    PruneTarget,
    StatementCommand,
)

__all__ = [
    "AdoptsRows",
    "Adoption",
    "AfterCommit",
    "BatchNotWritten",
    "DecidesInBatch",
    "DecidesInStatement",
    "DecidesUnderLock",
    "BroadcastStore",
    "Change",
    "Committed",
    "ExpiredBatch",
    "InspectsOutbox",
    "Loaded",
    "NewBroadcast",
    "NewRecipients",
    "OutboxBucket",
    "OutboxEntry",
    "Plan",
    "PruneTarget",
    "StatementCommand",
    "SWEEP_REASON",
    "TypedKeys",
    "missing_store_methods",
]

@runtime_checkable
class InspectsOutbox(Protocol):
    """An optional store capability for operators: the outbox by delivery state, and one broadcast's
    events whatever their state (delivered ones included)."""

    def outbox_summary(self) -> dict[str, OutboxBucket]:
        """``pending``, ``retrying`` and ``dead`` entries (missing keys: none)."""
        ...

    def outbox_of(self, kind: str, entity_id: EntityId) -> Sequence[OutboxEntry]:
        """Every outbox entry of the broadcast, oldest first."""
        ...


@runtime_checkable
class DecidesInStatement(Protocol):
    """An optional store capability: apply a command in one write that checks the table's from-states
    and built-in guards itself, without reading the broadcast first.

    ``decides_in_statement(kind, trigger)`` says whether the store can take that trigger this way.
    ``decide_in_statement`` writes the command when the statement allows it and then calls ``plan``
    with the broadcast as the statement found it (before the write), so the events and the result
    come from the same decision every path makes; it returns what it committed. When the statement
    refuses it writes nothing and returns the broadcast as found (the lifecycle decides the refusal on
    it, with no further read); ``None`` when it cannot take the command after all. With an idempotency
    key it records the key and the outcome in the same write; a key already recorded raises
    ``IdempotencyKeyReused`` and writes nothing.
    """

    def decides_in_statement(self, kind: KindConfig, trigger: Trigger) -> bool:
        """Whether :meth:`decide_in_statement` takes ``trigger`` of ``kind``."""
        ...

    def decide_in_statement(self, command: StatementCommand, plan: Plan,
                            after_commit: AfterCommit) -> Committed | Loaded | None:
        """Apply ``command`` in one statement; else the row as found, or ``None`` to pass."""
        ...


@runtime_checkable
class AdoptsRows(Protocol):
    """An optional store capability: record as created a broadcast row the host inserted itself, in the
    host's transaction, so the host's own columns are written by the host's own INSERT.

    ``adopt`` finds the row (``BroadcastNotFound`` if absent), refuses with ``InvalidArgument`` one
    that is not in ``created`` at version 1 with nothing filled or that already has history, and
    writes the creation's history row, outbox rows and idempotency record as ``insert`` would.
    """

    def adopt(self, adoption: Adoption, after_commit: AfterCommit, tx: object = None) -> Committed:
        """Record the host's row as created; returns what was (or will be, in ``tx``) committed."""
        ...


@runtime_checkable
class TypedKeys(Protocol):
    """An optional store capability: each kind's ids are of one type (a SQL table's key), and an id
    given as text that spells a key of that type (``"42"``, a UUID's text: what a URL path or an
    event payload carries) names that key.

    ``entity_key`` returns ``entity_id`` as ``kind``'s key type: as it is when it is of that type,
    converted when it is a ``str`` that spells one (:func:`~broadcast_lifecycle.codec.id_from_text`);
    anything else raises ``BroadcastNotFound`` naming what an id of the kind is (no row can have it).
    It does no I/O. The lifecycle calls it once per command or read, before anything else, so the
    command, its idempotency record and its events carry the typed id.
    """

    def entity_key(self, kind: str, entity_id: EntityId) -> EntityId:
        """``entity_id`` as a key of ``kind``'s type; ``BroadcastNotFound`` if it is none."""
        ...


@runtime_checkable
class DecidesUnderLock(Protocol):
    """An optional store capability: load, decide and write in one transaction that holds the
    broadcast's write lock from its first statement (SQLite's ``BEGIN IMMEDIATE``), so the decision
    can never be overtaken and a command costs one transaction instead of a read and a write.

    ``decides_under_lock()`` says whether this store instance can (a store may support it on one
    database and not on another). ``decide_and_apply`` loads the broadcast (``BroadcastNotFound``
    if absent), calls ``plan`` with it and writes the change ``plan`` returns exactly as
    :meth:`BroadcastStore.apply` would, all in one transaction. Whatever ``plan`` raises rolls the
    transaction back and reaches the caller.
    """

    def decides_under_lock(self) -> bool:
        """True when :meth:`decide_and_apply` may be used on this store."""
        ...

    def decide_and_apply(self, kind: str, entity_id: EntityId, transporter_id: str | None, plan: Plan,
                         after_commit: AfterCommit, tx: object = None) -> Committed | None:
        """Load, ``plan``, write and commit under the write lock; ``None`` only if the write found the
        broadcast changed after all (a writer that bypasses the lock), as for ``apply``."""
        ...


class BatchNotWritten(Exception):
    """Raised by :meth:`DecidesInBatch.decide_and_apply_batch` when the batch failed before its commit, so
    nothing of it was written (``__cause__`` says why): the lifecycle then runs each command on its own."""


@runtime_checkable
class DecidesInBatch(Protocol):
    """An optional store capability: decide and write several commands on one broadcast in one
    transaction, holding the broadcast's row lock from the first read to the commit, so commands that
    queue for one hot broadcast share one commit (one flush to disk) instead of taking one each.

    ``decides_in_batch()`` says whether this store instance can. ``decide_and_apply_batch`` loads the
    broadcast under its lock, then for each ``(transporter_id, plan)`` in order calls ``plan`` with the
    broadcast as the items before it left it (and the slots that transporter holds): a change ``plan``
    returns is written exactly as :meth:`BroadcastStore.apply` writes it; an ``Exception`` it raises (a
    refusal) is that item's outcome and writes nothing. It commits once and returns each item's outcome
    in order; it calls no ``after_commit``: the caller announces each committed change. A failure before
    the commit (no such broadcast, a constraint refusing a write, a lost connection) rolls the batch back
    and raises :class:`BatchNotWritten` from it; a failure of the commit itself, whose outcome is unknown,
    raises as it is (the lifecycle must not run the commands again).
    """

    def decides_in_batch(self) -> bool:
        """True when :meth:`decide_and_apply_batch` may be used on this store."""
        ...

    def decide_and_apply_batch(self, kind: str, entity_id: EntityId,
                               plans: Sequence[tuple[str | None, Plan]]) -> list[Committed | Exception]:
        """Decide and write ``plans`` in order in one transaction; each one's committed write or refusal."""
        ...


@runtime_checkable
class BroadcastStore(Protocol):
    """Persistence for broadcasts. ``tx`` is a store-specific handle on the caller's transaction
    (a SQLAlchemy ``Session`` for :class:`~broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore`);
    with ``tx=None`` the store commits on its own.
    """

    def insert(self, new: NewBroadcast, after_commit: AfterCommit, tx: object = None) -> Committed:
        """Insert a broadcast with its history row and events.

        Raises ``DuplicateBroadcast`` for a taken id and ``OpenBroadcastExists`` when the kind
        allows one open broadcast per customer and the customer has one.
        """
        ...

    def recall(self, key: str, tx: object = None) -> IdempotentOutcome | None:
        """The first outcome recorded under idempotency ``key`` (written by insert/apply), if any."""
        ...

    def load(self, kind: str, entity_id: EntityId, transporter_id: str | None = None,
             tx: object = None) -> Loaded:
        """The current snapshot (and ``transporter_id``'s holding); ``BroadcastNotFound`` if absent."""
        ...

    def apply(self, change: Change, after_commit: AfterCommit, tx: object = None) -> Committed | None:
        """Apply ``change`` atomically if the broadcast is still at ``change.before.version``.

        Writes the new state, the history row, the recipients' holdings, the outbox rows and the
        idempotency key (if any) in one transaction and returns what was committed; returns ``None``,
        writing nothing, when another writer got there first. A key already recorded raises
        ``IdempotencyKeyReused``.
        """
        ...

    def add_recipients(self, new: NewRecipients, after_commit: AfterCommit, tx: object = None) -> Committed:
        """Record ``new.transporters`` as notified while the broadcast is in ``new.open_states``, with
        the offer to those not notified before (``new.events``) in the outbox, in one transaction.

        Returns the snapshot it checked and the offer it wrote (``after_commit`` gets them once
        committed, as for ``apply``); the caller compares the status: nothing is written, and no
        event returned, when it is not open. Already-notified transporters are left as they are and
        offered nothing. It must hold the broadcast against writers while it checks and writes, so a
        concurrent terminal transition either lists the new recipients or makes this call see it closed.
        """
        ...

    def recipients(self, kind: str, entity_id: EntityId, tx: object = None) -> tuple[RecipientRecord, ...]:
        """Every transporter notified of the broadcast, in notification order (ties by transporter id);
        events addressed to every notified transporter list them in the same order."""
        ...

    def history(self, kind: str, entity_id: EntityId, tx: object = None) -> tuple[HistoryEntry, ...]:
        """The broadcast's audit rows in version order."""
        ...

    def expire_overdue(self, kind: KindConfig, now: datetime, limit: int, actor: str,
                       with_events: bool = True) -> ExpiredBatch:
        """Expire up to ``limit`` overdue broadcasts of ``kind`` in one transaction, set-wise: status,
        ``state_changed_at = now``, version, history rows and outbox rows (state-changed to the
        customer, ``{KIND}_EXPIRED`` to everyone notified), the history rows with ``actor`` and
        :data:`SWEEP_REASON`. Concurrent sweepers never expire a
        broadcast twice. Broadcasts stamped after ``now`` (a clock that went back) wait.
        ``with_events=False`` lets a store skip reading the events back (nobody will dispatch them;
        they stay in the outbox for the relay).
        """
        ...

    # -- the outbox ---------------------------------------------------------------------------
    #
    # Every transition writes its events (``OutboxEntry``) with it. Delivery is tracked per named
    # receiver (``SignalBus.connect(name=...)``), but lazily: when every receiver handles an event at
    # the first try, ``mark_delivered`` settles it and nothing per receiver is ever written. Only a
    # pass in which a receiver raised records, with ``record_attempt``, the state of each receiver
    # it called (handled, or failed with its error and next attempt, or dead); from then on a
    # delivery skips the receivers that handled the event or gave up on it, and retries each
    # failed one on its own backoff.

    def pending_events(self, limit: int, created_before: datetime | None = None) -> Sequence[OutboxEntry]:
        """Undelivered, live outbox entries (neither delivered nor dead), oldest first, each with its
        per-receiver state (for inspection; relays use claim_events)."""
        ...

    def claim_events(self, now: datetime, limit: int, created_before: datetime,
                     lease_until: datetime) -> Sequence[OutboxEntry]:
        """Take up to ``limit`` undelivered, live entries created before ``created_before`` whose next
        attempt is due, and push their ``next_attempt_at`` to ``lease_until`` in the same atomic step,
        so that concurrent relays never take the same entry while the lease lasts. Each entry comes
        with its per-receiver state.
        """
        ...

    def mark_delivered(self, event_ids: Sequence[str], at: datetime) -> None:
        """Mark outbox entries as delivered to every receiver (``delivered_at = at``); writes no
        per-receiver state."""
        ...

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        """Record a delivery pass of one event, atomically: upsert the state of each receiver in
        ``attempt.receivers`` (as given: the caller counted the attempts); count the pass in the
        entry's ``attempts`` and keep its ``error`` when a receiver failed; then set the entry's
        ``next_attempt_at`` (pending), ``delivered_at`` (delivered) or ``dead_at`` (dead) to match
        ``attempt.outcome``."""
        ...

    def dead_letters(self, limit: int) -> Sequence[DeadLetter]:
        """Receivers that gave up on an event, newest first: the event, the receiver, its attempts
        and last error."""
        ...

    # -- retention ------------------------------------------------------------------------------

    def prune(self, target: PruneTarget, before: datetime, limit: int) -> int:
        """Delete up to ``limit`` units of ``target`` older than ``before`` in one short transaction
        and return how many went: delivered events (``delivered_at < before``, their per-receiver
        state with them), idempotency records (written before ``before``), or the histories of
        broadcasts in a terminal state since before ``before``. Never touches a pending or dead
        event, a key or a history row that is newer, or any broadcast row. Callers repeat it until it
        returns less than ``limit``; concurrent writers are held up for one batch at most.
        """
        ...


def missing_store_methods(store: object) -> list[str]:
    """The :class:`BroadcastStore` methods ``store`` lacks (or has as non-callables), sorted."""
    return sorted(name for name in get_protocol_members(BroadcastStore)
                  if not callable(getattr(store, name, None)))
