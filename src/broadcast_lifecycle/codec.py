"""Codecs a store needs to keep the library's values in text or JSON columns, and read them back
equal: ids that keep their type, times that sort as text, and whole records (events, snapshots,
history rows, idempotency outcomes) as JSON-ready dicts. No I/O.

Records are encoded field by field from their dataclass definitions, so a field added to one is
carried without a change here: times as :func:`time_to_text`, enums by value, ids by
:func:`encode_id`, tuples as lists, nested records as dicts, everything else as it is (history
metadata must be JSON-ready already).
"""

from __future__ import annotations

import dataclasses
import types
from datetime import datetime, timezone
from enum import Enum
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints, overload
from uuid import UUID

from .errors import InvalidArgument
from .events import BroadcastEvent
from .records import BroadcastSnapshot, EntityId, HistoryEntry, IdempotentOutcome
from .validation import require_entity_id

__all__ = [
    "decode_id",
    "encode_id",
    "event_from_json",
    "event_to_json",
    "history_from_json",
    "history_to_json",
    "id_from_text",
    "outcome_from_json",
    "outcome_to_json",
    "record_from_json",
    "record_to_json",
    "snapshot_from_json",
    "snapshot_to_json",
    "time_from_text",
    "time_to_text",
]

R = TypeVar("R")

_TAGS: dict[type, str] = {int: "int", str: "str", UUID: "uuid"}


def encode_id(entity_id: EntityId) -> str:
    """``entity_id`` as text that keeps its type: ``int:777``, ``str:777``, ``uuid:1234...``.

    The int ``777`` and the string ``"777"`` are two different ids; a store that keeps ids of every
    type in one text column stores this, never ``str(entity_id)``. Raises ``InvalidArgument`` for
    a value that is no id (see :data:`~broadcast_lifecycle.records.EntityId`).
    """
    require_entity_id("entity_id", entity_id)
    return f"{_TAGS[type(entity_id)]}:{entity_id}"


def decode_id(text: str) -> EntityId:
    """The id :func:`encode_id` wrote, of the same type and value."""
    tag, _, value = text.partition(":")
    if tag == "int":
        return int(value)
    if tag == "str":
        return value
    if tag == "uuid":
        return UUID(value)
    raise InvalidArgument(f"not an encoded id (expected int:, str: or uuid: before the value): {text!r}")


def id_from_text(text: str, id_type: type) -> EntityId | None:
    """The id of type ``id_type`` (``int``, ``str`` or ``UUID``) that ``text`` spells, as a web client
    sends an id back (a URL path parameter, a payload's ``bookingId``); ``None`` when it spells none.

    An int only in its exact decimal form (``str(int(text)) == text``: no sign ``+``, spaces, leading
    zeros or ``_``), a UUID in any form ``uuid.UUID`` reads, a string as it is.
    """
    tag = _TAGS.get(id_type)
    if tag is None:
        return None
    try:
        value = decode_id(f"{tag}:{text}")
    except ValueError:
        return None
    return value if id_type is not int or str(value) == text else None


@overload
def time_to_text(at: datetime) -> str: ...
@overload
def time_to_text(at: None) -> None: ...
def time_to_text(at: datetime | None) -> str | None:
    """An aware time as fixed-width UTC text (``2026-01-01T12:00:00.000000+00:00``): the same instant,
    to the microsecond, and texts compare in time order (``None`` stays ``None``, for nullable
    columns). Raises ``InvalidArgument`` for a naive time."""
    if at is None:
        return None
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidArgument(f"a stored time must be timezone-aware, got {at!r}")
    return at.astimezone(timezone.utc).isoformat(timespec="microseconds")


@overload
def time_from_text(text: str) -> datetime: ...
@overload
def time_from_text(text: None) -> None: ...
def time_from_text(text: str | None) -> datetime | None:
    """The aware UTC time :func:`time_to_text` wrote (``None`` stays ``None``)."""
    return datetime.fromisoformat(text).astimezone(timezone.utc) if text is not None else None


def record_to_json(record: Any) -> dict[str, Any]:
    """A record (a dataclass of the library's) as a JSON-ready dict, one key per field."""
    return {name: _encode(hint, getattr(record, name)) for name, hint in _hints(type(record)).items()}


def record_from_json(cls: type[R], data: dict[str, Any]) -> R:
    """The ``cls`` record :func:`record_to_json` wrote (equal to the original)."""
    return cls(**{name: _decode(hint, data[name]) for name, hint in _hints(cls).items() if name in data})


def event_to_json(event: BroadcastEvent) -> dict[str, Any]:
    """An event (an outbox row's content) as a JSON-ready dict."""
    return record_to_json(event)


def event_from_json(data: dict[str, Any]) -> BroadcastEvent:
    """The event :func:`event_to_json` wrote."""
    return record_from_json(BroadcastEvent, data)


def snapshot_to_json(snapshot: BroadcastSnapshot) -> dict[str, Any]:
    """A snapshot, its kind and id included, as a JSON-ready dict."""
    return record_to_json(snapshot)


def snapshot_from_json(data: dict[str, Any]) -> BroadcastSnapshot:
    """The snapshot :func:`snapshot_to_json` wrote."""
    return record_from_json(BroadcastSnapshot, data)


def history_to_json(entry: HistoryEntry) -> dict[str, Any]:
    """A history row, its metadata as given, as a JSON-ready dict."""
    return record_to_json(entry)


def history_from_json(data: dict[str, Any]) -> HistoryEntry:
    """The history row :func:`history_to_json` wrote."""
    return record_from_json(HistoryEntry, data)


def outcome_to_json(outcome: IdempotentOutcome) -> dict[str, Any]:
    """An idempotency record (key, command, actor, argument digest and the snapshot) as a JSON-ready dict."""
    return record_to_json(outcome)


def outcome_from_json(data: dict[str, Any]) -> IdempotentOutcome:
    """The idempotency record :func:`outcome_to_json` wrote."""
    return record_from_json(IdempotentOutcome, data)


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    """The resolved field types of dataclass ``cls`` (fields set by ``__init__`` only)."""
    hints = _HINTS.get(cls)
    if hints is None:
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        hints = _HINTS[cls] = {name: hint for name, hint in get_type_hints(cls).items() if name in init}
    return hints


def _options(hint: Any) -> tuple[Any, ...]:
    """The types a field may hold (a union's members), ``None`` aside."""
    options = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
    return tuple(option for option in options if option is not type(None))


_ID_TYPES = frozenset(get_args(EntityId))


def _encode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    options = _options(hint)
    if frozenset(options) == _ID_TYPES:
        return encode_id(value)
    (kind, *_) = options
    if kind is datetime:
        return time_to_text(value)
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return record_to_json(value)
    if get_origin(kind) is tuple:
        (item, *_) = get_args(kind)
        return [_encode(item, element) for element in value]
    if isinstance(value, tuple):  # a NamedTuple
        return list(value)
    return value


def _decode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    options = _options(hint)
    if frozenset(options) == _ID_TYPES:
        return decode_id(value)
    (kind, *_) = options
    if kind is datetime:
        return time_from_text(value)
    if isinstance(kind, type) and issubclass(kind, Enum):
        return kind(value)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return record_from_json(kind, value)
    if get_origin(kind) is tuple:
        (item, *_) = get_args(kind)
        return tuple(_decode(item, element) for element in value)
    if isinstance(kind, type) and issubclass(kind, tuple):  # a NamedTuple
        return kind(*value)
    return value
