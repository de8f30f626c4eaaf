"""Set-wise expiry in SQL: one pass per batch writes the new states, the history rows and the
outbox rows (recipient lists included) without a round trip per broadcast.

PostgreSQL does it in one statement whose first step claims the rows ``FOR UPDATE SKIP LOCKED``,
so several sweepers share the work and none expires a broadcast twice. SQLite runs the same steps
through a temporary table inside one ``BEGIN IMMEDIATE`` transaction, which already excludes
every other writer.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Dialect, Table

from ..lifecycle import Trigger, allowed_from
from .sql_text import OUTBOX_COLUMNS, EntitySql, render

__all__ = ["SweepSql"]

_EXPIRABLE = ", ".join(f"'{s.value}'" for s in sorted(allowed_from(Trigger.EXPIRE)))

_SQLITE_UUID4 = (
    "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' "
    "|| substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6)))"
)
_RETURNING = (
    "RETURNING event_id, name, topic, entity_id, status, previous_status, state_changed_at, version, "
    "slots_filled, slots_requested, recipients"
)


class SweepSql:
    """The sweep statements for one broadcasts table."""

    def __init__(self, entity: EntitySql, dialect: Dialect, history: Table, recipients: Table,
                 outbox: Table) -> None:
        self.pg = dialect.name == "postgresql"
        table = dialect.identifier_preparer.quote(entity.table.name)
        pk = dialect.identifier_preparer.quote(entity.pk.name)
        kind_filter = " AND kind = :kind" if "kind" in entity.table.c else ""
        overdue = (f"status IN ({_EXPIRABLE}) AND expires_at <= :now AND state_changed_at <= :now{kind_filter} "
                   "ORDER BY expires_at LIMIT :limit")
        trigger = dialect.identifier_preparer.quote("trigger")
        history_insert = (f"INSERT INTO {history.name} (kind, entity_id, from_status, to_status, {trigger}, actor, "
                          "reason, meta, at, version) SELECT :kind, key, old_status, 'expired', 'expire', :actor, "
                          ":reason, {meta}, :now, version FROM {due}")
        if self.pg:
            everyone = (f"(SELECT json_agg(x ORDER BY o, n, tid) FROM (SELECT 0 AS o, NULL::timestamptz AS n, "
                        "''::text AS tid, json_build_array('customer', d.customer_id) AS x UNION ALL "
                        "SELECT 1, r.notified_at, r.transporter_id, json_build_array('transporter', r.transporter_id) "
                        f"FROM {recipients.name} r WHERE r.kind = :kind AND r.entity_id = d.key) s)")
            pg_history = history_insert.format(meta="CAST('{}' AS JSON)", due="due")
            self.statements = [render(
                f"WITH due AS (SELECT {pk} AS id, CAST({pk} AS TEXT) AS key, status AS old_status, customer_id, "
                f"version + 1 AS version, slots_filled, slots_requested FROM {table} WHERE {overdue} "
                f"FOR UPDATE SKIP LOCKED), "
                f"upd AS (UPDATE {table} t SET status = 'expired', state_changed_at = :now, version = due.version "
                f"FROM due WHERE t.{pk} = due.id), "
                f"hist AS ({pg_history}), "
                f"ev AS (INSERT INTO {outbox.name} ({OUTBOX_COLUMNS}) "
                f"SELECT gen_random_uuid()::text, :changed_name, 'state_changed', :kind, :id_field, key, 'expired', "
                "old_status, :now, version, slots_filled, slots_requested, "
                "json_build_array(json_build_array('customer', customer_id)), :now, 0 FROM due "
                f"UNION ALL SELECT gen_random_uuid()::text, :expired_name, 'expired', :kind, :id_field, key, "
                f"'expired', old_status, :now, version, slots_filled, slots_requested, {everyone}, :now, 0 "
                f"FROM due d {_RETURNING}) SELECT * FROM ev",
                dialect,
            )]
            return
        key = f"CAST({pk} AS TEXT)"
        if entity.pk.type.python_type is uuid.UUID:
            key = (f"lower(substr({pk}, 1, 8) || '-' || substr({pk}, 9, 4) || '-' || substr({pk}, 13, 4) || '-' "
                   f"|| substr({pk}, 17, 4) || '-' || substr({pk}, 21))")
        everyone = ("(SELECT json_group_array(json(x)) FROM (SELECT 0 AS o, '' AS n, '' AS tid, "
                    "json_array('customer', d.customer_id) AS x UNION ALL SELECT 1, r.notified_at, r.transporter_id, "
                    f"json_array('transporter', r.transporter_id) FROM {recipients.name} r "
                    "WHERE r.kind = :kind AND r.entity_id = d.key ORDER BY 1, 2, 3))")
        outbox_insert = (f"INSERT INTO {outbox.name} ({OUTBOX_COLUMNS}) SELECT {_SQLITE_UUID4}, {{name}}, {{topic}}, "
                         ":kind, :id_field, key, 'expired', old_status, :now, version, slots_filled, slots_requested, "
                         f"{{recipients}}, :now, 0 FROM temp.bl_due d {_RETURNING}")
        self.statements = [
            "CREATE TEMP TABLE IF NOT EXISTS bl_due (id, key, old_status, customer_id, version, slots_filled, "
            "slots_requested)",
            "DELETE FROM temp.bl_due",
            f"INSERT INTO temp.bl_due SELECT {pk}, {key}, status, customer_id, version + 1, slots_filled, "
            f"slots_requested FROM {table} WHERE {overdue}",
            f"UPDATE {table} SET status = 'expired', state_changed_at = :now, version = version + 1 "
            f"WHERE {pk} IN (SELECT id FROM temp.bl_due)",
            history_insert.format(meta="'{}'", due="temp.bl_due"),
            outbox_insert.format(name=":changed_name", topic="'state_changed'",
                                 recipients="json_array(json_array('customer', d.customer_id))"),
            outbox_insert.format(name=":expired_name", topic="'expired'", recipients=everyone),
        ]

    def run(self, cursor: Any, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Execute the sweep on ``cursor`` (inside the caller's transaction); returns the outbox rows."""
        rows: list[tuple[Any, ...]] = []
        for statement in self.statements:
            cursor.execute(statement, params)
            if "RETURNING" in statement or statement.startswith("WITH"):
                rows += cursor.fetchall()
        return rows
