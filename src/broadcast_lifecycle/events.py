"""Events announced after a transition commits, and who receives them.

Pure data: this module builds frozen event values and their JSON-ready payloads. Sending them is
the bus's job (:mod:`broadcast_lifecycle.bus`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, NamedTuple
from uuid import UUID

from .records import BroadcastSnapshot, EntityId
from .states import BroadcastStatus

if TYPE_CHECKING:
    from .kinds import KindConfig

__all__ = ["BroadcastEvent", "Recipient", "Topic", "build_events", "topics_for"]


class Topic(str, Enum):
    """What an event announces; the kind turns it into a wire name."""

    STATE_CHANGED = "state_changed"
    """Every transition, creation included: to the customer."""
    FULLY_FILLED = "fully_filled"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


_ANNOUNCED_TO_ALL: dict[BroadcastStatus, Topic] = {
    BroadcastStatus.FULLY_FILLED: Topic.FULLY_FILLED,
    BroadcastStatus.EXPIRED: Topic.EXPIRED,
    BroadcastStatus.CANCELLED: Topic.CANCELLED,
    BroadcastStatus.COMPLETED: Topic.COMPLETED,
}

_TOPICS: dict[BroadcastStatus, tuple[Topic, ...]] = {
    status: (Topic.STATE_CHANGED, *((_ANNOUNCED_TO_ALL[status],) if status in _ANNOUNCED_TO_ALL else ()))
    for status in BroadcastStatus
}


def topics_for(dest: BroadcastStatus) -> tuple[Topic, ...]:
    """The topics a transition into ``dest`` announces."""
    return _TOPICS[dest]


class Recipient(NamedTuple):
    """Someone an event is addressed to."""

    role: Literal["customer", "transporter"]
    id: str


@dataclass(frozen=True, slots=True)
class BroadcastEvent:
    """One event for the socket layer: a name, its recipients and the broadcast's new state."""

    event_id: str
    name: str
    topic: Topic
    kind: str
    id_field: str
    entity_id: EntityId
    recipients: tuple[Recipient, ...]
    status: BroadcastStatus
    previous_status: BroadcastStatus | None
    state_changed_at: datetime
    version: int
    slots_filled: int
    slots_requested: int

    def payload(self) -> dict[str, Any]:
        """The JSON-ready body for web clients (camelCase, ISO-8601 UTC times)."""
        entity_id = str(self.entity_id) if isinstance(self.entity_id, UUID) else self.entity_id
        return {
            self.id_field: entity_id,
            "status": self.status.value,
            "previousStatus": self.previous_status.value if self.previous_status else None,
            "stateChangedAt": self.state_changed_at.astimezone(timezone.utc).isoformat(),
            "version": self.version,
            "eventId": self.event_id,
            "slotsFilled": self.slots_filled,
            "slotsRequested": self.slots_requested,
        }


def build_events(
    kind: KindConfig,
    after: BroadcastSnapshot,
    previous_status: BroadcastStatus | None,
    topics: Sequence[Topic],
    transporters: Sequence[str],
) -> tuple[BroadcastEvent, ...]:
    """The events of one transition: state-changed to the customer, the rest to everyone notified."""
    customer = (Recipient("customer", after.customer_id),)
    everyone = customer + tuple(Recipient("transporter", t) for t in transporters)
    return tuple(
        BroadcastEvent(
            event_id=str(uuid.uuid4()),
            name=kind.event_name(topic),
            topic=topic,
            kind=after.kind,
            id_field=kind.id_field,
            entity_id=after.id,
            recipients=customer if topic is Topic.STATE_CHANGED else everyone,
            status=after.status,
            previous_status=previous_status,
            state_changed_at=after.state_changed_at,
            version=after.version,
            slots_filled=after.slots_filled,
            slots_requested=after.slots_requested,
        )
        for topic in topics
    )

