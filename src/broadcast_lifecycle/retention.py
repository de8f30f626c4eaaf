"""Retention: deleting what the library no longer needs, batch by batch.

Delivered outbox events and idempotency records older than a cutoff go; pending, retrying and dead
events always stay. The audit history stays unless the host asks: then the whole history of each
broadcast that reached a terminal state before the cutoff goes, never part of a history (an open
broadcast's history, or the early rows of a long-lived one, are never cut, so every history that
remains starts at its creation and has no gaps). Broadcast rows themselves are never deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .errors import InvalidArgument
from .stores.base import BroadcastStore, PruneTarget

__all__ = ["MAX_BATCH_SIZE", "PruneReport", "prune"]

MAX_BATCH_SIZE = 10_000
"""The largest batch a prune takes in one transaction (a batch holds writers up while it runs)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneReport:
    """What a prune deleted: delivered outbox events (their per-receiver state with them),
    idempotency records, and broadcasts whose history was deleted (0 unless asked for)."""

    before: datetime
    """The cutoff: everything pruned was older than this."""
    outbox: int = 0
    idempotency: int = 0
    history: int = 0


def prune(store: BroadcastStore, before: datetime, *, history: bool = False, batch_size: int = 1000) -> PruneReport:
    """Delete what is older than ``before`` from ``store``, ``batch_size`` rows per transaction."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidArgument(f"batch_size must be a whole number from 1 to {MAX_BATCH_SIZE}, got {batch_size!r}")
    counts = {target: 0 for target in PruneTarget}
    for target in PruneTarget:
        if target is PruneTarget.HISTORY and not history:
            continue
        while True:
            gone = store.prune(target, before, batch_size)
            counts[target] += gone
            if gone < batch_size:
                break
    return PruneReport(before=before, outbox=counts[PruneTarget.OUTBOX],
                       idempotency=counts[PruneTarget.IDEMPOTENCY], history=counts[PruneTarget.HISTORY])
