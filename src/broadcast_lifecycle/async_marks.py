"""Events marked delivered together, for the commands of one event loop.

After a command's receivers have handled its events, the outbox rows are marked delivered: on
PostgreSQL an autocommit UPDATE each, each with a commit that waits for its flush to disk. Here the
first mark runs as usual and the marks that come while it is being written wait in the process, then
go in one UPDATE (one commit) for all of them; each caller still returns only once its own events are
marked, and a failure reaches every caller whose events it left unmarked (the relay delivers those
again later: receivers de-duplicate on ``eventId``).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from .errors import error_per_caller
from .stores.async_sqlalchemy import bridge, wait_in_bridge

if TYPE_CHECKING:
    from .stores.base import BroadcastStore

__all__ = ["MarkQueue"]


class _Mark:
    __slots__ = ("at", "done", "event_ids")

    def __init__(self, event_ids: Sequence[str], at: datetime, loop: asyncio.AbstractEventLoop) -> None:
        self.event_ids, self.at = event_ids, at
        self.done: asyncio.Future[None] = loop.create_future()


class MarkQueue:
    """Per loop, the marks waiting behind the one being written (called in the greenlet bridge)."""

    def __init__(self, store: BroadcastStore) -> None:
        self._store = store
        self._waiting: dict[asyncio.AbstractEventLoop, list[_Mark]] = {}  # a loop is here while a mark runs
        self._writers: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps weak ones)

    def mark_delivered(self, event_ids: Sequence[str], at: datetime) -> None:
        """Mark ``event_ids`` delivered at ``at``: now, or with the marks that came while one was written."""
        loop = asyncio.get_running_loop()
        waiting = self._waiting.get(loop)
        if waiting is None:
            self._waiting[loop] = []
            try:
                self._store.mark_delivered(event_ids, at)
            finally:
                self._hand_on(loop)
            return
        mark = _Mark(event_ids, at, loop)
        waiting.append(mark)
        try:
            wait_in_bridge(mark.done)
        except asyncio.CancelledError:
            if mark in waiting:  # not written: the relay delivers those events again
                waiting.remove(mark)
            raise

    def _hand_on(self, loop: asyncio.AbstractEventLoop) -> None:
        marks = self._waiting[loop]
        if not marks:
            del self._waiting[loop]
            return
        self._waiting[loop] = []
        writer = contextvars.Context().run(loop.create_task, bridge(self._write, loop, marks))
        self._writers.add(writer)
        writer.add_done_callback(lambda task: self._after(task, loop, marks))

    def _write(self, loop: asyncio.AbstractEventLoop, marks: list[_Mark]) -> None:
        marks = [mark for mark in marks if not mark.done.done()]  # not those cancelled before it began
        try:
            if marks:
                self._store.mark_delivered([i for mark in marks for i in mark.event_ids],
                                           max(mark.at for mark in marks))
        except Exception as exc:
            for mark in marks:
                if not mark.done.done():
                    mark.done.set_exception(error_per_caller(exc))
        else:
            for mark in marks:
                if not mark.done.done():
                    mark.done.set_result(None)
        self._hand_on(loop)  # (a cancelled task does not get here: _after answers for it)

    def _after(self, writer: asyncio.Task[None], loop: asyncio.AbstractEventLoop, marks: list[_Mark]) -> None:
        """A mark's task ended: if it never ran (cancelled, its loop closing), nobody answers its marks or the
        ones behind it: cancel them and forget the loop."""
        self._writers.discard(writer)
        if writer.cancelled():
            for mark in [*marks, *self._waiting.pop(loop, [])]:
                mark.done.cancel()
