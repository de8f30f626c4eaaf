"""Immutable records the library hands out: snapshots, history entries, recipients."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from .states import BroadcastStatus

__all__ = ["BroadcastSnapshot", "EntityId", "HistoryEntry", "RecipientRecord"]

EntityId = int | str | UUID
"""A broadcast's primary key: an integer, a string or a UUID."""


@dataclass(frozen=True, slots=True)
class BroadcastSnapshot:
    """A broadcast as it was committed at ``version``."""

    kind: str
    id: EntityId
    customer_id: str
    status: BroadcastStatus
    slots_requested: int
    slots_filled: int
    version: int
    state_changed_at: datetime
    created_at: datetime
    expires_at: datetime | None = None

    @property
    def slots_open(self) -> int:
        """Slots still free for transporters."""
        return self.slots_requested - self.slots_filled


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One audit row: a transition from ``from_status`` to ``to_status``."""

    kind: str
    entity_id: EntityId
    from_status: BroadcastStatus | None
    to_status: BroadcastStatus
    trigger: str
    actor: str | None
    reason: str | None
    at: datetime
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecipientRecord:
    """A transporter who was notified of a broadcast, and what it holds."""

    transporter_id: str
    notified_at: datetime
    slots_held: int = 0
    response: str | None = None
