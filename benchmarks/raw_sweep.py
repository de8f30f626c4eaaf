"""The raw baseline of ``bench_sweep.py``: the set-based sweep written by hand on the bare driver,
doing per batch what the library's sweep does (status, version, state_changed_at; one history row
and two outbox rows per broadcast, the second addressed to the customer and every notified
transporter), batch by batch until fewer than a batch are due.

PostgreSQL: one statement per batch (data-modifying CTEs, ``FOR UPDATE SKIP LOCKED``), event ids
from ``gen_random_uuid()``. SQLite: one ``BEGIN IMMEDIATE`` transaction per batch through a
temporary table, event ids that grow with time (the batch's clock, then the row), so the outbox's
key index grows at its end as the library's does (random ids there cost three times the pages).
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from typing import Any

import psycopg

__all__ = ["raw_sweep_pg", "raw_sweep_sqlite"]

_OVERDUE = "(status = 'active' OR status = 'broadcasting' OR status = 'created' OR status = 'partially_filled')"
"""The expirable states, spelled as the schema's partial index ``ix_bl_broadcasts_due`` spells them:
SQLite uses a partial index only for a query that repeats its WHERE."""
_OUTBOX = ("INSERT INTO bl_outbox (event_id, name, topic, kind, id_field, entity_id, status, previous_status, "
           "state_changed_at, version, slots_filled, slots_requested, expires_at, \"trigger\", reason, recipients, "
           "created_at, attempts) ")
_HISTORY = ('INSERT INTO bl_transition_history (kind, entity_id, from_status, to_status, "trigger", actor, reason, '
            "meta, at, version) ")

PG_BATCH = (
    f"WITH due AS (SELECT id FROM bl_broadcasts WHERE kind = 'booking' AND {_OVERDUE} AND expires_at <= %(now)s "
    "ORDER BY expires_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED), "
    "old AS (SELECT b.id, b.status FROM bl_broadcasts b JOIN due USING (id)), "
    "upd AS (UPDATE bl_broadcasts b SET status = 'expired', state_changed_at = %(now)s, version = b.version + 1 "
    "FROM old WHERE b.id = old.id RETURNING b.id, b.id::text AS key, old.status AS previous, b.customer_id, "
    "b.version, b.slots_filled, b.slots_requested, b.expires_at), "
    f"hist AS ({_HISTORY}SELECT 'booking', key, previous, 'expired', 'expire', 'system', 'deadline passed', "
    "CAST('{}' AS JSON), %(now)s, version FROM upd), "
    f"ev1 AS ({_OUTBOX}SELECT gen_random_uuid()::text, 'BROADCAST_STATE_CHANGED', 'state_changed', 'booking', "
    "'bookingId', key, 'expired', previous, %(now)s, version, slots_filled, slots_requested, expires_at, 'expire', "
    "'deadline passed', json_build_array(json_build_array('customer', customer_id)), %(now)s, 0 FROM upd), "
    f"ev2 AS ({_OUTBOX}SELECT gen_random_uuid()::text, 'BOOKING_EXPIRED', 'expired', 'booking', 'bookingId', key, "
    "'expired', previous, %(now)s, version, slots_filled, slots_requested, expires_at, 'expire', 'deadline passed', "
    "(SELECT json_build_array('customer', upd.customer_id)::jsonb || COALESCE(jsonb_agg(json_build_array("
    "'transporter', r.transporter_id) ORDER BY r.notified_at, r.transporter_id), '[]') FROM bl_recipients r "
    "WHERE r.kind = 'booking' AND r.entity_id = upd.key)::json, %(now)s, 0 FROM upd) "
    "SELECT count(*) FROM upd"
)

SQLITE_BATCH = (
    "CREATE TEMP TABLE IF NOT EXISTS due (id, key, previous, customer_id, version, slots_filled, slots_requested, "
    "expires_at)",
    "DELETE FROM temp.due",
    "INSERT INTO temp.due SELECT id, CAST(id AS TEXT), status, customer_id, version + 1, slots_filled, "
    f"slots_requested, expires_at FROM bl_broadcasts WHERE kind = 'booking' AND {_OVERDUE} AND expires_at <= :now "
    "ORDER BY expires_at LIMIT :limit",
    "UPDATE bl_broadcasts SET status = 'expired', state_changed_at = :now, version = version + 1 "
    "WHERE id IN (SELECT id FROM temp.due)",
    f"{_HISTORY}SELECT 'booking', key, previous, 'expired', 'expire', 'system', 'deadline passed', '{{}}', :now, "
    "version FROM temp.due",
    f"{_OUTBOX}SELECT :ids || 'c' || printf('%08x', d.rowid), 'BROADCAST_STATE_CHANGED', 'state_changed', 'booking', "
    "'bookingId', "
    "key, 'expired', previous, :now, version, slots_filled, slots_requested, expires_at, 'expire', 'deadline passed', "
    "json_array(json_array('customer', customer_id)), :now, 0 FROM temp.due d",
    f"{_OUTBOX}SELECT :ids || 'e' || printf('%08x', d.rowid), 'BOOKING_EXPIRED', 'expired', 'booking', 'bookingId', "
    "key, "
    "'expired', previous, :now, version, slots_filled, slots_requested, expires_at, 'expire', 'deadline passed', "
    "(SELECT json_group_array(json(x)) FROM (SELECT json_array('customer', d.customer_id) AS x, 0 AS o, NULL AS n, "
    "'' AS t UNION ALL SELECT json_array('transporter', r.transporter_id), 1, r.notified_at, r.transporter_id "
    "FROM bl_recipients r WHERE r.kind = 'booking' AND r.entity_id = d.key ORDER BY o, n, t)), :now, 0 "
    "FROM temp.due d",
)


def raw_sweep_pg(dsn: str, now: datetime, batch_size: int) -> int:
    """Expire every overdue booking, batch by batch (one autocommit statement each); how many."""
    expired = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(PG_BATCH, {"now": now, "limit": batch_size}).fetchone()
            count = int(row[0]) if row else 0
            expired += count
            if count < batch_size:
                return expired


def raw_sweep_sqlite(path: str, now: datetime, batch_size: int, pragmas: tuple[str, ...]) -> int:
    """Expire every overdue booking, batch by batch (one BEGIN IMMEDIATE transaction each); how many."""
    stamp = now.replace(tzinfo=None).isoformat(" ", "microseconds")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in pragmas:
            conn.execute(pragma)
        expired = 0
        while True:
            cur: Any = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            count = 0
            params = {"now": stamp, "limit": batch_size, "ids": f"{time.time_ns():016x}-"}
            for statement in SQLITE_BATCH:
                cur.execute(statement, params)
                if statement.startswith("UPDATE"):
                    count = cur.rowcount
            cur.execute("COMMIT")
            expired += count
            if count < batch_size:
                return expired
    finally:
        conn.close()
