"""Commands on one hot broadcast from one event loop, queued and written together.

On PostgreSQL every write to a broadcast holds its row lock until its commit, and each commit waits for
its flush to disk: N tasks accepting on one broadcast at once take N commits, one after another. Here
the first command on a broadcast runs as usual; the commands that arrive while it is being written wait
in this process, not on the row lock, and once it has committed they are decided and written in one
transaction (:func:`~broadcast_lifecycle.batch.write_batch`): one commit for them all, each with its own
result, error, history row and events, in the order they arrived (see :mod:`.async_coalesce`). Only the
writes wait for each other: each command's events are announced in its own task once its batch has
committed, while the next batch is written (clients order a broadcast's events by version), so a slow
receiver holds up its own command's caller only.

Only commands the store would write on their own, with no host transaction, idempotency key or host
guard, queue (see ``BroadcastLifecycle._queues_for``); everything else takes its usual path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .async_coalesce import Coalescer
from .batch import Outcome, Written, finish, write_batch
from .command import Command
from .records import EntityId
from .results import CommandResult
from .stores.base import Committed, DecidesInBatch

if TYPE_CHECKING:
    from .service import BroadcastLifecycle

__all__ = ["MAX_BATCH", "CommandQueues"]

MAX_BATCH = 256
"""The most commands one transaction writes (it holds the broadcast's row lock until it commits)."""


class CommandQueues:
    """Per broadcast, the commands waiting behind the write in progress (called in the greenlet bridge)."""

    def __init__(self, lifecycle: BroadcastLifecycle, store: DecidesInBatch) -> None:
        self._lc, self._store = lifecycle, store
        self._queue: Coalescer[tuple[str, EntityId], Command, Outcome] = Coalescer(self._write, lambda: MAX_BATCH)

    def run(self, command: Command, entity_id: EntityId) -> CommandResult:
        """Run ``command`` now if nothing is being written to its broadcast, else with the next batch."""
        key = (command.config.name, entity_id)
        if self._queue.enter(key):
            handed_on = False

            def announce(committed: Committed) -> None:
                nonlocal handed_on
                handed_on = True
                self._queue.leave(key)  # committed: the next batch may be written while this one's events go
                self._lc._announce(committed)

            try:
                return self._lc._run_alone(command, entity_id, None, announce)
            finally:
                if not handed_on:  # refused, or failed: nothing was written
                    self._queue.leave(key)
        # Cancelled before its batch formed: not written; after: its write stands, its events wait in the
        # outbox for the relay.
        outcome = self._queue.wait(key, command)
        if isinstance(outcome, Written):
            return finish(self._lc, outcome)  # its own events, announced in its own task
        if isinstance(outcome, Exception):
            raise outcome  # its refusal, or the error of a commit whose outcome is unknown
        return self._lc._run_alone(command, entity_id, None)  # RUN_ALONE: its batch was not written

    def _write(self, key: tuple[str, EntityId], commands: list[Command]) -> list[Outcome]:
        return write_batch(self._lc, self._store, commands, key[1])
