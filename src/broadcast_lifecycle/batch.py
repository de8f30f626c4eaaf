"""Commands on one broadcast decided and written together, in one transaction, by a store that can
(:class:`~broadcast_lifecycle.stores.base.DecidesInBatch`): what :mod:`.async_queues` runs for the commands
that queued behind a write to their broadcast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ._quick import quick_constructor
from .command import Command
from .errors import TransitionRefused
from .records import EntityId
from .results import CommandResult, WritePath
from .stores.base import Change, Committed, DecidesInBatch, Loaded

if TYPE_CHECKING:
    from .service import BroadcastLifecycle

__all__ = ["run_batch"]

_result = quick_constructor(CommandResult)


def run_batch(lifecycle: BroadcastLifecycle, store: DecidesInBatch, commands: Sequence[Command],
              entity_id: EntityId, written: Callable[[], None]) -> list[CommandResult | Exception]:
    """Each command's result or error, in order, as if run one after another: decided on the broadcast
    as the commands before it left it, written in one transaction; then ``written()`` is called and each
    committed write is announced. If the batch cannot be written (a store error, a policy's unique index),
    nothing of it was: ``written()`` is called and each command runs again on its own, with the outcome it
    gets there."""
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
    except Exception:  # rolled back whole: each command meets the failure on its own, worded
        written()
        return [_alone(lifecycle, command, entity_id) for command in commands]
    written()
    results: list[CommandResult | Exception] = []
    for outcome, change in zip(outcomes, planned, strict=True):
        if not isinstance(outcome, Committed):
            results.append(outcome)
            continue
        lifecycle._announce(outcome)
        assert change is not None
        before = change.before
        if change.decision.superseded is not None and before.expires_at is not None:  # as BroadcastLifecycle._run
            results.append(TransitionRefused(before.kind, before.id, before.status.value,
                                             change.decision.superseded.value,
                                             f"expired at {before.expires_at.isoformat()}", code="expired"))
        else:
            results.append(_result(snapshot=outcome.snapshot, events=outcome.events, path=WritePath.BATCHED))
    return results


def _alone(lifecycle: BroadcastLifecycle, command: Command, entity_id: EntityId) -> CommandResult | Exception:
    try:
        return lifecycle._run_alone(command, entity_id, None)
    except Exception as exc:  # the command's outcome, raised in its caller's task
        return exc
