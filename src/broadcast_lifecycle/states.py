"""The states a broadcast moves through and the sets that classify them."""

from __future__ import annotations

from enum import Enum

__all__ = ["CLOSED", "OPEN", "TERMINAL", "BroadcastStatus"]


class BroadcastStatus(str, Enum):
    """A broadcast's lifecycle state; each value is the string stored in the database."""

    CREATED = "created"
    """The record exists; nobody has been notified yet."""
    BROADCASTING = "broadcasting"
    """Transporters are being notified."""
    ACTIVE = "active"
    """The broadcast is out and waiting for acceptances; its deadline is set."""
    PARTIALLY_FILLED = "partially_filled"
    """Some, but not all, requested slots are filled."""
    FULLY_FILLED = "fully_filled"
    """Every requested slot is filled; closed for transporters."""
    IN_PROGRESS = "in_progress"
    """The trip is under way."""
    COMPLETED = "completed"
    """Terminal: the trip finished."""
    CANCELLED = "cancelled"
    """Terminal: the customer or an operator cancelled it."""
    EXPIRED = "expired"
    """Terminal: the deadline passed before it was filled."""

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        """True for the absorbing states: completed, cancelled, expired."""
        return self in TERMINAL

    @property
    def is_closed(self) -> bool:
        """True when transporters must drop the broadcast from actionable views."""
        return self in CLOSED


TERMINAL: frozenset[BroadcastStatus] = frozenset(
    {BroadcastStatus.COMPLETED, BroadcastStatus.CANCELLED, BroadcastStatus.EXPIRED}
)
"""Absorbing states: no transition leaves them."""

CLOSED: frozenset[BroadcastStatus] = TERMINAL | {
    BroadcastStatus.FULLY_FILLED,
    BroadcastStatus.IN_PROGRESS,
}
"""States in which transporters can no longer act on the broadcast."""

OPEN: frozenset[BroadcastStatus] = frozenset(
    {BroadcastStatus.BROADCASTING, BroadcastStatus.ACTIVE, BroadcastStatus.PARTIALLY_FILLED}
)
"""States in which the broadcast is offered to transporters (recipients may be added)."""
