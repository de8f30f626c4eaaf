"""Checks of command arguments, shared by every facade and store: a bad argument is an ``InvalidArgument``
that names it and says what is allowed, before anything is read or written, so the same input gets
the same error on every store."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from .clock import require_aware
from .errors import InvalidArgument, show_value

__all__ = [
    "MAX_INT_ID",
    "MAX_KEY_LENGTH",
    "MAX_SLOTS",
    "is_entity_id",
    "require_deadline",
    "require_entity_id",
    "require_id",
    "require_key",
    "require_metadata",
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
    if type(value) is int:  # the usual id, checked first (every command asks)
        return -MAX_INT_ID - 1 <= value <= MAX_INT_ID
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



MAX_KEY_LENGTH = 200
"""The longest idempotency key a store must hold (``bl_idempotency.key``)."""


def require_key(key: object, actor: str | None, *, default_actor: str | None = None) -> str | None:
    """``key`` (when given) must be a non-empty string of at most :data:`MAX_KEY_LENGTH` characters, sent
    with an actor: keys are checked against who first used them, so a key without one would be
    shared by every caller who leaves the actor out (``default_actor`` names where an actor comes
    from when the command has its own default)."""
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument(f"idempotency_key must be a non-empty string of at most {MAX_KEY_LENGTH} "
                              f"characters, got {key!r:.60}")
    if actor is None and default_actor is None:
        raise InvalidArgument("idempotency_key needs an actor: pass actor= (who sends the command), so the key "
                              "is answered only to them")
    return key


def require_metadata(metadata: object, *, name: str = "metadata") -> dict[str, Any]:
    """``metadata`` (when given) must be a mapping with string keys; returns a copy (``{}`` for none)."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidArgument(f"{name} must be a mapping with string keys, got {metadata!r:.80}")
    return dict(metadata)


def require_deadline(now: datetime | None, ttl: object, expires_at: datetime | None) -> datetime | None:
    """At most one of ``ttl`` (a positive timedelta) and ``expires_at`` (an aware datetime); returns
    the deadline they set from ``now`` (``None`` when neither is given, or without ``now``)."""
    if ttl is not None and expires_at is not None:
        raise InvalidArgument("pass ttl= or expires_at=, not both")
    if ttl is not None:
        if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
            raise InvalidArgument(f"ttl must be a positive timedelta, got {show_value(ttl)}")
        return now + ttl if now is not None else None
    if expires_at is not None:
        return require_aware("expires_at", expires_at)
    return None
