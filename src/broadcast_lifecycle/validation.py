"""Checks of command arguments, shared by every facade: a bad argument is an ``InvalidArgument``
that names it and says what is allowed, before anything is read or written."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import InvalidArgument

__all__ = ["require_id", "require_slots", "require_transporters"]


def require_slots(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{name} must be a whole number of at least 1, got {value!r}")


def require_id(name: str, value: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name} must be a non-empty string, got {value!r}")


def require_transporters(transporters: Sequence[str]) -> tuple[str, ...]:
    if isinstance(transporters, str):
        raise InvalidArgument("transporters must be a list of ids, not a single string")
    unique = tuple(dict.fromkeys(transporters))
    if not unique:
        raise InvalidArgument("transporters must name at least one transporter to notify")
    for transporter in unique:
        require_id("each transporter id", transporter)
    return unique
