"""The store contract's cross-store comparison: one fixed command script, and the records it
leaves (history rows and announced events) in a form that can be compared across stores.

The script goes through every command and write path: a lifecycle to completion with a release
on the way, a cancel with reason and metadata, an accept on an overdue broadcast (which expires it
on the spot), the sweeper, an idempotent replay and refused commands. Records are compared whole,
except what differs by nature between stores: broadcast ids (numbered in creation order instead),
event ids and times (the clock is the same, but a store may round them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from .errors import TransitionRefused
from .records import EntityId
from .service import BroadcastLifecycle
from .testing import EventRecorder

__all__ = ["Records", "assert_same", "records_of", "run_script"]

Records = tuple[tuple[tuple[str, Any], ...], ...]
"""Rows as sorted (field, value) pairs."""


def run_script(lc: BroadcastLifecycle, advance: Callable[[timedelta], None]) -> list[tuple[str, EntityId]]:
    """Run the script on ``lc`` (kinds ``booking`` and ``order``), moving its clock with ``advance``;
    returns the broadcasts it created, as (kind, id), in creation order."""
    created: list[tuple[str, EntityId]] = []
    bookings, orders = lc.kind("booking"), lc.kind("order")

    def create(kind: str, customer: str, slots: int = 1, **options: Any) -> EntityId:
        entity_id = lc.kind(kind).create(customer, slots=slots, **options).id
        created.append((kind, entity_id))
        return entity_id

    def refused(command: Callable[[], object]) -> None:
        try:
            command()
        except TransitionRefused:
            return
        raise AssertionError("the script expected this command to be refused")

    filled = create("booking", "c1", 2, metadata={"source": "app"}, actor="c1-admin")
    bookings.start_broadcast(filled, ["t1", "t2"], actor="dispatcher")
    bookings.notify_more(filled, ["t3"])
    bookings.activate(filled, ttl=timedelta(minutes=5))
    advance(timedelta(seconds=1))
    bookings.accept(filled, "t1")
    bookings.accept(filled, "t2")
    refused(lambda: bookings.accept(filled, "t3"))
    bookings.release(filled, "t2", reason="truck broke down")
    bookings.accept(filled, "t3", idempotency_key="t3-takes-it")
    bookings.accept(filled, "t3", idempotency_key="t3-takes-it")  # a replay: nothing new
    bookings.start_trip(filled, actor="t1")
    bookings.complete(filled, actor="t1", reason="delivered", metadata={"pod": "signed"})

    cancelled = create("order", "c2", 3)
    orders.start_broadcast(cancelled, ["t1", "t4"])
    orders.activate(cancelled, ttl=timedelta(minutes=1))
    orders.accept(cancelled, "t4", slots=2)
    orders.cancel(cancelled, actor="c2", reason="changed plans", metadata={"refund": True})

    swept = create("order", "c3", 2)
    orders.start_broadcast(swept, ["t6", "t5"])
    orders.activate(swept, ttl=timedelta(minutes=2))
    orders.accept(swept, "t6")
    overdue = create("booking", "c4")
    bookings.start_broadcast(overdue, ["t1"])
    bookings.activate(overdue, ttl=timedelta(minutes=2))
    never = create("booking", "c5", idempotency_key="c5-first")
    create("booking", "c5", idempotency_key="c5-first")  # a replay of the same create
    refused(lambda: bookings.accept(never, "t1"))
    advance(timedelta(minutes=3))
    refused(lambda: bookings.accept(overdue, "t1"))  # expires it on the spot
    if lc.expire_due() != 1:
        raise AssertionError("the script expected the sweeper to expire one broadcast")
    return created


def records_of(lc: BroadcastLifecycle, recorder: EventRecorder,
               created: list[tuple[str, EntityId]]) -> dict[str, Records]:
    """The history rows and recipients of every broadcast the script created and every event
    ``recorder`` got, with ids numbered by creation order and without event ids and times; events
    sorted, since a sweep may announce a batch in any order."""
    number = {entity: n for n, entity in enumerate(dict.fromkeys(created))}
    history: list[tuple[tuple[str, Any], ...]] = []
    recipients: list[tuple[tuple[str, Any], ...]] = []
    for (kind, entity_id), n in number.items():
        history += [_comparable(row, n) for row in lc.kind(kind).history(entity_id)]
        recipients += [(("broadcast", n), *_comparable(row, n)) for row in lc.kind(kind).recipients(entity_id)]
    events = sorted((_comparable(event, number[(event.kind, event.entity_id)]) for event in recorder.events), key=repr)
    return {"history row": tuple(history), "recipient": tuple(recipients), "event": tuple(events)}


def _comparable(record: Any, number: int) -> tuple[tuple[str, Any], ...]:
    """A dataclass record as sorted (field, value) pairs: its entity id replaced by ``number``, its
    event id and times left out, enums by value."""
    fields: list[tuple[str, Any]] = []
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if field.name == "event_id" or isinstance(value, datetime):
            continue
        if field.name == "entity_id":
            value = number
        elif isinstance(value, Enum):
            value = value.value
        elif isinstance(value, dict):
            value = repr(sorted(value.items()))
        elif isinstance(value, tuple):
            value = repr(value)
        fields.append((field.name, value))
    return tuple(sorted(fields, key=lambda pair: pair[0]))


def assert_same(what: str, reference: Records, found: Records) -> None:
    """Fail with the first ``what`` (record) that differs from the reference store's."""
    for n, (expected, got) in enumerate(zip(reference, found, strict=False)):
        assert got == expected, (f"{what} {n} differs from InMemoryStore's:\n"
                                 f"  reference:  {expected}\n  this store: {got}")
    assert len(found) == len(reference), f"{len(found)} {what}s, InMemoryStore has {len(reference)}"
