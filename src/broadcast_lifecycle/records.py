"""Immutable records the library hands out: snapshots, history entries, recipients."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from .states import BroadcastStatus

__all__ = ["BroadcastSnapshot", "EntityId", "HistoryEntry", "IdempotentOutcome", "RecipientRecord"]

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


    def to_json(self) -> dict[str, Any]:
        """The snapshot as JSON-ready values (the id is stored apart; see :meth:`from_json`)."""
        return {
            "customerId": self.customer_id, "status": self.status.value, "slotsRequested": self.slots_requested,
            "slotsFilled": self.slots_filled, "version": self.version,
            "stateChangedAt": self.state_changed_at.isoformat(), "createdAt": self.created_at.isoformat(),
            "expiresAt": self.expires_at.isoformat() if self.expires_at else None,
        }

    @classmethod
    def from_json(cls, kind: str, entity_id: EntityId, data: dict[str, Any]) -> BroadcastSnapshot:
        """Rebuild a snapshot from :meth:`to_json` output."""
        expires = data["expiresAt"]
        return cls(
            kind=kind, id=entity_id, customer_id=data["customerId"], status=BroadcastStatus(data["status"]),
            slots_requested=data["slotsRequested"], slots_filled=data["slotsFilled"], version=data["version"],
            state_changed_at=datetime.fromisoformat(data["stateChangedAt"]),
            created_at=datetime.fromisoformat(data["createdAt"]),
            expires_at=datetime.fromisoformat(expires) if expires else None,
        )


@dataclass(frozen=True, slots=True)
class IdempotentOutcome:
    """The first outcome of a command sent with an idempotency key, and who sent it with what.

    ``fingerprint`` is a digest of the command's arguments (see
    :func:`broadcast_lifecycle.idempotency.fingerprint`): a key that comes back with another actor,
    command, broadcast or arguments is refused, never answered with this outcome.
    """

    key: str
    trigger: str
    snapshot: BroadcastSnapshot
    actor: str | None = None
    fingerprint: str = ""

    def to_json(self) -> dict[str, Any]:
        """What a store keeps in its outcome column (the key, kind and id are stored apart)."""
        return {"snapshot": self.snapshot.to_json(), "actor": self.actor, "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, key: str, trigger: str, kind: str, entity_id: EntityId,
                  data: dict[str, Any]) -> IdempotentOutcome:
        """Rebuild an outcome from :meth:`to_json` output."""
        return cls(key, trigger, BroadcastSnapshot.from_json(kind, entity_id, data["snapshot"]),
                   data.get("actor"), data.get("fingerprint", ""))


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
