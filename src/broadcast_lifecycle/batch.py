"""Commands on one broadcast decided and written together, in one transaction, by a store that can
(:class:`~broadcast_lifecycle.stores.base.DecidesInBatch`): what :mod:`.async_queues` runs for the commands
that queued behind a write to their broadcast.

Writing and announcing are apart: :func:`write_batch` writes the batch (in the task that writes it) and
:func:`finish` announces one command's write and makes its result (in that command's own task), so each
caller waits for its own events' receivers only, as a command run alone does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from .command import Command
from .errors import error_per_caller
from .records import EntityId
from .results import CommandResult, WritePath
from .stores.base import BatchNotWritten, Change, Committed, DecidesInBatch, Loaded

if TYPE_CHECKING:
    from .service import BroadcastLifecycle

__all__ = ["RUN_ALONE", "Outcome", "Written", "finish", "write_batch"]

logger = logging.getLogger(__name__)


class Written(NamedTuple):
    """One command's committed write in a batch, and the change it was decided as."""

    committed: Committed
    change: Change


class _RunAlone:
    def __repr__(self) -> str:
        return "RUN_ALONE"


RUN_ALONE = _RunAlone()
"""A command's outcome when its batch was not written (rolled back whole): it runs on its own."""

Outcome = Written | Exception | _RunAlone
"""What a command of a batch gets: its write, its refusal (or the error of a commit whose outcome is
unknown), or :data:`RUN_ALONE`."""


def write_batch(lifecycle: BroadcastLifecycle, store: DecidesInBatch, commands: Sequence[Command],
                entity_id: EntityId) -> list[Outcome]:
    """Each command's outcome, in order, as if run one after another: decided on the broadcast as the
    commands before it left it and written in one transaction, not yet announced (see :func:`finish`)."""
    planned: list[Change | None] = [None] * len(commands)

    def plan_of(index: int, command: Command) -> Callable[[Loaded], Change]:
        def plan(loaded: Loaded) -> Change:
            change = planned[index] = lifecycle._plan(command, loaded)
            return change
        return plan

    try:
        outcomes = store.decide_and_apply_batch(
            commands[0].config.name, entity_id,
            [(command.transporter_id, plan_of(i, command)) for i, command in enumerate(commands)])
    except BatchNotWritten as exc:  # nothing written: each meets the failure on its own, worded for it
        logger.info("%d commands on %s %r not written together (%s); each runs on its own",
                    len(commands), commands[0].config.name, entity_id, exc)
        return [RUN_ALONE] * len(commands)
    except Exception as exc:  # the commit's outcome is unknown: each caller hears it, as alone it would
        return [error_per_caller(exc) for _ in commands]
    written: list[Outcome] = []
    for outcome, change in zip(outcomes, planned, strict=True):
        if isinstance(outcome, Exception):
            written.append(outcome)
        else:
            assert change is not None  # every committed write was planned
            written.append(Written(outcome, change))
    return written


def finish(lifecycle: BroadcastLifecycle, written: Written) -> CommandResult:
    """Announce ``written`` and return its command's result (or raise the refusal of a command that found
    its broadcast overdue and expired it, as a command run alone does)."""
    lifecycle._announce(written.committed)
    return lifecycle._result_of(written.change, written.committed, WritePath.BATCHED)
