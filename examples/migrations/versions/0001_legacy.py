"""The legacy schema: bookings and orders that jump straight to ``active``.

This is the schema an application had before it adopted broadcast_lifecycle; in your project it
is whatever revision your tables are at now.

Revision ID: 0001_legacy
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_legacy"
down_revision = None
branch_labels = None
depends_on = None

LEGACY_STATUS_CHECK = "status IN ('active', 'completed', 'cancelled')"


def _broadcast_table(name: str, *extra: sa.Column[int]) -> None:
    """Create one of the legacy broadcast tables."""
    op.create_table(
        name,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        *extra,
        sa.CheckConstraint(LEGACY_STATUS_CHECK, name=f"ck_{name}_status"),
    )


def upgrade() -> None:
    """Create the legacy bookings and orders tables."""
    _broadcast_table("bookings")
    _broadcast_table("orders", sa.Column("trucks_requested", sa.Integer, nullable=False, server_default="1"))


def downgrade() -> None:
    """Drop the legacy tables."""
    op.drop_table("orders")
    op.drop_table("bookings")
