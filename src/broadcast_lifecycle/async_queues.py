"""Commands on one hot broadcast from one event loop, queued and written together.

On PostgreSQL every write to a broadcast holds its row lock until its commit, and each commit waits for
its flush to disk: N tasks accepting on one broadcast at once take N commits, one after another. Here
the first command on a broadcast runs as usual; the commands that arrive while it is being written wait
in this process, not on the row lock, and once it has committed they are decided and written in one
transaction (:func:`~broadcast_lifecycle.batch.write_batch`): one commit for them all, each with its own
result, error, history row and events, in the order they arrived. Commands that arrive while a batch
is being written make the next batch. Only the writes wait for each other: each command's events are
announced in its own task once its batch has committed, while the next batch is written (clients order
a broadcast's events by version), so a slow receiver holds up its own command's caller only.

Only commands the store would write on their own, with no host transaction, idempotency key or host
guard, queue (see ``BroadcastLifecycle._queues_for``); everything else takes its usual path.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from typing import TYPE_CHECKING

from .batch import Outcome, Written, finish, write_batch
from .command import Command
from .records import EntityId
from .results import CommandResult
from .stores.async_sqlalchemy import bridge, wait_in_bridge
from .stores.base import Committed, DecidesInBatch

if TYPE_CHECKING:
    from .service import BroadcastLifecycle

__all__ = ["MAX_BATCH", "CommandQueues"]

MAX_BATCH = 256
"""The most commands one transaction writes (it holds the broadcast's row lock until it commits)."""

_Key = tuple[asyncio.AbstractEventLoop, str, EntityId]
"""A broadcast, per loop: tasks of different loops never wait for each other."""


class _Queued:
    __slots__ = ("command", "outcome")

    def __init__(self, command: Command, loop: asyncio.AbstractEventLoop) -> None:
        self.command = command
        self.outcome: asyncio.Future[Outcome] = loop.create_future()


class CommandQueues:
    """Per broadcast, the commands waiting behind the write in progress (called in the greenlet bridge)."""

    def __init__(self, lifecycle: BroadcastLifecycle, store: DecidesInBatch) -> None:
        self._lc, self._store = lifecycle, store
        self._waiting: dict[_Key, deque[_Queued]] = {}  # a key is here while a write to its broadcast runs
        self._writers: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps weak ones)

    def run(self, command: Command, entity_id: EntityId) -> CommandResult:
        """Run ``command`` now if nothing is being written to its broadcast, else with the next batch."""
        loop = asyncio.get_running_loop()
        key = (loop, command.config.name, entity_id)
        waiting = self._waiting.get(key)
        if waiting is None:
            self._waiting[key] = deque()
            handed_on = False

            def announce(committed: Committed) -> None:
                nonlocal handed_on
                handed_on = True
                self._hand_on(key)
                self._lc._announce(committed)

            try:
                return self._lc._run_alone(command, entity_id, None, announce)
            finally:
                if not handed_on:  # refused, or failed: nothing was written
                    self._hand_on(key)
        queued = _Queued(command, loop)
        waiting.append(queued)
        try:
            outcome = wait_in_bridge(queued.outcome)
        except asyncio.CancelledError:
            if queued in waiting:  # its batch had not been formed: nothing of it is written
                waiting.remove(queued)
            raise  # else its write stands (if its batch had begun); its events wait in the outbox for the relay
        if isinstance(outcome, Written):
            return finish(self._lc, outcome)  # its own events, announced in its own task
        if isinstance(outcome, Exception):
            raise outcome  # its refusal, or the error of a commit whose outcome is unknown
        return self._lc._run_alone(command, entity_id, None)  # RUN_ALONE: its batch was not written

    def _hand_on(self, key: _Key) -> None:
        """A write to ``key``'s broadcast has committed, or ended without writing: write what queued
        meanwhile (up to :data:`MAX_BATCH`) as one batch, in a task of its own (so no caller's
        cancellation stops it half-way), or forget the broadcast."""
        waiting = self._waiting[key]
        batch = [waiting.popleft() for _ in range(min(len(waiting), MAX_BATCH))]
        if not batch:
            del self._waiting[key]
            return
        # An empty context: the batch is no caller's, and each caller announces its own events in its own.
        writer = contextvars.Context().run(key[0].create_task, bridge(self._write, key, batch))
        self._writers.add(writer)
        writer.add_done_callback(lambda task: self._after(task, key, batch))

    def _write(self, key: _Key, batch: list[_Queued]) -> None:
        batch = [queued for queued in batch if not queued.outcome.done()]  # cancelled before the batch began
        if not batch:
            self._hand_on(key)
            return
        outcomes = write_batch(self._lc, self._store, [queued.command for queued in batch], key[2])
        self._hand_on(key)
        for queued, outcome in zip(batch, outcomes, strict=True):
            if not queued.outcome.done():  # else its caller was cancelled while the batch ran: the write stands
                queued.outcome.set_result(outcome)

    def _after(self, writer: asyncio.Task[None], key: _Key, batch: list[_Queued]) -> None:
        """A batch's task has ended: if it ended without handing on (cancelled, its loop closing; or failed),
        nobody will answer its commands or the ones behind it: cancel them and forget the broadcast."""
        self._writers.discard(writer)
        if writer.cancelled() or writer.exception() is not None:
            waiting = self._waiting.pop(key, deque())
            for queued in [*batch, *waiting]:
                queued.outcome.cancel()
