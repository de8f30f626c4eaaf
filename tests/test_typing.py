"""Types a host reads, pinned with assert_type: mypy --strict checks this file, pytest runs it."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest
from typing_extensions import assert_type

from broadcast_lifecycle import (
    Addressed,
    BroadcastEvent,
    BroadcastLifecycle,
    BroadcastNotFound,
    BroadcastSnapshot,
    BroadcastStatus,
    CommandResult,
    EventPayload,
    HistoryEntry,
    KindHandle,
    RecipientRecord,
    TransitionRefused,
    WritePath,
)


def test_handles_results_and_records_are_precisely_typed() -> None:
    """A handle's commands return CommandResult; its fields and queries have concrete types, no Any."""
    lifecycle = BroadcastLifecycle()
    bookings = assert_type(lifecycle.kind("booking"), KindHandle)
    result = assert_type(bookings.create("c1", slots=2), CommandResult)
    assert_type(result.snapshot, BroadcastSnapshot)
    assert_type(result.events, tuple[BroadcastEvent, ...])
    assert_type(result.replayed, bool)
    assert_type(result.path, WritePath)
    assert_type(result.status, BroadcastStatus)
    assert_type(result.id, int | str | UUID)
    bookings.start_broadcast(result.id, ["t1"])
    bookings.activate(result.id, ttl=timedelta(minutes=1))
    assert_type(bookings.accept(result.id, "t1", slots=1), CommandResult)
    assert_type(bookings.get(result.id), BroadcastSnapshot)
    assert_type(bookings.history(result.id), tuple[HistoryEntry, ...])
    assert_type(bookings.recipients(result.id), tuple[RecipientRecord, ...])
    event = result.events[0]
    assert_type(event.entity_id, int | str | UUID)


def test_payloads_are_typed_dicts() -> None:
    """An event's payload is the EventPayload TypedDict (per key, no Any), also in each addressed copy."""
    bookings = BroadcastLifecycle().kind("booking")
    created = bookings.create("c1")
    offer = bookings.start_broadcast(created.id, ["t1"]).events[-1]
    payload = assert_type(offer.payload(), EventPayload)
    assert_type(payload["entityId"], str | int)
    assert_type(payload["expiresAt"], str | None)
    assert_type(payload["trigger"], str)
    assert_type(payload["reason"], str | None)
    assert_type(payload["version"], int)
    (copy,) = assert_type(offer.addressed(), tuple[Addressed, ...])
    assert_type(copy.payload, EventPayload)
    assert (copy.recipient.id, copy.payload["event"], copy.payload["trigger"]) == ("t1", "BOOKING_OFFERED",
                                                                                   "start_broadcast")


def test_error_attributes_use_the_id_type() -> None:
    """Errors carry the entity id as EntityId (not Hashable), and the refusal's fields as strings."""
    bookings = BroadcastLifecycle().kind("booking")
    with pytest.raises(BroadcastNotFound) as missing:
        bookings.get(404)
    assert_type(missing.value.entity_id, int | str | UUID)
    created = bookings.create("c1")
    with pytest.raises(TransitionRefused) as refused:
        bookings.complete(created.id)
    assert_type(refused.value.entity_id, int | str | UUID | None)
    assert_type(refused.value.reason, str)
    assert_type(refused.value.from_state, str | None)
    assert refused.value.entity_id == created.id
