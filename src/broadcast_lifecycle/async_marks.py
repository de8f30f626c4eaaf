"""Events marked delivered together, for the commands of one event loop.

After a command's receivers have handled its events, the outbox rows are marked delivered, in a
transaction whose commit waits for its flush to disk. Here the first mark runs as usual and the marks
that come while it is being written wait in the process, then go in one transaction (one commit) for
all of them (see :mod:`.async_coalesce`), each stamped with the latest of their times. Each caller still
returns only once its own events are marked, and a failure reaches every caller whose events it left
unmarked (the relay delivers those again later: receivers de-duplicate on ``eventId``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from .async_coalesce import Coalescer
from .errors import error_per_caller

if TYPE_CHECKING:
    from .stores.base import BroadcastStore

__all__ = ["MAX_MARKS", "MarkQueue"]

MAX_MARKS = 1000
"""The most marks one transaction writes."""

_Mark = tuple[Sequence[str], datetime]
_EVERY_EVENT = "marks"
"""The one key: marks of any broadcast go together."""


class MarkQueue:
    """The marks waiting behind the one being written, per loop (called in the greenlet bridge)."""

    def __init__(self, store: BroadcastStore) -> None:
        self._store = store
        self._queue: Coalescer[str, _Mark, Exception | None] = Coalescer(self._write, lambda: MAX_MARKS)

    def mark_delivered(self, event_ids: Sequence[str], at: datetime) -> None:
        """Mark ``event_ids`` delivered at ``at``: now, or with the marks that came while one was written.
        Cancelled before its group formed, nothing of it is marked (the relay delivers those events again)."""
        if self._queue.enter(_EVERY_EVENT):
            try:
                self._store.mark_delivered(event_ids, at)
            finally:
                self._queue.leave(_EVERY_EVENT)
            return
        failed = self._queue.wait(_EVERY_EVENT, (event_ids, at))
        if failed is not None:
            raise failed

    def _write(self, key: str, marks: list[_Mark]) -> list[Exception | None]:
        try:
            self._store.mark_delivered([i for event_ids, _ in marks for i in event_ids], max(at for _, at in marks))
        except Exception as exc:  # every caller whose events it left unmarked hears it
            return [error_per_caller(exc) for _ in marks]
        return [None] * len(marks)
