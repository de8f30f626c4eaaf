"""Quick constructors build the very records their classes build: same type, fields, equality, hash,
repr, pickling and frozenness; a record they cannot speed up keeps its class's constructor."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import datetime, timezone
from typing import Any

import pytest

from broadcast_lifecycle import BroadcastEvent, BroadcastSnapshot, BroadcastStatus, CommandContext, HistoryEntry
from broadcast_lifecycle._quick import quick_constructor
from broadcast_lifecycle.command import Command
from broadcast_lifecycle.events import Recipient, Topic
from broadcast_lifecycle.results import CommandResult, WritePath
from broadcast_lifecycle.stores.base import NewBroadcast, OutboxEntry

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
SNAPSHOT = BroadcastSnapshot("booking", 7, "c1", BroadcastStatus.ACTIVE, 3, 1, 4, T0, T0, T0)
EVENT: dict[str, Any] = dict(
    event_id="e1", name="BOOKING_FULLY_FILLED", topic=Topic.FULLY_FILLED, kind="booking", id_field="bookingId",
    entity_id=7, recipients=(Recipient("customer", "c1"),), status=BroadcastStatus.FULLY_FILLED,
    previous_status=BroadcastStatus.ACTIVE, state_changed_at=T0, version=5, slots_filled=3, slots_requested=3,
    expires_at=None, trigger="accept", reason=None)

CASES: list[tuple[type[Any], tuple[Any, ...], dict[str, Any]]] = [
    (BroadcastSnapshot, ("booking", 7, "c1", BroadcastStatus.ACTIVE, 3, 1, 4, T0, T0), {}),  # a default left out
    (BroadcastEvent, (), EVENT),  # keyword-only
    (HistoryEntry, ("booking", 7, None, BroadcastStatus.CREATED, "create", "c1", None, T0, 1), {}),  # a factory
    (CommandContext, (T0,), {"slots": 2, "actor": "t1"}),
    (OutboxEntry, (BroadcastEvent(**EVENT), T0), {"attempts": 2}),
    (CommandResult, (), {"snapshot": SNAPSHOT, "path": WritePath.GENERAL}),  # a default before a required field
]


@pytest.mark.parametrize(("cls", "args", "kwargs"), CASES, ids=[case[0].__name__ for case in CASES])
def test_quick_constructor_builds_the_same_record(cls: type[Any], args: tuple[Any, ...],
                                                  kwargs: dict[str, Any]) -> None:
    """A record from the quick constructor is of the class, equal to the class's own, with the same hash
    (or the same refusal to hash), repr and pickle round trip, and refuses assignment like it."""
    quick = quick_constructor(cls)
    assert quick is not cls
    built, expected = quick(*args, **kwargs), cls(*args, **kwargs)
    assert type(built) is cls
    assert built == expected
    assert _hash(built) == _hash(expected)
    assert repr(built) == repr(expected)
    assert pickle.loads(pickle.dumps(built)) == expected
    field = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, field, None)


def _hash(record: object) -> int | str:
    try:
        return hash(record)
    except TypeError as exc:  # a record holding a dict (a history entry's metadata)
        return str(exc)


def test_quick_constructor_gives_each_record_its_own_default_from_a_factory() -> None:
    """A field whose default comes from a factory gets a new value per record, as the class gives it."""
    quick = quick_constructor(HistoryEntry)
    first = quick("booking", 7, None, BroadcastStatus.CREATED, "create", "c1", None, T0, 1)
    second = quick("booking", 7, None, BroadcastStatus.CREATED, "create", "c1", None, T0, 1)
    first.metadata["x"] = 1
    assert second.metadata == {}


def test_quick_constructor_checks_arguments_as_the_class_does() -> None:
    """A missing argument, or a keyword-only field passed by position, is a TypeError as with the class."""
    quick: Any = quick_constructor(Command)
    with pytest.raises(TypeError):
        quick()
    event: Any = quick_constructor(BroadcastEvent)
    with pytest.raises(TypeError):
        event(*EVENT.values())


def test_record_with_post_init_keeps_its_constructor() -> None:
    """A record that checks its fields in ``__post_init__`` is built by its class (the checks run)."""
    assert quick_constructor(NewBroadcast) is NewBroadcast
