"""Commands on one broadcast decided and written together, in one transaction, by a store that can
(:class:`~broadcast_lifecycle.stores.base.DecidesInBatch`): what :mod:`.async_queues` runs for the commands
that queued behind a write to their broadcast.

Writing and announcing are apart: :func:`write_batch` writes the batch (in the task that writes it) and
:func:`finish` announces one command's write and makes its result (in that command's own task), so each
caller waits for its own events' receivers only, as a command run alone does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from ._quick import quick_constructor
from .command import Command
from .errors import TransitionRefused
from .records import EntityId
from .results import CommandResult, WritePath
from .stores.base import Change, Committed, DecidesInBatch, Loaded

if TYPE_CHECKING:
    from .service import BroadcastLifecycle

__all__ = ["Written", "finish", "write_batch"]

_result = quick_constructor(CommandResult)


class Written(NamedTuple):
    """One command's committed write in a batch, and the change it was decided as."""

    committed: Committed
    change: Change


def write_batch(lifecycle: BroadcastLifecycle, store: DecidesInBatch, commands: Sequence[Command],
                entity_id: EntityId) -> list[Written | Exception] | None:
    """Each command's committed write or refusal, in order, as if run one after another: decided on the
    broadcast as the commands before it left it, written in one transaction, not yet announced (see
    :func:`finish`). ``None`` if the batch could not be written (a store error, a policy's unique index,
    an unknown broadcast): nothing of it was, and each command is to run on its own, where it meets the
    failure worded for it."""
    planned: list[Change | None] = [None] * len(commands)

    def plan_of(index: int, command: Command) -> Callable[[Loaded], Change]:
        def plan(loaded: Loaded) -> Change:
            planned[index] = lifecycle._plan(command, loaded)
            return planned[index]  # type: ignore[return-value]
        return plan

    try:
        outcomes = store.decide_and_apply_batch(
            commands[0].config.name, entity_id,
            [(command.transporter_id, plan_of(i, command)) for i, command in enumerate(commands)])
    except Exception:  # rolled back whole
        return None
    written: list[Written | Exception] = []
    for outcome, change in zip(outcomes, planned, strict=True):
        if isinstance(outcome, Exception):
            written.append(outcome)
        else:
            assert change is not None  # every committed write was planned
            written.append(Written(outcome, change))
    return written


def finish(lifecycle: BroadcastLifecycle, written: Written) -> CommandResult:
    """Announce ``written`` and return its command's result (or raise the refusal of a command that found
    its broadcast overdue and expired it, as :meth:`BroadcastLifecycle._run_alone` does)."""
    committed, change = written
    lifecycle._announce(committed)
    before = change.before
    if change.decision.superseded is not None and before.expires_at is not None:
        raise TransitionRefused(before.kind, before.id, before.status.value, change.decision.superseded.value,
                                f"expired at {before.expires_at.isoformat()}", code="expired")
    return _result(snapshot=committed.snapshot, events=committed.events, path=WritePath.BATCHED)
