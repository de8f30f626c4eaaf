"""One open broadcast per customer also holds when a release opens a filled broadcast again: found by
the differential state machine (PostgreSQL's partial unique index refused it as a StoreError naming
the index, while the in-memory store let the customer have two open orders)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from broadcast_lifecycle import (
    BroadcastLifecycle,
    BroadcastStatus,
    EntityId,
    InMemoryStore,
    KindConfig,
    KindHandle,
    OpenBroadcastExists,
)
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

KINDS = (KindConfig("order", one_open_per_customer=True),)

Release = Callable[[BroadcastLifecycle, KindHandle, EntityId], object]

ROUTES: dict[str, Release] = {
    "plain (in place on PostgreSQL)": lambda lc, orders, entity_id: orders.release(entity_id, "t1"),
    "with a reason (general path)": lambda lc, orders, entity_id: orders.release(entity_id, "t1", reason="sorry"),
}


def _filled_and_another(lifecycle: BroadcastLifecycle) -> tuple[KindHandle, EntityId, EntityId]:
    """c1's order filled (closed), then a second order of c1's, open."""
    orders = lifecycle.kind("order")
    filled = orders.create("c1").id
    orders.start_broadcast(filled, ["t1"])
    orders.activate(filled, ttl=timedelta(hours=1))
    orders.accept(filled, "t1")
    second = orders.create("c1").id
    return orders, filled, second


def _check_refused(orders: KindHandle, filled: EntityId, refused: OpenBroadcastExists) -> None:
    assert (refused.customer_id, refused.entity_id, refused.from_state, refused.trigger) == (
        "c1", filled, "fully_filled", "release")
    assert "has another open order" in refused.reason
    snapshot = orders.get(filled)
    assert (snapshot.status, snapshot.slots_filled, snapshot.version) == (BroadcastStatus.FULLY_FILLED, 1, 4)
    assert [r.slots_held for r in orders.recipients(filled)] == [1]


@pytest.mark.parametrize("route", list(ROUTES))
def test_a_release_that_opens_a_second_order_is_refused_in_memory(route: str) -> None:
    """In memory: OpenBroadcastExists naming the release, and nothing written."""
    lifecycle = BroadcastLifecycle(InMemoryStore(), kinds=KINDS)
    orders, filled, _ = _filled_and_another(lifecycle)
    with pytest.raises(OpenBroadcastExists) as refused:
        ROUTES[route](lifecycle, orders, filled)
    _check_refused(orders, filled, refused.value)


@pytest.mark.parametrize("route", [*ROUTES, "in a host session"])
def test_a_release_that_opens_a_second_order_is_refused_on_sql(database_url: str, route: str) -> None:
    """On SQLite and PostgreSQL, on every path: the same OpenBroadcastExists, not a StoreError, and nothing written."""
    store = SQLAlchemyStore.from_url(database_url)
    store.create_all(KINDS)
    lifecycle = BroadcastLifecycle(store, kinds=KINDS)
    orders, filled, second = _filled_and_another(lifecycle)
    with pytest.raises(OpenBroadcastExists) as refused:
        if route == "in a host session":
            with Session(store.engine) as session:
                orders.release(filled, "t1", tx=session)
        else:
            ROUTES[route](lifecycle, orders, filled)
    _check_refused(orders, filled, refused.value)
    orders.cancel(second)
    assert orders.release(filled, "t1").status is BroadcastStatus.ACTIVE  # once the other is closed
    store.close()
