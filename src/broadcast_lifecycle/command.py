"""One command as the engine runs it: its arguments (a kind's handle builds them) and the deadline it sets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ._quick import quick_constructor
from .kinds import KindConfig
from .lifecycle import Trigger

__all__ = ["SYSTEM_ACTOR", "Command", "command_deadline", "expiry_of", "new_command", "pinned_to"]

SYSTEM_ACTOR = "system"
"""The actor recorded for transitions the library makes on its own (expiry)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """One command's arguments, as the engine needs them on each attempt (built by the handle)."""

    config: KindConfig
    trigger: Trigger
    actor: str | None = None
    reason: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    transporter_id: str | None = None
    slots: int = 1
    recipients: tuple[str, ...] = ()
    deadline: datetime | None = None
    ttl: timedelta | None = None
    now: datetime | None = None
    idempotency_key: str | None = None
    fingerprint: str = ""


new_command = quick_constructor(Command)
"""``Command(...)`` without the dataclass's checks of its own (the handle has checked the arguments)."""


def command_deadline(now: datetime, deadline: datetime | None, ttl: timedelta | None,
                     current: datetime | None, default_ttl: timedelta | None) -> datetime | None:
    """The deadline a command sets: the one given, ``now`` + the ttl given, the broadcast's ``current``
    one, or ``now`` + the kind's default ttl (``None``: none of them)."""
    if deadline is not None:
        return deadline
    if ttl is not None:
        return now + ttl
    if current is not None:
        return current
    return now + default_ttl if default_ttl is not None else None


def pinned_to(c: Command, now: datetime) -> Command:
    """``c`` pinned to the time ``now``: ``dataclasses.replace`` without the frozen class's ``__init__`` (about
    3 us a command); ``tests/test_decided.py`` holds the two equal."""
    return new_command(config=c.config, trigger=c.trigger, actor=c.actor, reason=c.reason, metadata=c.metadata,
                       transporter_id=c.transporter_id, slots=c.slots, recipients=c.recipients, deadline=c.deadline,
                       ttl=c.ttl, now=now, idempotency_key=c.idempotency_key, fingerprint=c.fingerprint)


def expiry_of(config: KindConfig) -> Command:
    """The expiry the library applies on its own when a command finds its broadcast overdue."""
    return Command(config=config, trigger=Trigger.EXPIRE, actor=SYSTEM_ACTOR)
