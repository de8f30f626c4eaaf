"""Every error the library raises, under one base class.

Messages are built from attributes, so a host can log the text and still branch on the fields.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from .records import EntityId

__all__ = [
    "BroadcastError",
    "BroadcastNotFound",
    "ConcurrentUpdate",
    "CorruptState",
    "DuplicateBroadcast",
    "IdempotencyKeyReused",
    "InvalidArgument",
    "InvalidTransition",
    "OpenBroadcastExists",
    "StoreError",
    "TransitionRefused",
]


def show_id(entity_id: object) -> str:
    """An id as a message shows it: a string quoted (``'bk-17'``), a UUID as its text, an int as is."""
    return repr(entity_id) if isinstance(entity_id, str) or type(entity_id) not in (int, UUID) else str(entity_id)


def error_per_caller(exc: Exception) -> Exception:
    """A copy of ``exc`` (its cause kept) for one more caller: one instance raised in several tasks would
    chain their tracebacks into each other. ``exc`` itself if it cannot be copied."""
    try:
        duplicate = copy.copy(exc)
    except Exception:
        return exc
    duplicate.__cause__ = exc.__cause__
    return duplicate


def show_value(value: object) -> str:
    """A value as a message shows it: a duration in seconds (``-5 s``, ``0.25 s``), an id as
    :func:`show_id` does, anything else as its repr."""
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g} s"
    return show_id(value)


class BroadcastError(Exception):
    """Base class of every error raised by broadcast_lifecycle.

    Errors pickle with their message and attributes (a task queue or a process pool carries them),
    although their constructors take the fields rather than the message."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))


def _rebuild(cls: type[BroadcastError], args: tuple[Any, ...], state: dict[str, Any]) -> BroadcastError:
    """An error of ``cls`` with ``args`` (the message) and ``state`` (its attributes), not calling its
    constructor: the unpickling half of :meth:`BroadcastError.__reduce__`."""
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class InvalidArgument(BroadcastError, ValueError):
    """A command got an argument it cannot use; nothing was changed."""


class BroadcastNotFound(BroadcastError, LookupError):
    """No broadcast of this kind has this id.

    ``expected`` says what an id of the kind is, when the store knows its key type and the id is not
    one (``"a UUID, or its text"``): no broadcast can have it.
    """

    def __init__(self, kind: str, entity_id: EntityId, *, expected: str | None = None) -> None:
        self.kind = kind
        self.entity_id = entity_id
        self.expected = expected
        article = "an" if kind[:1] in ("a", "e", "i", "o", "u") else "a"
        hint = f" ({article} {kind} id is {expected})" if expected else ""
        super().__init__(f"no {kind} with id {show_id(entity_id)}{hint}")


class TransitionRefused(BroadcastError):
    """A command was not applied: a guard said no, with ``reason``.

    Catch this to handle every refusal; :class:`InvalidTransition` is the subset where the
    current state does not allow the trigger at all. ``code`` says which rule refused, for a
    program (``reason`` is the sentence for a person):

    - a built-in guard's name from the transition table: ``transporter_notified`` (the transporter
      was never offered the broadcast), ``slots_available``, ``holds_slots``, ``trip_fill_policy``,
      ``deadline_in_future``, ``deadline_later``, ``deadline_passed``;
    - ``host_guard``: a guard the host registered (``lifecycle.add_guard``);
    - ``invalid_transition``: the state does not allow the trigger (:class:`InvalidTransition`);
    - ``expired``: the deadline had passed, so the broadcast was expired instead;
    - ``open_broadcast_exists``: the customer has another open broadcast (:class:`OpenBroadcastExists`).
    """

    def __init__(
        self,
        kind: str,
        entity_id: EntityId | None,
        from_state: str | None,
        trigger: str,
        reason: str,
        *,
        subject: str | None = None,
        code: str = "refused",
    ) -> None:
        self.kind = kind
        self.entity_id = entity_id
        self.from_state = from_state
        self.trigger = trigger
        self.reason = reason
        self.code = code
        where = f" in state {from_state}" if from_state is not None else ""
        super().__init__(f"{subject or f'{kind} {show_id(entity_id)}'}: {trigger} refused{where}: {reason}")


class InvalidTransition(TransitionRefused):
    """The broadcast's current state does not allow the trigger."""

    def __init__(
        self,
        kind: str,
        entity_id: EntityId,
        from_state: str,
        trigger: str,
        allowed_from: Iterable[str],
    ) -> None:
        self.allowed_from = tuple(sorted(allowed_from))
        allowed = ", ".join(self.allowed_from) or "no state"
        super().__init__(
            kind,
            entity_id,
            from_state,
            trigger,
            f"{trigger} is not allowed from {from_state} (allowed from: {allowed})",
            code="invalid_transition",
        )


class OpenBroadcastExists(TransitionRefused):
    """The kind allows one open broadcast per customer and this customer has one: refused to a
    ``create``, and to a transition that would open a closed broadcast again (a release from
    ``fully_filled``) while the customer has opened another meanwhile."""

    def __init__(self, kind: str, customer_id: str, *, entity_id: EntityId | None = None,
                 from_state: str | None = None, trigger: str = "create") -> None:
        self.customer_id = customer_id
        if trigger == "create":
            super().__init__(kind, None, None, trigger,
                             f"customer {customer_id!r} already has an open {kind}; "
                             "cancel or finish it before creating another",
                             subject=f"{kind} for customer {customer_id!r}",  # no id yet to name it by
                             code="open_broadcast_exists")
        else:
            super().__init__(kind, entity_id, from_state, trigger,
                             f"customer {customer_id!r} has another open {kind}, and {trigger} would open this one "
                             "again; cancel or finish the other first", code="open_broadcast_exists")


class DuplicateBroadcast(BroadcastError):
    """A broadcast with this kind and id already exists."""

    def __init__(self, kind: str, entity_id: EntityId | None) -> None:
        self.kind = kind
        self.entity_id = entity_id
        super().__init__(f"a {kind} with id {show_id(entity_id)} already exists")


class IdempotencyKeyReused(BroadcastError):
    """An idempotency key came back with a different command than the one it first recorded."""

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        super().__init__(f"idempotency key {key!r} {detail}; use a new key for a new command")


class ConcurrentUpdate(BroadcastError):
    """Other writers kept changing the broadcast; the command gave up after ``attempts``."""

    def __init__(self, kind: str, entity_id: EntityId, trigger: str, attempts: int) -> None:
        self.kind = kind
        self.entity_id = entity_id
        self.trigger = trigger
        self.attempts = attempts
        super().__init__(
            f"{kind} {show_id(entity_id)}: {trigger} lost the race to concurrent writers "
            f"{attempts} times; nothing was changed, retry the command"
        )


class CorruptState(BroadcastError):
    """A stored status value is not a known state."""

    def __init__(self, table: str, entity_id: EntityId, value: object, allowed: Iterable[str]) -> None:
        self.table = table
        self.entity_id = entity_id
        self.value = value
        super().__init__(
            f"{table} row {show_id(entity_id)} has status {value!r}, which is not a known state "
            f"(known: {', '.join(allowed)})"
        )


class StoreError(BroadcastError):
    """The store failed (database error, lost connection); the cause is chained.

    ``constraint`` names the database constraint that refused a write, when one did (on SQLite,
    which names no UNIQUE index in its errors, the library's name for the columns it reported).
    """

    def __init__(self, message: str, *, constraint: str | None = None) -> None:
        self.constraint = constraint
        super().__init__(message)
