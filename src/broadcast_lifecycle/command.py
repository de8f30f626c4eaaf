"""One command as the engine runs it: its arguments (a kind's handle builds them) and the deadline it sets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ._quick import quick_constructor
from .kinds import KindConfig
from .lifecycle import Trigger

__all__ = ["Command", "command_deadline", "new_command"]


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
