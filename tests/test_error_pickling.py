"""Errors cross process boundaries (a task queue, a process pool): each pickles and comes back with its
message, its type and its attributes."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import timedelta
from uuid import UUID

import pytest

from broadcast_lifecycle import (
    BroadcastError,
    BroadcastNotFound,
    ConcurrentUpdate,
    CorruptState,
    DuplicateBroadcast,
    IdempotencyKeyReused,
    InvalidArgument,
    InvalidTransition,
    OpenBroadcastExists,
    StoreError,
    TransitionRefused,
)


def raised(kind: str) -> BroadcastError:
    """A real error of each public type, as the lifecycle raises it."""
    from broadcast_lifecycle import BroadcastLifecycle, KindConfig

    lc = BroadcastLifecycle(kinds=[KindConfig("booking"), KindConfig("order", one_open_per_customer=True)])
    bookings = lc.kind("booking")
    booking = bookings.create("c1", slots=1).id
    actions: dict[str, Callable[[], object]] = {
        "not_found": lambda: bookings.get(UUID(int=7)),
        "invalid_argument": lambda: bookings.accept(booking, "t1", slots=0),
        "invalid_transition": lambda: bookings.complete(booking),
        "refused": lambda: bookings.activate(booking, ttl=timedelta(minutes=1)) and bookings.accept(booking, "x"),
        "open": lambda: (lc.kind("order").create("c9"), lc.kind("order").create("c9")),
        "duplicate": lambda: bookings.create("c2", entity_id=booking),
        "key_reused": lambda: (bookings.cancel(booking, actor="c1", idempotency_key="k"),
                               bookings.cancel(booking, actor="c2", idempotency_key="k")),
    }
    bookings.start_broadcast(booking, ["t1"])
    with pytest.raises(BroadcastError) as caught:
        actions[kind]()
    return caught.value


@pytest.mark.parametrize("kind", ["not_found", "invalid_argument", "invalid_transition", "refused", "open",
                                  "duplicate", "key_reused"])
def test_a_raised_error_pickles_whole(kind: str) -> None:
    """Type, message and every attribute survive a pickle round trip."""
    error = raised(kind)
    back = pickle.loads(pickle.dumps(error))
    assert (type(back), str(back), vars(back)) == (type(error), str(error), vars(error))


def test_every_error_type_pickles_whole() -> None:
    """Errors built directly (the ones a store raises too) round-trip as well."""
    errors: list[BroadcastError] = [
        BroadcastNotFound("booking", 7), InvalidArgument("slots must be positive"),
        TransitionRefused("booking", 1, "active", "accept", "no", code="slots_available"),
        InvalidTransition("booking", 1, "completed", "cancel", ["active"]),
        OpenBroadcastExists("order", "c1"), DuplicateBroadcast("booking", 1),
        IdempotencyKeyReused("k", "was used for another command"),
        ConcurrentUpdate("booking", 1, "accept", 3), CorruptState("bookings", 1, "bogus", ["active", "cancelled"]),
        StoreError("could not write", constraint="ck_slots"),
    ]
    for error in errors:
        back = pickle.loads(pickle.dumps(error))
        assert (type(back), str(back), vars(back)) == (type(error), str(error), vars(error))
