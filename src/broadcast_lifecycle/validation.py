"""Checks of command arguments, shared by every facade and store: a bad argument is an ``InvalidArgument``
that names it and says what is allowed, before anything is read or written, so the same input gets
the same error on every store."""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from .errors import InvalidArgument

__all__ = [
    "MAX_INT_ID",
    "MAX_SLOTS",
    "is_entity_id",
    "require_entity_id",
    "require_id",
    "require_slots",
    "require_transporters",
]

MAX_SLOTS = 2**31 - 1
"""The most slots a broadcast may have: slot counts are stored in 32-bit signed INTEGER columns."""

MAX_INT_ID = 2**63 - 1
"""The largest integer id: the widest SQL integer key (BIGINT, SQLite's INTEGER) is 64-bit signed."""


def require_slots(name: str, value: int) -> None:
    """``value`` must be a whole number from 1 to :data:`MAX_SLOTS`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SLOTS:
        raise InvalidArgument(f"{name} must be a whole number from 1 to {MAX_SLOTS} (slots are stored in a "
                              f"32-bit signed INTEGER column), got {value!r}")


def require_id(name: str, value: str) -> None:
    """``value`` must be a non-empty string (a customer's, a transporter's id)."""
    if not isinstance(value, str) or not value:
        raise InvalidArgument(f"{name} must be a non-empty string, got {value!r}")


def require_transporters(transporters: Iterable[str]) -> tuple[str, ...]:
    """The transporter ids in ``transporters``, each once, in order; at least one, each a non-empty string."""
    if isinstance(transporters, (str, bytes)):
        raise InvalidArgument("transporters must be a list of transporter ids, not a single string")
    try:
        unique = tuple(dict.fromkeys(transporters))
    except TypeError:  # not iterable, or an item that cannot be hashed (so not an id either)
        raise InvalidArgument(f"transporters must be a list of transporter ids (non-empty strings), "
                              f"got {transporters!r}") from None
    if not unique:
        raise InvalidArgument("transporters must name at least one transporter to notify")
    for transporter in unique:
        require_id("each transporter id", transporter)
    return unique


def is_entity_id(value: object) -> bool:
    """Whether some store could hold ``value`` as a broadcast's id: an int within :data:`MAX_INT_ID`
    either way (not a bool), a non-empty string or a UUID. A lookup of anything else finds nothing."""
    if isinstance(value, int):
        return not isinstance(value, bool) and -MAX_INT_ID - 1 <= value <= MAX_INT_ID
    if isinstance(value, str):
        return bool(value)
    return isinstance(value, UUID)


def require_entity_id(name: str, value: object) -> None:
    """``value`` must be an id some store can hold (see :func:`is_entity_id`)."""
    if not is_entity_id(value):
        raise InvalidArgument(f"{name} must be an int (64-bit signed, not a bool), a non-empty string or a UUID, "
                              f"got {value!r}")

