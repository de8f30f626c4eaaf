"""The pure decision: given a snapshot, a trigger and a context, what happens. No I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._quick import quick_constructor
from .errors import InvalidArgument, InvalidTransition, TransitionRefused
from .events import Topic
from .guards import BRANCH_TESTS, GUARDS, CommandContext, Guard
from .lifecycle import ROUTES, Trigger, allowed_from, topics_of
from .records import BroadcastSnapshot, HistoryEntry
from .states import BroadcastStatus

__all__ = ["Decision", "decide", "is_overdue"]

# Members read on every command, as module constants: on Python 3.10 and 3.11 an Enum class's attribute
# is read through EnumType.__getattr__, some 60 ns a read.
_EXPIRE, _OFFERED, _STATE_CHANGED = Trigger.EXPIRE, Topic.OFFERED, Topic.STATE_CHANGED
_EXPIRY_TOPICS = {status: topics_of(Trigger.EXPIRE, status, BroadcastStatus.EXPIRED)
                  for (trigger, status) in ROUTES if trigger is Trigger.EXPIRE}


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :func:`decide`: a transition to apply and the topics to announce.

    ``superseded`` is set when the requested trigger was replaced by ``expire`` because the
    broadcast was overdue: the caller applies the expiry, then reports the request as refused.
    """

    trigger: Trigger
    from_status: BroadcastStatus
    to_status: BroadcastStatus
    fill_delta: int
    expires_at: datetime | None
    topics: tuple[Topic, ...]
    superseded: Trigger | None = None

    def next_snapshot(self, before: BroadcastSnapshot, at: datetime) -> BroadcastSnapshot:
        """``before`` once this decision is applied at ``at``: the new state, fill and deadline,
        stamped ``at``, one version up. Every write path and every store takes it from here."""
        return _snapshot(
            kind=before.kind, id=before.id, customer_id=before.customer_id, status=self.to_status,
            slots_requested=before.slots_requested, slots_filled=before.slots_filled + self.fill_delta,
            version=before.version + 1, state_changed_at=at, created_at=before.created_at,
            expires_at=self.expires_at,
        )

    def history_entry(self, before: BroadcastSnapshot, at: datetime, actor: str | None, reason: str | None,
                      metadata: Mapping[str, Any]) -> HistoryEntry:
        """The audit row of this decision applied to ``before`` at ``at``."""
        return _history_entry(before.kind, before.id, self.from_status, self.to_status, self.trigger.value, actor,
                            reason, at, before.version + 1, dict(metadata))


_decision = quick_constructor(Decision)
_snapshot = quick_constructor(BroadcastSnapshot)
_history_entry = quick_constructor(HistoryEntry)


def is_overdue(snapshot: BroadcastSnapshot, now: datetime) -> bool:
    """True when the deadline has passed and the state is one a deadline can expire."""
    return (snapshot.expires_at is not None and now >= snapshot.expires_at
            and (Trigger.EXPIRE, snapshot.status) in ROUTES)


def decide(
    snapshot: BroadcastSnapshot,
    trigger: Trigger,
    ctx: CommandContext,
    extra_guards: Sequence[Guard] = (),
) -> Decision:
    """Decide ``trigger`` on ``snapshot``, or raise why not.

    Raises :class:`InvalidTransition` when the state does not allow the trigger and
    :class:`TransitionRefused` when a guard (built-in or ``extra_guards``) says no.
    An overdue broadcast is expired whatever the trigger (see ``Decision.superseded``).
    """
    status = snapshot.status
    if trigger is not _EXPIRE and is_overdue(snapshot, ctx.now):
        return _decision(Trigger.EXPIRE, status, BroadcastStatus.EXPIRED, 0, snapshot.expires_at,
                         _EXPIRY_TOPICS[status], superseded=trigger)
    route = ROUTES.get((trigger, status))
    if route is None:
        raise InvalidTransition(snapshot.kind, snapshot.id, status.value, trigger.value,
                                (s.value for s in allowed_from(trigger)))
    for name in route.guards:
        reason = GUARDS[name](snapshot, ctx)
        if reason is not None:
            raise TransitionRefused(snapshot.kind, snapshot.id, status.value, trigger.value, reason, code=name)
    for guard in extra_guards:
        reason = guard(snapshot, ctx)
        if reason is not None:
            if not isinstance(reason, str) or not reason:  # e.g. a predicate's False: it must not refuse silently
                name = getattr(guard, "__qualname__", repr(guard))
                raise InvalidArgument(f"guard {name} returned {reason!r}: a guard returns None to allow, or a "
                                      "non-empty sentence saying why it refuses")
            raise TransitionRefused(snapshot.kind, snapshot.id, status.value, trigger.value, reason,
                                    code="host_guard")
    taken = route.branches[-1]
    for branch in route.branches:
        if branch.name is None or BRANCH_TESTS[branch.name](snapshot, ctx) is branch.expected:
            taken = branch
            break
    expires_at = ctx.deadline if route.sets_deadline else snapshot.expires_at
    announces = taken.announces
    if _OFFERED in announces and expires_at is not None and ctx.now >= expires_at:
        # Past the deadline the reopened broadcast is due to expire (any command on it expires it): no re-offer.
        announces = tuple(topic for topic in announces if topic is not _OFFERED)
    return _decision(trigger, status, taken.dest, route.fill * ctx.slots, expires_at,
                     (_STATE_CHANGED, *announces))
