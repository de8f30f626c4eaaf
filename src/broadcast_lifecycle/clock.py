"""Time: the default UTC clock and the check that a datetime is timezone-aware."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from .errors import InvalidArgument

__all__ = ["Clock", "require_aware", "utc_now"]

Clock = Callable[[], datetime]
"""Returns the current time as an aware datetime."""


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(timezone.utc)


def require_aware(name: str, value: datetime) -> datetime:
    """Return ``value`` in UTC, or raise :class:`InvalidArgument` if it is naive."""
    if type(value) is datetime and value.tzinfo is timezone.utc:  # the clock's usual answer, as it is
        return value
    if not isinstance(value, datetime):
        raise InvalidArgument(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(f"{name} must be timezone-aware (e.g. datetime.now(timezone.utc)), got naive {value}")
    return value.astimezone(timezone.utc)
