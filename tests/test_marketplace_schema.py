"""The example app's Alembic history (the library's example revisions, then the app's own) builds the
app's whole schema on SQLite and PostgreSQL, from empty or from legacy data, and goes back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from marketplace.db import alembic_config, migrate
from sqlalchemy.exc import IntegrityError

LIBRARY_HEAD = "0002_broadcast_lifecycle"


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """A plain engine on the test database, for setting up and inspecting."""
    eng = sa.create_engine(database_url)
    yield eng
    eng.dispose()


def test_migrating_an_empty_database_builds_the_models(database_url: str, engine: sa.Engine) -> None:
    """From empty to head: `alembic check` finds nothing between the database and the app's models
    plus the library's tables, and the lifecycle CHECK survives the app's table rebuilds."""
    migrate(database_url)
    command.check(alembic_config(database_url))
    assert {"bookings", "orders", "transporters", "bl_outbox"} <= set(sa.inspect(engine).get_table_names())
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO orders (customer_id, status, created_at, state_changed_at, version, slots_requested, "
            "slots_filled, pickup_address, pickup_lat, pickup_lon, drop_address, drop_lat, drop_lon, trucks) "
            "VALUES ('c', 'bogus', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, 1, 1, 0, '', 0, 0, '', 0, 0, '[]')"))


def test_legacy_orders_keep_their_trucks_both_ways(database_url: str, engine: sa.Engine) -> None:
    """A legacy order of 3 trucks becomes one request of 3 trucks, and going back to the library's
    revision restores trucks_requested from the slots."""
    config = alembic_config(database_url)
    command.upgrade(config, "0001_legacy")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO orders (id, customer_id, status, created_at, trucks_requested) "
                             "VALUES (1, 'c-legacy', 'active', CURRENT_TIMESTAMP, 3)"))
    command.upgrade(config, "heads")
    orders = sa.table("orders", sa.column("id", sa.Integer), sa.column("trucks", sa.JSON),
                      sa.column("slots_requested", sa.Integer))
    with engine.connect() as conn:
        row = conn.execute(sa.select(orders.c.trucks, orders.c.slots_requested).where(orders.c.id == 1)).one()
    assert (row.trucks, row.slots_requested) == ([{"vehicleType": "truck", "count": 3}], 3)

    command.downgrade(config, LIBRARY_HEAD)
    assert "transporters" not in sa.inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT trucks_requested FROM orders WHERE id = 1")).scalar_one() == 3
    command.upgrade(config, "heads")
    command.check(config)
