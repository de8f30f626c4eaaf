"""Set-wise expiry in SQL: one pass per batch writes the new states, the history rows and the
outbox rows (recipient lists included) without a round trip per broadcast.

PostgreSQL does it in one statement whose first step claims the rows ``FOR UPDATE SKIP LOCKED``,
so several sweepers share the work and none expires a broadcast twice. SQLite runs the same steps
through a temporary table inside one ``BEGIN IMMEDIATE`` transaction, which already excludes
every other writer. Both read the partial index ``ix_<table>_due`` (see ``schema.due_index_ddl``).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Dialect, Table

from .schema import EXPIRABLE_SQL
from .sql_text import OUTBOX_COLUMNS, EntitySql, render

__all__ = ["SweepSql"]

_RETURNING = (
    " RETURNING event_id, name, topic, entity_id, status, previous_status, state_changed_at, version, "
    "slots_filled, slots_requested, recipients"
)


def _hex_as_uuid(column: str) -> str:
    """32 random hex digits, shaped like a UUID."""
    parts = ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))
    return " || '-' || ".join(f"substr({column}, {start}, {length})" for start, length in parts)


class SweepSql:
    """The sweep statements for one broadcasts table."""

    def __init__(self, entity: EntitySql, dialect: Dialect, history: Table, recipients: Table,
                 outbox: Table) -> None:
        self._pg = dialect.name == "postgresql"
        quote = dialect.identifier_preparer.quote
        table, pk, trigger = quote(entity.table.name), quote(entity.pk.name), quote("trigger")
        kind_filter = " AND kind = :kind" if "kind" in entity.table.c else ""
        overdue = (f"{EXPIRABLE_SQL}{kind_filter} AND expires_at <= :now AND state_changed_at <= :now "
                   "ORDER BY expires_at LIMIT :limit")
        history_insert = (f"INSERT INTO {history.name} (kind, entity_id, from_status, to_status, {trigger}, actor, "
                          "reason, meta, at, version) SELECT :kind, key, old_status, 'expired', 'expire', :actor, "
                          ":reason, {meta}, :now, version FROM {due}")
        outbox_insert = (f"INSERT INTO {outbox.name} ({OUTBOX_COLUMNS}) SELECT {{event_id}}, {{name}}, {{topic}}, "
                         ":kind, :id_field, key, 'expired', old_status, :now, version, slots_filled, "
                         "slots_requested, {recipients}, :now, 0 FROM {due} d")
        if self._pg:
            everyone = ("(SELECT json_agg(x ORDER BY o, n, tid) FROM (SELECT 0 AS o, NULL::timestamptz AS n, "
                        "''::text AS tid, json_build_array('customer', d.customer_id) AS x UNION ALL "
                        "SELECT 1, r.notified_at, r.transporter_id, json_build_array('transporter', r.transporter_id) "
                        f"FROM {recipients.name} r WHERE r.kind = :kind AND r.entity_id = d.key) s)")
            changed = outbox_insert.format(event_id="gen_random_uuid()::text", name=":changed_name",
                                           topic="'state_changed'", due="due",
                                           recipients="json_build_array(json_build_array('customer', customer_id))")
            expired = outbox_insert.format(event_id="gen_random_uuid()::text", name=":expired_name",
                                           topic="'expired'", due="due", recipients=everyone)
            head = (
                f"WITH due AS (SELECT {pk} AS id, CAST({pk} AS TEXT) AS key, status AS old_status, customer_id, "
                f"version + 1 AS version, slots_filled, slots_requested FROM {table} WHERE {overdue} "
                "FOR UPDATE SKIP LOCKED), "
                f"upd AS (UPDATE {table} t SET status = 'expired', state_changed_at = :now, version = due.version "
                f"FROM due WHERE t.{pk} = due.id), "
                f"hist AS ({history_insert.format(meta=_PG_EMPTY_JSON, due='due')}), "
            )
            self._with_events = [render(f"{head}ev1 AS ({changed}{_RETURNING}), ev2 AS ({expired}{_RETURNING}) "
                                        "SELECT * FROM ev1 UNION ALL SELECT * FROM ev2", dialect)]
            self._without_events = [render(f"{head}ev1 AS ({changed}), ev2 AS ({expired}) SELECT count(*) FROM due",
                                           dialect)]
            return
        key = f"CAST({pk} AS TEXT)"
        if entity.pk.type.python_type is uuid.UUID:
            key = f"lower({_hex_as_uuid(pk)})"
        everyone = ("'[[\"customer\",' || json_quote(d.customer_id) || ']' || coalesce((SELECT group_concat(x, '') "
                    "FROM (SELECT ',[\"transporter\",' || json_quote(r.transporter_id) || ']' AS x "
                    f"FROM {recipients.name} r WHERE r.kind = :kind AND r.entity_id = d.key "
                    "ORDER BY r.notified_at, r.transporter_id)), '') || ']'")
        changed = outbox_insert.format(event_id=_hex_as_uuid("d.ev1"), name=":changed_name", topic="'state_changed'",
                                       due="temp.bl_due",
                                       recipients="'[[\"customer\",' || json_quote(d.customer_id) || ']]'")
        expired = outbox_insert.format(event_id=_hex_as_uuid("d.ev2"), name=":expired_name", topic="'expired'",
                                       due="temp.bl_due", recipients=everyone)
        prepare = [
            "CREATE TEMP TABLE IF NOT EXISTS bl_due (id, key, old_status, customer_id, version, slots_filled, "
            "slots_requested, ev1, ev2)",
            "DELETE FROM temp.bl_due",
            f"INSERT INTO temp.bl_due SELECT {pk}, {key}, status, customer_id, version + 1, slots_filled, "
            f"slots_requested, {_SQLITE_TIME_ORDERED_ID}, {_SQLITE_TIME_ORDERED_ID} FROM {table} WHERE {overdue}",
            f"UPDATE {table} SET status = 'expired', state_changed_at = :now, version = version + 1 "
            f"WHERE {pk} IN (SELECT id FROM temp.bl_due)",
            history_insert.format(meta="'{}'", due="temp.bl_due"),
        ]
        self._with_events = [*prepare, changed + _RETURNING, expired + _RETURNING]
        self._without_events = [*prepare, changed, expired]

    def run(self, cursor: Any, params: dict[str, Any], with_events: bool) -> tuple[int, list[tuple[Any, ...]]]:
        """Execute the sweep on ``cursor`` inside the caller's transaction.

        Returns how many broadcasts it expired and, ``with_events``, the outbox rows it wrote.
        """
        count = 0
        rows: list[tuple[Any, ...]] = []
        for statement in self._with_events if with_events else self._without_events:
            cursor.execute(statement, params)
            if statement.startswith("UPDATE"):
                count = cursor.rowcount
            elif with_events and (statement.startswith("WITH") or _RETURNING in statement):
                rows += cursor.fetchall()
            elif statement.startswith("WITH"):
                (count,) = cursor.fetchone()
        if self._pg and with_events:
            count = len(rows) // 2
        return count, rows


_PG_EMPTY_JSON = "CAST('{}' AS JSON)"

# Time-ordered (UUIDv7-like: milliseconds, then random bits) so the outbox's primary-key index
# grows at its end instead of taking 100,000 random insertions per sweep.
_SQLITE_TIME_ORDERED_ID = "printf('%012x', :now_ms) || lower(hex(randomblob(10)))"
