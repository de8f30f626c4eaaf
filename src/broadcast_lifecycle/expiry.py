"""The expiry of an overdue broadcast as a value: which broadcasts a sweep takes, and what expiring
one writes (its next snapshot, its history row, its events). No I/O.

A store's sweeper (``BroadcastStore.expire_overdue``) takes these from here, as a command's write
takes them from its ``Change``, so every store records an expiry alike::

    for before in candidates:                     # read under the store's write lock
        if is_due(before, now):
            expiry = Expiry(kind=kind, before=before, at=now, actor=actor)
            write(expiry.after(), expiry.history_entry(), expiry.events(notified_transporters))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .decision import Decision, decide, is_overdue
from .errors import InvalidArgument, show_id
from .events import BroadcastEvent, Topic, build_events
from .guards import CommandContext
from .kinds import KindConfig
from .lifecycle import Trigger, allowed_from, topics_of
from .records import BroadcastSnapshot, HistoryEntry
from .states import BroadcastStatus

__all__ = ["EXPIRABLE", "EXPIRY_TOPICS", "SWEEP_REASON", "Expiry", "is_due"]

EXPIRABLE: frozenset[BroadcastStatus] = allowed_from(Trigger.EXPIRE)
"""The states a deadline can expire (from the transition table): created, broadcasting, active,
partially_filled. A broadcast in any other state keeps its deadline but is never swept."""

EXPIRY_TOPICS: tuple[Topic, ...] = topics_of(Trigger.EXPIRE, BroadcastStatus.ACTIVE, BroadcastStatus.EXPIRED)
"""What an expiry announces, in this order: state-changed to the customer, then ``{KIND}_EXPIRED`` to
the customer and every notified transporter (a set-wise SQL sweep writes one row per topic), as the
table's expire rule announces it (from every state it expires: ``tests/test_table.py`` checks)."""

SWEEP_REASON = "deadline passed"
"""The reason every store records in the history row (and the events) of a broadcast that
``expire_overdue`` expired."""


def is_due(snapshot: BroadcastSnapshot, now: datetime) -> bool:
    """True when a sweep at ``now`` takes ``snapshot``: it has a deadline and ``now`` reached it
    (``now >= expires_at``), its state is in :data:`EXPIRABLE`, and it was not stamped after ``now``
    (a broadcast written by a clock ahead of this one waits until ``now`` catches up)."""
    return is_overdue(snapshot, now) and snapshot.state_changed_at <= now


@dataclass(frozen=True, slots=True, kw_only=True)
class Expiry:
    """The sweeper's expiry of ``before`` at ``at``, recorded with ``actor`` and ``reason``.

    Raises ``InvalidArgument`` when ``before`` is not due at ``at`` (see :func:`is_due`).
    """

    kind: KindConfig
    before: BroadcastSnapshot
    at: datetime
    actor: str
    reason: str = SWEEP_REASON
    decision: Decision = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not is_due(self.before, self.at):
            raise InvalidArgument(f"{self.before.kind} {show_id(self.before.id)} is not due for expiry at "
                                  f"{self.at.isoformat()} (status {self.before.status.value}, "
                                  f"expires_at {self.before.expires_at}, stamped {self.before.state_changed_at})")
        object.__setattr__(self, "decision", decide(self.before, Trigger.EXPIRE, CommandContext(self.at)))

    def after(self) -> BroadcastSnapshot:
        """The broadcast once expired: ``expired``, stamped ``at``, one version up, fill and deadline kept."""
        return self.decision.next_snapshot(self.before, self.at)

    def history_entry(self) -> HistoryEntry:
        """The audit row: from the old state to ``expired``, trigger ``expire``, ``actor``, ``reason``, no metadata."""
        return self.decision.history_entry(self.before, self.at, self.actor, self.reason, {})

    def events(self, transporters: Sequence[str]) -> tuple[BroadcastEvent, ...]:
        """The events: state-changed to the customer, ``{KIND}_EXPIRED`` to the customer and every
        notified transporter (``transporters``, in notification order, as ``recipients`` lists them)."""
        return build_events(self.kind, self.after(), self.before.status, self.decision.topics, transporters,
                            trigger=self.decision.trigger.value, reason=self.reason)
