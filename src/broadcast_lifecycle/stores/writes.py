"""The values a store is given and gives back: a new broadcast, a decided change, recipients to add,
what was committed, what a load found, outbox entries, and what a command decided in one statement
needs. The protocols that take them are in :mod:`.base`."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from .._quick import quick_constructor
from ..decision import Decision
from ..events import NOTIFY_MORE, BroadcastEvent, Topic, build_events, build_offer
from ..kinds import KindConfig
from ..lifecycle import Trigger
from ..records import BroadcastSnapshot, EntityId, HistoryEntry, IdempotentOutcome
from ..states import BroadcastStatus
from ..validation import require_entity_id
from .outbox_state import ReceiverDelivery

__all__ = [
    "Adoption",
    "AfterCommit",
    "Change",
    "Committed",
    "ExpiredBatch",
    "Loaded",
    "NewBroadcast",
    "NewRecipients",
    "OutboxBucket",
    "OutboxEntry",
    "Plan",
    "PruneTarget",
    "StatementCommand",
]

_snapshot = quick_constructor(BroadcastSnapshot)
_history_entry = quick_constructor(HistoryEntry)


@dataclass(frozen=True, slots=True)
class NewBroadcast:
    """A broadcast to insert in the initial state (``entity_id=None`` lets the store pick one)."""

    kind: KindConfig
    customer_id: str
    slots_requested: int
    at: datetime
    entity_id: EntityId | None = None
    expires_at: datetime | None = None
    actor: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    fingerprint: str = ""
    """The digest of the command's arguments, recorded with ``idempotency_key``."""
    reason: str | None = None
    columns: Mapping[str, Any] = field(default_factory=dict)
    """Values for the host's own columns of the row (a store without host models refuses any)."""

    def __post_init__(self) -> None:
        if self.entity_id is not None:  # one check for every store and facade: no store may hold it otherwise
            require_entity_id("entity_id", self.entity_id)

    def snapshot(self, entity_id: EntityId) -> BroadcastSnapshot:
        """The broadcast as inserted, once it has an id."""
        return _snapshot(
            kind=self.kind.name, id=entity_id, customer_id=self.customer_id,
            status=BroadcastStatus.CREATED, slots_requested=self.slots_requested, slots_filled=0,
            version=1, state_changed_at=self.at, created_at=self.at, expires_at=self.expires_at,
        )

    def history_entry(self, entity_id: EntityId) -> HistoryEntry:
        """The audit row of the creation."""
        return _history_entry(self.kind.name, entity_id, None, BroadcastStatus.CREATED, "create",
                              self.actor, self.reason, self.at, 1, dict(self.metadata))

    def events(self, after: BroadcastSnapshot) -> tuple[BroadcastEvent, ...]:
        """The events of the creation."""
        return build_events(self.kind, after, None, (Topic.STATE_CHANGED,), (), trigger="create", reason=self.reason)

    def outcome(self, after: BroadcastSnapshot) -> IdempotentOutcome | None:
        """What to record under the idempotency key (``None`` without one)."""
        if self.idempotency_key is None:
            return None
        return IdempotentOutcome(self.idempotency_key, "create", after, self.actor, self.fingerprint)


@dataclass(frozen=True, slots=True, kw_only=True)
class Adoption:
    """A broadcast row the host inserted itself (with its own columns), to be recorded as created."""

    kind: KindConfig
    entity_id: EntityId
    actor: str | None = None
    reason: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    idempotency_key: str | None = None
    fingerprint: str = ""

    def creation(self, row: BroadcastSnapshot) -> NewBroadcast:
        """The creation to record for ``row`` (as loaded): its history row, events and key."""
        return NewBroadcast(self.kind, row.customer_id, row.slots_requested, row.state_changed_at, row.id,
                            row.expires_at,
                            self.actor if self.actor is not None else row.customer_id, self.metadata,
                            self.idempotency_key, self.fingerprint, self.reason)


@dataclass(frozen=True, slots=True)
class Change:
    """A decided transition, to be applied only if the broadcast is still at ``before.version``.

    ``transporter_id`` is whose holding moves by ``decision.fill_delta`` (accept, release);
    ``recipients`` are transporters to record as notified in the same transaction, and to offer the
    broadcast to. Only ``start_broadcast`` records recipients, from ``created``, where nobody is
    notified yet, so each of them is new (``notify_more`` adds more through :class:`NewRecipients`).
    """

    kind: KindConfig
    before: BroadcastSnapshot
    decision: Decision
    at: datetime
    actor: str | None = None
    reason: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    transporter_id: str | None = None
    recipients: tuple[str, ...] = ()
    idempotency_key: str | None = None
    fingerprint: str = ""
    """The digest of the command's arguments, recorded with ``idempotency_key``."""

    def after(self) -> BroadcastSnapshot:
        """The broadcast as it will be once the change is applied."""
        return self.decision.next_snapshot(self.before, self.at)

    def history_entry(self) -> HistoryEntry:
        """The audit row of the change."""
        return self.decision.history_entry(self.before, self.at, self.actor, self.reason, self.metadata)

    @property
    def needs_recipients(self) -> bool:
        """True when the events go to every notified transporter (the store must list them)."""
        return len(self.decision.topics) > 1

    def events(self, after: BroadcastSnapshot, transporters: Sequence[str],
               holders: Collection[str] = ()) -> tuple[BroadcastEvent, ...]:
        """The events of the change, addressed to the customer and ``transporters`` (a re-offer to those
        not among ``holders``, who hold a slot after the change), then the offer to the new ``recipients``."""
        d = self.decision
        trigger = d.trigger._value_  # .value, without the Enum property's cost (this runs on every command)
        events = build_events(self.kind, after, d.from_status, d.topics, transporters, trigger=trigger,
                              reason=self.reason, holders=holders)
        if not self.recipients:  # nobody newly notified, so no offer (most commands)
            return events
        return events + build_offer(self.kind, after, d.from_status, self.recipients, trigger=trigger,
                                    reason=self.reason)

    def outcome(self, after: BroadcastSnapshot) -> IdempotentOutcome | None:
        """What to record under the idempotency key (``None`` without one)."""
        if self.idempotency_key is None:
            return None
        return IdempotentOutcome(self.idempotency_key, self.decision.trigger.value, after, self.actor,
                                 self.fingerprint)


@dataclass(frozen=True, slots=True, kw_only=True)
class NewRecipients:
    """Transporters to record as notified (``notify_more``) while the broadcast is in ``open_states``.

    Written with the offer to those not notified before, in one transaction; no state changes, so
    the offer carries the broadcast's current version.
    """

    kind: KindConfig
    entity_id: EntityId
    transporters: tuple[str, ...]
    at: datetime
    open_states: frozenset[BroadcastStatus]
    reason: str | None = None

    def events(self, snapshot: BroadcastSnapshot, added: Sequence[str]) -> tuple[BroadcastEvent, ...]:
        """The offer to the transporters ``added`` (those not notified before), if any."""
        return build_offer(self.kind, snapshot, snapshot.status, added, trigger=NOTIFY_MORE, reason=self.reason)


@dataclass(frozen=True, slots=True)
class Committed:
    """A write that is (or, inside a host transaction, will be) committed."""

    snapshot: BroadcastSnapshot
    events: tuple[BroadcastEvent, ...]


@dataclass(frozen=True, slots=True)
class ExpiredBatch:
    """Broadcasts one sweep step expired (committed); their events are built only when asked for
    (empty when the sweep ran ``with_events=False``)."""

    count: int
    load_events: Callable[[], Sequence[BroadcastEvent]]


AfterCommit = Callable[[Committed], None]
"""Called by a store once the write is committed; never if it rolls back."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """A snapshot plus the slots one transporter holds (``None``: that transporter was not notified)."""

    snapshot: BroadcastSnapshot
    holding: int | None = None


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An event in the outbox, with its delivery state.

    ``attempts`` counts the delivery passes in which a receiver raised, ``last_error`` holds the
    last such pass's failures. ``next_attempt_at`` is when a relay may take it next (a retry's
    backoff, or a relay's lease); ``dead_at`` is set once it is settled with a receiver that gave
    up, ``delivered_at`` once every receiver handled it. ``receivers`` is the per-receiver state,
    recorded only once a pass left the event undelivered (empty before that).
    """

    event: BroadcastEvent
    created_at: datetime
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    dead_at: datetime | None = None
    delivered_at: datetime | None = None
    receivers: tuple[ReceiverDelivery, ...] = ()

    @property
    def state(self) -> str:
        """``delivered``, ``dead``, ``retrying`` (failed before, will be tried again) or ``pending``."""
        if self.delivered_at is not None:
            return "delivered"
        if self.dead_at is not None:
            return "dead"
        return "retrying" if self.attempts else "pending"


@dataclass(frozen=True, slots=True)
class OutboxBucket:
    """How many undelivered outbox entries are in one state, and when the oldest was written."""

    count: int = 0
    oldest: datetime | None = None


class PruneTarget(str, Enum):
    """What :meth:`BroadcastStore.prune` deletes."""

    OUTBOX = "outbox"
    """Delivered events (with their per-receiver state) delivered before the cutoff; pending and
    dead events are never pruned."""
    IDEMPOTENCY = "idempotency"
    """Idempotency records written before the cutoff (a command retried with such a key after
    that is applied again)."""
    HISTORY = "history"
    """The whole history of each broadcast in a terminal state whose last change (the terminal
    transition) is older than the cutoff; a history is never cut in part."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementCommand:
    """A command for :class:`DecidesInStatement`: what its statement needs besides the row.

    ``deadline`` is the command's own (``expires_at=``, or ``at`` + ``ttl``), ``default_deadline``
    ``at`` + the kind's default ttl; the statement falls back from one to the broadcast's deadline to
    the other, as the decision does. ``transporter_id`` and ``slots`` are an accept's or a release's: whose
    holding the guards read and the fill moves, and by how many slots."""

    kind: KindConfig
    trigger: Trigger
    entity_id: EntityId
    at: datetime
    deadline: datetime | None = None
    default_deadline: datetime | None = None
    transporter_id: str | None = None
    slots: int = 1
    actor: str | None = None
    reason: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    recipients: tuple[str, ...] = ()
    idempotency_key: str | None = None
    fingerprint: str = ""
    """The digest of the command's arguments, recorded with ``idempotency_key``."""


Plan = Callable[[Loaded], Change]
"""Decides a command on the broadcast as loaded (raising its refusal) and returns the change to apply."""
