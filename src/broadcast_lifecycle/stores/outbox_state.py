"""Where an outbox event stands with each named receiver, what one delivery pass did with it, and
the dead letters an operator reads.

Per-receiver state is written only for an event that a pass left undelivered (a receiver raised):
an event that every receiver handled at the first try is settled by ``mark_delivered`` alone, so
the usual path writes nothing per receiver.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ..errors import InvalidArgument
from ..events import BroadcastEvent

__all__ = ["DeadLetter", "DeliveryAttempt", "Outcome", "ReceiverDelivery"]

Outcome = Literal["pending", "delivered", "dead"]
"""Where an event stands after a pass: still owed to a receiver, handled by every receiver, or
settled with at least one receiver that gave up (dead) and none still owed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiverDelivery:
    """One named receiver's state for one event.

    ``attempts`` counts its failed attempts; ``next_attempt_at`` is when it is due again after a
    failure. ``delivered_at`` is set once it handled the event, ``dead_at`` once it ran out of
    attempts (its ``last_error`` says why).
    """

    receiver: str
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    dead_at: datetime | None = None

    @property
    def settled(self) -> bool:
        """True once the receiver handled the event or gave up on it: it is not called again."""
        return self.delivered_at is not None or self.dead_at is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryAttempt:
    """What one delivery pass did with one event, for ``BroadcastStore.record_attempt``.

    ``receivers`` holds the new state of each receiver the pass called (the others keep theirs);
    ``outcome`` and ``next_attempt_at`` (for ``"pending"``: when a relay may take the event again)
    are the event's; ``error`` is the pass's failures, ``receiver: ErrorType: message; ...``.
    """

    event_id: str
    at: datetime
    receivers: tuple[ReceiverDelivery, ...]
    outcome: Outcome
    next_attempt_at: datetime | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        if (self.outcome == "pending") != (self.next_attempt_at is not None):
            raise InvalidArgument("next_attempt_at is required for a pending outcome and only for it, got "
                                  f"{self.outcome!r} with next_attempt_at={self.next_attempt_at!r}")

    @property
    def failed(self) -> bool:
        """True when a receiver raised in this pass (the event's ``attempts`` counts such passes)."""
        return any(r.delivered_at is None for r in self.receivers)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """An event one receiver gave up on: which receiver, its last error, after how many attempts."""

    event: BroadcastEvent
    receiver: str
    attempts: int
    last_error: str | None
    dead_at: datetime
    created_at: datetime
    """When the event was written (with its transition)."""
