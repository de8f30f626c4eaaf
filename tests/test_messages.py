"""Error messages show values as a person reads them: ids as their text, durations in seconds."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from conftest import ManualClock

from broadcast_lifecycle import (
    BroadcastLifecycle,
    BroadcastNotFound,
    IdempotencyKeyReused,
    InMemoryStore,
    InvalidArgument,
    TransitionRefused,
    start_relay_thread,
)

_ID = uuid.UUID("0f05a2c4-1111-4222-8333-944455556666")


def test_a_uuid_id_is_shown_as_its_text() -> None:
    """Not found, refused and reused-key messages name a UUID id by its text, not UUID('...')."""
    lc = BroadcastLifecycle(InMemoryStore(), clock=ManualClock())
    bookings = lc.kind("booking")
    with pytest.raises(BroadcastNotFound) as missing:
        bookings.get(_ID)
    assert str(missing.value) == f"no booking with id {_ID}"
    bookings.create("c1", entity_id=_ID, idempotency_key="k1")
    with pytest.raises(TransitionRefused) as refused:
        bookings.accept(_ID, "t1")
    assert str(refused.value).startswith(f"booking {_ID}: accept refused")
    with pytest.raises(IdempotencyKeyReused) as reused:
        bookings.cancel(_ID, actor="c1", idempotency_key="k1")
    assert f"on booking {_ID};" in str(reused.value) and "UUID(" not in str(reused.value)


def test_a_string_id_is_quoted_and_an_int_is_bare() -> None:
    """A string id is quoted (so "7" and 7 read apart), an int is shown as it is."""
    lc = BroadcastLifecycle(InMemoryStore(), clock=ManualClock())
    with pytest.raises(BroadcastNotFound, match=r"^no booking with id '7'$"):
        lc.kind("booking").get("7")
    with pytest.raises(BroadcastNotFound, match=r"^no booking with id 7$"):
        lc.kind("booking").get(7)


def test_a_duration_is_shown_in_seconds() -> None:
    """A refused ttl or older_than is shown as seconds ("-5 s"), not as datetime.timedelta(...)."""
    lc = BroadcastLifecycle(InMemoryStore(), clock=ManualClock())
    bookings = lc.kind("booking")
    created = bookings.create("c1")
    bookings.start_broadcast(created.id, ["t1"])
    with pytest.raises(InvalidArgument, match=r"^ttl must be a positive timedelta, got -5 s$"):
        bookings.activate(created.id, ttl=timedelta(seconds=-5))
    with pytest.raises(InvalidArgument, match=r"older_than must be a positive timedelta, got 0 s$"):
        lc.prune(timedelta(0))


def test_relay_and_runner_durations_are_shown_in_seconds() -> None:
    """A negative grace, a zero lease and a negative interval are shown in seconds."""
    lc = BroadcastLifecycle(InMemoryStore(), clock=ManualClock())
    with pytest.raises(InvalidArgument, match=r"grace must not be negative, got -5 s$"):
        lc.relay(grace=timedelta(seconds=-5))
    with pytest.raises(InvalidArgument, match=r"got 0 s$"):
        lc.relay(lease=timedelta(0))
    with pytest.raises(InvalidArgument, match=r"^interval must be positive, got -0.5 s$"):
        start_relay_thread(lc.relay(), timedelta(seconds=-0.5))
