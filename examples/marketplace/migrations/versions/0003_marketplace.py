"""The marketplace's own columns on bookings and orders, and the transporters table.

Builds on ``examples/migrations`` (0001 the legacy tables, 0002 the lifecycle): an app adopting the
library keeps its history of revisions and adds its own after the library's. Existing rows get
neutral values (no address, coordinates 0, vehicle type ``truck``; a legacy order's trucks become
one request of ``trucks_requested`` trucks, a column this revision replaces).

Revision ID: 0003_marketplace
Revises: 0002_broadcast_lifecycle
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_marketplace"
down_revision = "0002_broadcast_lifecycle"
branch_labels = None
depends_on = None

TRIP = ("pickup_address", "pickup_lat", "pickup_lon", "drop_address", "drop_lat", "drop_lon")


def _trip_columns() -> list[sa.Column[object]]:
    """Pickup and drop, NOT NULL with a default for the rows already there."""
    return [
        sa.Column(name, sa.String(200) if name.endswith("address") else sa.Float, nullable=False,
                  server_default=sa.text("''") if name.endswith("address") else sa.text("0"))
        for name in TRIP
    ]


def upgrade() -> None:
    """Add pickup/drop and vehicle type to bookings, pickup/drop and truck requests to orders, and
    create the transporters table."""
    with op.batch_alter_table("bookings") as batch:
        for column in _trip_columns():
            batch.add_column(column)
        batch.add_column(sa.Column("vehicle_type", sa.String(32), nullable=False, server_default=sa.text("'truck'")))
    with op.batch_alter_table("orders") as batch:
        for column in _trip_columns():
            batch.add_column(column)
        batch.add_column(sa.Column("trucks", sa.JSON, nullable=True))
    orders = sa.table("orders", sa.column("id", sa.Integer), sa.column("trucks_requested", sa.Integer),
                      sa.column("trucks", sa.JSON))
    bind = op.get_bind()
    for order_id, requested in bind.execute(sa.select(orders.c.id, orders.c.trucks_requested)).all():
        bind.execute(sa.update(orders).where(orders.c.id == order_id)
                     .values(trucks=[{"vehicleType": "truck", "count": requested}]))
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("trucks", existing_type=sa.JSON, nullable=False)
        batch.drop_column("trucks_requested")
    op.create_table(
        "transporters",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("vehicle_type", sa.String(32), nullable=False),
        sa.Column("lat", sa.Float, nullable=False),
        sa.Column("lon", sa.Float, nullable=False),
    )
    op.create_index("ix_transporters_position", "transporters", ["lat", "lon"])


def downgrade() -> None:
    """Drop what ``upgrade`` added; an order's slots become ``trucks_requested`` again."""
    op.drop_index("ix_transporters_position", table_name="transporters")
    op.drop_table("transporters")
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("trucks_requested", sa.Integer, nullable=False, server_default=sa.text("1")))
    op.execute("UPDATE orders SET trucks_requested = slots_requested")
    with op.batch_alter_table("orders") as batch:
        for name in (*TRIP, "trucks"):
            batch.drop_column(name)
    with op.batch_alter_table("bookings") as batch:
        for name in (*TRIP, "vehicle_type"):
            batch.drop_column(name)
