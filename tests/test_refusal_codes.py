"""A refusal says which rule refused in ``TransitionRefused.code``, the same on every store and write
path, so a host maps refusals to statuses without reading the English ``reason``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import ManualClock, StoreOpener

from broadcast_lifecycle import (
    BroadcastLifecycle,
    BroadcastSnapshot,
    CommandContext,
    KindConfig,
    TransitionRefused,
    Trigger,
)


def refusal(action: object) -> TransitionRefused:
    """The refusal ``action`` (a thunk) raises."""
    assert callable(action)
    with pytest.raises(TransitionRefused) as caught:
        action()
    return caught.value


def test_each_refusal_names_its_rule_on_every_store(open_store: StoreOpener) -> None:
    """Built-in guards by their table name, host guards, a state that forbids the trigger, a passed
    deadline each give their own code; an accept refused on the
    in-place path (no key, no host guard) gives the same code as one refused on the general path."""
    clock = ManualClock()
    lc = BroadcastLifecycle(open_store(), clock=clock)
    bookings = lc.kind("booking")
    entity_id = bookings.create("c1", slots=2).id
    bookings.start_broadcast(entity_id, ["t1", "t2"])
    bookings.activate(entity_id, ttl=timedelta(minutes=5))

    assert refusal(lambda: bookings.accept(entity_id, "stranger")).code == "transporter_notified"
    assert refusal(lambda: bookings.accept(entity_id, "stranger", idempotency_key="k-1")).code == (
        "transporter_notified")
    assert refusal(lambda: bookings.accept(entity_id, "t1", slots=3)).code == "slots_available"
    assert refusal(lambda: bookings.extend(entity_id, ttl=timedelta(minutes=1))).code == "deadline_later"
    bookings.accept(entity_id, "t1")
    assert refusal(lambda: bookings.release(entity_id, "t2")).code == "holds_slots"
    assert refusal(lambda: bookings.start_trip(entity_id)).code == "trip_fill_policy"
    invalid = refusal(lambda: bookings.complete(entity_id))
    assert (invalid.code, invalid.from_state) == ("invalid_transition", "partially_filled")

    def owner_only(broadcast: BroadcastSnapshot, ctx: CommandContext) -> str | None:
        return None if ctx.actor == broadcast.customer_id else "only the customer cancels"

    lc.add_guard(Trigger.CANCEL, owner_only)
    host = refusal(lambda: bookings.cancel(entity_id, actor="c2"))
    assert (host.code, host.reason) == ("host_guard", "only the customer cancels")

    clock.advance(timedelta(minutes=6))
    expired = refusal(lambda: bookings.accept(entity_id, "t2"))
    assert (expired.code, bookings.get(entity_id).status.value) == ("expired", "expired")


def test_one_open_broadcast_per_customer_has_its_code() -> None:
    """A second open broadcast of a customer whose kind allows one is refused with its own code (the
    SQL stores raise the same error from their unique index: tests/test_one_open_reopen.py)."""
    lc = BroadcastLifecycle(kinds=[KindConfig("order", one_open_per_customer=True)])
    lc.kind("order").create("c9")
    assert refusal(lambda: lc.kind("order").create("c9")).code == "open_broadcast_exists"
