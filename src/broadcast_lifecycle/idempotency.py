"""Idempotency keys: who may replay a recorded outcome, and with what.

A key is recorded with the first outcome of the command that used it, with that command's actor and
a digest of its arguments. A request that brings the key back is answered with that outcome only if
it is the same command, by the same actor, on the same broadcast, with the same arguments; anything
else is refused with :class:`~broadcast_lifecycle.errors.IdempotencyKeyReused`, so a caller never
gets another caller's result.
"""

from __future__ import annotations

import hashlib
import json

from .errors import IdempotencyKeyReused, show_id
from .records import EntityId, IdempotentOutcome

__all__ = ["check_replay", "fingerprint"]


def fingerprint(*parts: object) -> str:
    """A digest of a command's arguments (anything JSON can render, with ``str`` for the rest)."""
    text = json.dumps(parts, default=str, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def check_replay(first: IdempotentOutcome, *, kind: str, trigger: str, entity_id: EntityId | None,
                 actor: str | None, digest: str) -> None:
    """Raise ``IdempotencyKeyReused`` unless the request is the command ``first`` recorded.

    The message never describes another actor's command: it says only that the key is taken.
    """
    if first.actor != actor:
        raise IdempotencyKeyReused(first.key, "was first used by another actor")
    snap = first.snapshot
    if first.trigger != trigger or snap.kind != kind or (entity_id is not None and snap.id != entity_id):
        raise IdempotencyKeyReused(first.key, f"was first used for {first.trigger} on {snap.kind} {show_id(snap.id)}")
    if first.fingerprint != digest:
        raise IdempotencyKeyReused(first.key, f"was first used for {trigger} with different arguments")
