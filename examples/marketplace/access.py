"""Who may do what: the host guards the lifecycle runs inside each command, and the checks that turn
a refusal into 403 when the user has no part in the broadcast.

* A customer acts only on their own broadcasts: :func:`owner_only` is a host guard on cancel,
  start_trip and complete; it sees the actor and the broadcast as the command loaded it, so it needs
  no read of its own.
* :func:`allowed_actions` tells the page which of these a user may run now, from the library's
  transition table (``allowed_from``), so the page does not restate it.
* A transporter accepts only what it was offered: the library's own ``transporter_notified`` guard
  refuses anyone else (the app passes the token's user as the transporter, so nobody accepts on
  another's behalf). The app adds no guard to accept and release: a host guard would take them off
  PostgreSQL's one-statement path. A refusal coded ``transporter_notified`` is 403 at once; only
  for another refusal does :func:`refusal_for` read the recipients, to answer 403 rather than a 409
  that would tell a stranger the broadcast's state.
"""

from __future__ import annotations

from datetime import datetime

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncKindHandle,
    BroadcastSnapshot,
    BroadcastStatus,
    CommandContext,
    EntityId,
    KindConfig,
    TransitionRefused,
    Trigger,
    allowed_from,
    utc_now,
)

from .auth import Role, User
from .errors import Forbidden

__all__ = ["ACTIONS", "allowed_actions", "install_guards", "owner_only", "refusal_for", "require_role"]

OWNER_COMMANDS = (Trigger.CANCEL, Trigger.START_TRIP, Trigger.COMPLETE)
ACTIONS = {Trigger.ACCEPT: "accept", Trigger.RELEASE: "release", Trigger.START_TRIP: "start-trip",
           Trigger.COMPLETE: "complete", Trigger.CANCEL: "cancel"}
"""The commands a user runs from the page, by the last segment of their endpoint."""


def owner_only(broadcast: BroadcastSnapshot, ctx: CommandContext) -> str | None:
    """Only the customer who created the broadcast may run the command (403 otherwise)."""
    if ctx.actor != broadcast.customer_id:
        raise Forbidden(f"{broadcast.kind} {broadcast.id} is not yours")
    return None


def install_guards(lifecycle: AsyncBroadcastLifecycle) -> None:
    """Add the app's host guards to every kind."""
    for trigger in OWNER_COMMANDS:
        lifecycle.add_guard(trigger, owner_only)


def allowed_actions(user: User, snap: BroadcastSnapshot, config: KindConfig, held_slots: int = 0, *,
                    now: datetime | None = None) -> list[str]:
    """The actions (:data:`ACTIONS` values) ``user`` may run on ``snap`` now: the commands of their role
    that the transition table allows from its state and their part allows (the customer owns it; a
    transporter, who was offered it, releases only what it holds). None once the deadline has passed
    and it may expire: any command would expire it (``now``: the current time by default). A race may
    still refuse one."""
    overdue = snap.expires_at is not None and (now or utc_now()) >= snap.expires_at
    if overdue and snap.status in allowed_from(Trigger.EXPIRE):
        return []
    if user.role == "customer":
        if snap.customer_id != user.id:
            return []
        triggers = [t for t in OWNER_COMMANDS
                    # trip_fill_policy, the one guard of these that the state alone does not settle
                    if not (t is Trigger.START_TRIP and snap.status is BroadcastStatus.PARTIALLY_FILLED
                            and not config.allow_partial_trip)]
    else:
        triggers = [Trigger.ACCEPT] + ([Trigger.RELEASE] if held_slots > 0 else [])
    return [ACTIONS[t] for t in triggers if snap.status in allowed_from(t)]


def require_role(user: User, role: Role, what: str) -> None:
    """``Forbidden`` unless ``user`` has ``role``."""
    if user.role != role:
        raise Forbidden(f"only a {role} may {what}")


async def may_see(handle: AsyncKindHandle, user: User, entity_id: EntityId,
                  snapshot: BroadcastSnapshot | None = None) -> bool:
    """True when ``user`` is the broadcast's customer or one of the transporters offered it."""
    if user.role == "customer":
        snap = snapshot if snapshot is not None else await handle.get(entity_id)
        return snap.customer_id == user.id
    return any(r.transporter_id == user.id for r in await handle.recipients(entity_id))


async def refusal_for(handle: AsyncKindHandle, user: User, entity_id: EntityId, refusal: Exception) -> Exception:
    """What to raise for a command the library refused: ``Forbidden`` when ``user`` has no part in the
    broadcast (nothing about it is told), else the refusal itself. The library's
    ``transporter_notified`` code says so without a read; any other refusal (the state's, say) is
    checked against the recipients."""
    if isinstance(refusal, TransitionRefused) and refusal.code == "transporter_notified":
        return Forbidden(f"{handle.name} {entity_id} was not offered to you")
    if not await may_see(handle, user, entity_id):
        return Forbidden(f"{handle.name} {entity_id} is not yours")
    return refusal
