"""Adopt broadcast_lifecycle: the lifecycle columns on bookings and orders, the new states, the
library's tables, and a first history row for every existing broadcast.

Additive: no column or row is dropped, every existing row keeps its status and gets
``state_changed_at = created_at``. Runs on SQLite through batch mode (ALTER TABLE there cannot
change nullability or constraints) and on PostgreSQL as plain ALTERs.

The schema is written out here rather than read from ``broadcast_lifecycle.stores.schema``: a
revision must build the same tables whichever library version runs it, or a later revision that
changes a library table would fail on a database this one created. ``tests/test_migration.py``
checks that the result matches the library's current tables (``alembic check``).

Revision ID: 0002_broadcast_lifecycle
Revises: 0001_legacy
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_broadcast_lifecycle"
down_revision = "0001_legacy"
branch_labels = None
depends_on = None

STATES = ("created", "broadcasting", "active", "partially_filled", "fully_filled", "in_progress", "completed",
          "cancelled", "expired")
STATUS_CHECK = "({})".format(" OR ".join(f"status = '{s}'" for s in STATES))
"""Equalities rather than ``status IN (...)``: SQLite rebuilds an IN list for every row it checks."""
LEGACY_STATUS_CHECK = "status IN ('active', 'completed', 'cancelled')"
EXPIRABLE = "(status = 'active' OR status = 'broadcasting' OR status = 'created' OR status = 'partially_filled')"
"""The sweeper's filter, verbatim: SQLite uses a partial index only for a query that repeats its WHERE."""
TERMINAL_HISTORY = "(to_status = 'cancelled' OR to_status = 'completed' OR to_status = 'expired')"
"""Terminal transitions, verbatim as history pruning queries them."""

EVERYONE_FUNCTION = (
    "CREATE OR REPLACE FUNCTION bl_everyone_json(text, text, text) RETURNS json LANGUAGE plpgsql VOLATILE AS $body$ "
    "BEGIN RETURN (SELECT json_agg(x ORDER BY o, n, tid) FROM (SELECT 0 AS o, NULL::timestamptz AS n, ''::text AS tid, "
    "json_build_array('customer', $3) AS x WHERE $3 IS NOT NULL UNION ALL SELECT 1, r.notified_at, r.transporter_id, "
    "json_build_array('transporter', r.transporter_id) FROM bl_recipients r WHERE r.kind = $1 AND r.entity_id = $2 "
    "AND ($3 IS NOT NULL OR r.slots_held = 0)) s); END $body$"
)
"""PostgreSQL: a terminal event's recipients (or, without a customer, a re-offer's: the transporters
holding no slot) on a fresh snapshot, which the one-statement filling accept and activate call
(``postgresql_functions_ddl()`` as of this revision)."""

OUTBOX_DELIVERED_INDEX = ("CREATE INDEX IF NOT EXISTS ix_bl_outbox_delivered ON bl_outbox (delivered_at) "
                          "WHERE delivered_at IS NOT NULL")
"""PostgreSQL: delivered outbox rows for pruning (``OUTBOX_DELIVERED_INDEX_DDL`` as of this revision;
SQLite has no such index)."""

BROADCASTS = {"bookings": ("booking", "1"), "orders": ("order", "trucks_requested")}
"""Table -> (kind, SQL for an existing row's slots_requested)."""

_Tz = sa.DateTime(timezone=True)


def _checks(table: str) -> dict[str, str]:
    """The lifecycle CHECK constraints of ``table``, by name."""
    return {
        f"ck_{table}_status": STATUS_CHECK,
        f"ck_{table}_slots_requested": "slots_requested >= 1",
        f"ck_{table}_slots_filled": "slots_filled >= 0 AND slots_filled <= slots_requested",
    }


def upgrade() -> None:
    """Add the lifecycle to bookings and orders, create the library's tables, seed the history."""
    for table, (_, requested) in BROADCASTS.items():
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("state_changed_at", _Tz, nullable=True))
            batch.add_column(sa.Column("version", sa.Integer, nullable=True))
            batch.add_column(sa.Column("slots_requested", sa.Integer, nullable=True))
            batch.add_column(sa.Column("slots_filled", sa.Integer, nullable=True))
            batch.add_column(sa.Column("expires_at", _Tz, nullable=True))
        # Existing rows: stamped when created; a completed broadcast had every slot filled.
        op.execute(
            f"UPDATE {table} SET state_changed_at = created_at, version = 1, slots_requested = {requested}, "
            f"slots_filled = CASE WHEN status = 'completed' THEN {requested} ELSE 0 END"
        )
        with op.batch_alter_table(table) as batch:
            for column in ("state_changed_at", "version", "slots_requested", "slots_filled"):
                batch.alter_column(column, existing_type=_Tz if column == "state_changed_at" else sa.Integer,
                                   nullable=False)
            batch.drop_constraint(f"ck_{table}_status", type_="check")
            for name, condition in _checks(table).items():
                batch.create_check_constraint(name, condition)
            batch.create_index(f"ix_{table}_customer_id", ["customer_id"])
        op.create_index(f"ix_{table}_due", table, ["expires_at"], sqlite_where=sa.text(EXPIRABLE),
                        postgresql_where=sa.text(EXPIRABLE))

    _create_library_tables()
    if op.get_context().dialect.name == "postgresql":
        op.execute(EVERYONE_FUNCTION)
        op.execute(OUTBOX_DELIVERED_INDEX)

    for table, (kind, _) in BROADCASTS.items():
        op.execute(
            'INSERT INTO bl_transition_history (kind, entity_id, from_status, to_status, "trigger", actor, reason, '
            f"meta, at, version) SELECT '{kind}', CAST(id AS VARCHAR(64)), NULL, status, 'migrate', NULL, NULL, "
            f"'{{}}', created_at, 1 FROM {table}"
        )


def downgrade() -> None:
    """Back to the legacy schema, keeping every row: states the old CHECK does not know become the
    nearest old one (expired -> cancelled, the open and in-progress states -> active)."""
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS bl_everyone_json(text, text, text)")
    for table in ("bl_idempotency", "bl_deliveries", "bl_outbox", "bl_recipients", "bl_transition_history"):
        op.drop_table(table)
    for table in BROADCASTS:
        op.execute(
            f"UPDATE {table} SET status = CASE WHEN status IN ('completed', 'cancelled') THEN status "
            "WHEN status = 'expired' THEN 'cancelled' ELSE 'active' END"
        )
        if table == "orders":
            op.execute("UPDATE orders SET trucks_requested = slots_requested")
        op.drop_index(f"ix_{table}_due", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_customer_id")
            for name in _checks(table):
                batch.drop_constraint(name, type_="check")
            for column in ("state_changed_at", "version", "slots_requested", "slots_filled", "expires_at"):
                batch.drop_column(column)
            batch.create_check_constraint(f"ck_{table}_status", LEGACY_STATUS_CHECK)


def _create_library_tables() -> None:
    """broadcast_lifecycle's own tables as of this revision (``library_metadata``)."""
    op.create_table(
        "bl_transition_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.Text, nullable=False),
        sa.Column("from_status", sa.String(32)),
        sa.Column("to_status", sa.String(32), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("actor", sa.Text),
        sa.Column("reason", sa.Text),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("at", _Tz, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("uq_bl_history_entity_version", "bl_transition_history", ["kind", "entity_id", "version"],
                    unique=True)
    op.create_index("ix_bl_history_terminal", "bl_transition_history", ["at"],
                    sqlite_where=sa.text(TERMINAL_HISTORY), postgresql_where=sa.text(TERMINAL_HISTORY))
    op.create_table(
        "bl_recipients",
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("entity_id", sa.Text, primary_key=True),
        sa.Column("transporter_id", sa.Text, primary_key=True),
        sa.Column("notified_at", _Tz, nullable=False),
        sa.Column("slots_held", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("response", sa.String(32)),
        sa.Column("responded_at", _Tz),
        sa.CheckConstraint("slots_held >= 0", name="ck_bl_recipients_slots_held"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "bl_outbox",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("id_field", sa.String(64), nullable=False),
        sa.Column("entity_id", sa.Text, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("previous_status", sa.String(32)),
        sa.Column("state_changed_at", _Tz, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("slots_filled", sa.Integer, nullable=False),
        sa.Column("slots_requested", sa.Integer, nullable=False),
        sa.Column("expires_at", _Tz),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("recipients", sa.JSON, nullable=False),
        sa.Column("created_at", _Tz, nullable=False),
        sa.Column("delivered_at", _Tz),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("next_attempt_at", _Tz),
        sa.Column("last_error", sa.Text),
        sa.Column("dead_at", _Tz),
    )
    pending = sa.text("delivered_at IS NULL AND dead_at IS NULL")
    op.create_index("ix_bl_outbox_pending", "bl_outbox", ["created_at"], sqlite_where=pending,
                    postgresql_where=pending)
    op.create_table(
        "bl_deliveries",
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("receiver", sa.String(200), primary_key=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("next_attempt_at", _Tz),
        sa.Column("delivered_at", _Tz),
        sa.Column("dead_at", _Tz),
        sqlite_with_rowid=False,
    )
    dead = sa.text("dead_at IS NOT NULL")
    op.create_index("ix_bl_deliveries_dead", "bl_deliveries", ["dead_at"], sqlite_where=dead, postgresql_where=dead)
    op.create_table(
        "bl_idempotency",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("entity_id", sa.Text, nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("outcome", sa.JSON, nullable=False),
        sa.Column("created_at", _Tz, nullable=False),
    )
    op.create_index("ix_bl_idempotency_created", "bl_idempotency", ["created_at"])
