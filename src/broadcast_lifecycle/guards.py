"""The built-in guards and branch conditions named in the transition table.

A guard returns ``None`` to allow a transition or a sentence saying why it refuses. Hosts add
their own guards with the same signature (see :class:`~broadcast_lifecycle.service.BroadcastLifecycle`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from .records import BroadcastSnapshot
from .states import BroadcastStatus

__all__ = ["BRANCH_TESTS", "GUARDS", "CommandContext", "Guard"]


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a command brings besides the snapshot: the time, who acts, and the command's arguments.

    ``actor`` is who sent the command (an accept's or release's defaults to its transporter, a
    create's to its customer, the sweeper's is ``"system"``). ``holding`` is the number of slots
    ``transporter_id`` holds, or ``None`` when that transporter was never notified of the broadcast.
    A host guard gets this and the broadcast as loaded, so authorization needs no extra read::

        def owner_only(broadcast: BroadcastSnapshot, ctx: CommandContext) -> str | None:
            if ctx.actor != broadcast.customer_id:
                return f"only customer {broadcast.customer_id} may cancel"
            return None
    """

    now: datetime
    slots: int = 1
    transporter_id: str | None = None
    holding: int | None = None
    deadline: datetime | None = None
    allow_partial_trip: bool = False
    actor: str | None = None


Guard = Callable[[BroadcastSnapshot, CommandContext], "str | None"]
"""A check that returns ``None`` to allow the transition or the reason it refuses (the reason
becomes :attr:`TransitionRefused.reason <broadcast_lifecycle.errors.TransitionRefused.reason>`)."""


def _deadline_in_future(snap: BroadcastSnapshot, ctx: CommandContext) -> str | None:
    """A deadline in the future is set (ttl=, expires_at= or the kind's default ttl)."""
    if ctx.deadline is None:
        return f"no deadline: pass ttl= or deadline=, or configure a default ttl for {snap.kind}"
    if ctx.deadline <= ctx.now:
        return f"deadline {ctx.deadline.isoformat()} is not in the future (now {ctx.now.isoformat()})"
    return None


def _deadline_later(snap: BroadcastSnapshot, ctx: CommandContext) -> str | None:
    """The new deadline is later than the broadcast's current one."""
    if snap.expires_at is None:
        return f"this {snap.kind} has no deadline to extend (activate sets one)"
    if ctx.deadline is None or ctx.deadline <= snap.expires_at:
        new = ctx.deadline.isoformat() if ctx.deadline is not None else "none"
        return f"new deadline {new} is not later than the current one, {snap.expires_at.isoformat()}"
    return None


def _transporter_notified(snap: BroadcastSnapshot, ctx: CommandContext) -> str | None:
    """The transporter was notified of the broadcast (it is a recipient)."""
    if ctx.holding is None:
        return f"transporter {ctx.transporter_id} was not notified of this {snap.kind}"
    return None


def _slots_available(snap: BroadcastSnapshot, ctx: CommandContext) -> str | None:
    """The accepted slots fit in the open ones (filled + n <= requested)."""
    if snap.slots_filled + ctx.slots <= snap.slots_requested:
        return None
    if snap.slots_filled >= snap.slots_requested:
        return f"{snap.slots_filled} of {snap.slots_requested} slots already filled"
    return f"only {snap.slots_open} of {snap.slots_requested} slots open, asked for {ctx.slots}"


def _holds_slots(snap: BroadcastSnapshot, ctx: CommandContext) -> str | None:
    """The transporter holds at least the n slots it releases."""
    if ctx.holding is None:
        return f"transporter {ctx.transporter_id} was not notified of this {snap.kind}"
    if ctx.holding < ctx.slots:
        return (f"transporter {ctx.transporter_id} holds {ctx.holding} slot{'' if ctx.holding == 1 else 's'}, "
                f"asked to release {ctx.slots}")
    return None


def _trip_fill_policy(snap: BroadcastSnapshot, ctx: CommandContext) -> str | None:
    """Every slot is filled, unless the kind sets allow_partial_trip=True."""
    if snap.status is BroadcastStatus.PARTIALLY_FILLED and not ctx.allow_partial_trip:
        return (
            f"{snap.slots_filled} of {snap.slots_requested} slots filled; "
            f"{snap.kind} needs every slot filled to start the trip"
        )
    return None


def _deadline_passed(snap: BroadcastSnapshot, ctx: CommandContext) -> str | None:
    """The deadline has passed (now >= expires_at)."""
    if snap.expires_at is None:
        return "no deadline is set"
    if ctx.now < snap.expires_at:
        return f"deadline not passed: expires at {snap.expires_at.isoformat()}"
    return None


GUARDS: Mapping[str, Guard] = {
    "deadline_in_future": _deadline_in_future,
    "deadline_later": _deadline_later,
    "transporter_notified": _transporter_notified,
    "slots_available": _slots_available,
    "holds_slots": _holds_slots,
    "trip_fill_policy": _trip_fill_policy,
    "deadline_passed": _deadline_passed,
}
"""Built-in guards by the name the table uses."""

BRANCH_TESTS: Mapping[str, Callable[[BroadcastSnapshot, CommandContext], bool]] = {
    "fills_all": lambda snap, ctx: snap.slots_filled + ctx.slots == snap.slots_requested,
    "empties": lambda snap, ctx: snap.slots_filled - ctx.slots == 0,
}
"""Branch conditions by name (see :data:`broadcast_lifecycle.lifecycle.BRANCHES`)."""
