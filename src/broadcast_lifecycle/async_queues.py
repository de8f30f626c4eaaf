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
from collections import deque
from typing import TYPE_CHECKING

from .batch import Written, finish, write_batch
from .command import Command
from .records import EntityId
from .results import CommandResult
from .stores.async_sqlalchemy import bridge, wait_in_bridge
from .stores.base import Committed, DecidesInBatch

if TYPE_CHECKING:
    from .service import BroadcastLifecycle

__all__ = ["CommandQueues"]

_Key = tuple[asyncio.AbstractEventLoop, str, EntityId]
"""A broadcast, per loop: tasks of different loops never wait for each other."""


_ALONE = None
"""A queued command's outcome when its batch could not be written: it runs on its own."""


class _Queued:
    __slots__ = ("command", "outcome")

    def __init__(self, command: Command, loop: asyncio.AbstractEventLoop) -> None:
        self.command = command
        self.outcome: asyncio.Future[Written | Exception | None] = loop.create_future()


class CommandQueues:
    """Per broadcast, the commands waiting behind the write in progress (called in the greenlet bridge)."""

    def __init__(self, lifecycle: BroadcastLifecycle, store: DecidesInBatch) -> None:
        self._lc, self._store = lifecycle, store
        self._waiting: dict[_Key, deque[_Queued]] = {}  # a key is here while a write to its broadcast runs
        self._batches: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps weak ones)

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
            if queued in waiting:  # its batch had not begun: nothing of it is written
                waiting.remove(queued)
            raise  # else its write stands; its events wait in the outbox for the relay
        if outcome is _ALONE:
            return self._lc._run_alone(command, entity_id, None)
        if isinstance(outcome, Exception):
            raise outcome
        return finish(self._lc, outcome)  # its own events, announced in its own task

    def _hand_on(self, key: _Key) -> None:
        """The write to ``key``'s broadcast has ended: write what queued meanwhile as one batch, in a task of
        its own (no caller's cancellation stops it half-way), or forget the broadcast."""
        waiting = self._waiting[key]
        batch = [queued for queued in waiting if not queued.outcome.done()]  # not those cancelled just now
        waiting.clear()
        if not batch:
            del self._waiting[key]
            return
        task = key[0].create_task(bridge(self._write, key, batch))
        self._batches.add(task)
        task.add_done_callback(self._batches.discard)

    def _write(self, key: _Key, batch: list[_Queued]) -> None:
        try:
            outcomes = write_batch(self._lc, self._store, [queued.command for queued in batch], key[2])
        except BaseException:  # this task was cancelled (its loop is closing): nobody gets an answer
            for queued in batch:
                queued.outcome.cancel()
            self._hand_on(key)
            raise
        self._hand_on(key)
        for index, queued in enumerate(batch):
            if not queued.outcome.done():  # else its caller was cancelled while the batch ran: the write stands
                queued.outcome.set_result(_ALONE if outcomes is None else outcomes[index])
