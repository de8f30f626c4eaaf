"""What a command hands back to the host: the broadcast as committed, the events it produced, and how."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .events import BroadcastEvent
from .records import BroadcastSnapshot, EntityId
from .states import BroadcastStatus

__all__ = ["CommandResult", "WritePath"]


class WritePath(str, Enum):
    """How a command reached the store (for logs and debugging; every path gives the same guarantees)."""

    INSERT = "insert"
    """``create``: one insert of the row, its history row and its event."""
    ADOPT = "adopt"
    """``adopt``: the host inserted the row; the creation's history row and event were added to it."""
    GENERAL = "general"
    """Load, decide, then a compare-and-set write (retried on a lost race)."""
    UNDER_LOCK = "under_lock"
    """Load, decide and write in one transaction that holds the write lock (SQLite)."""
    IN_PLACE = "in_place"
    """Guards in the write itself, no read first (PostgreSQL): an accept or release, or a transition
    decided by its own statement generated from the table."""
    BATCHED = "batched"
    """Decided and written with other commands on the same broadcast that queued behind a write to it, in
    one transaction holding the row lock (asyncio hosts on PostgreSQL): one commit for them all."""
    RECIPIENTS = "recipients"
    """``notify_more``: recipients (and the offer to the new ones) added under the broadcast's row lock; no state
    change."""
    REPLAYED = "replayed"
    """Nothing was written: the idempotency key's first outcome was returned."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    """The outcome of one command.

    ``events`` are the events this command produced (already sent to the bus, or to be sent when
    the host's transaction commits); a replayed command produced none. ``replayed`` is True when an
    earlier command with the same idempotency key had already done the work and ``snapshot`` is the
    broadcast as that command left it.
    """

    snapshot: BroadcastSnapshot
    events: tuple[BroadcastEvent, ...] = ()
    path: WritePath

    @property
    def replayed(self) -> bool:
        """True when nothing was written: the idempotency key's first outcome was returned."""
        return self.path is WritePath.REPLAYED

    @property
    def id(self) -> EntityId:
        """The broadcast's id."""
        return self.snapshot.id

    @property
    def status(self) -> BroadcastStatus:
        """The broadcast's state after the command."""
        return self.snapshot.status

    @property
    def version(self) -> int:
        """The broadcast's version after the command."""
        return self.snapshot.version
