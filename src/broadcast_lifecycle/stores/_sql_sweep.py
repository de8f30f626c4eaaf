"""Set-wise expiry in SQL: one pass per batch writes the new states, the history rows and the
outbox rows (recipient lists included) without a round trip per broadcast.

PostgreSQL does it in one statement whose first step claims the rows ``FOR UPDATE SKIP LOCKED``,
so several sweepers share the work and none expires a broadcast twice. SQLite runs the same steps
through a temporary table inside one ``BEGIN IMMEDIATE`` transaction, which already excludes
every other writer. Both read the partial index ``ix_<table>_due`` (see ``schema.due_index_ddl``).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Dialect, Table

from ..events import BroadcastEvent, Topic
from ..expiry import EXPIRY_TOPICS, SWEEP_REASON
from ..kinds import KindConfig
from ..lifecycle import Trigger
from ..states import BroadcastStatus
from ._outbox_row import OUTBOX_ROW
from ._sql_connections import SqlConnections
from ._sql_tables import StoreTables
from ._sql_text import EntitySql
from .base import ExpiredBatch
from .schema import EXPIRABLE_SQL, EXPIRABLE_SQL_IN_LIST, history_table, outbox_table, recipients_table
from .sql.common import render
from .sql.postgresql import pg_everyone_json

__all__ = ["SqlSweeper", "SweepSql"]

# What an expiry writes, from the core's ``Expiry`` (the store contract holds this SQL to it).
_EXPIRED, _EXPIRE = f"'{BroadcastStatus.EXPIRED.value}'", f"'{Trigger.EXPIRE.value}'"
_CHANGED_TOPIC, _EXPIRED_TOPIC = (f"'{topic.value}'" for topic in EXPIRY_TOPICS)


def _hex_as_uuid(column: str) -> str:
    """The 32 hex digits in ``column``, shaped like a UUID (8-4-4-4-12)."""
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
        overdue = (f"{EXPIRABLE_SQL} AND {EXPIRABLE_SQL_IN_LIST}{kind_filter} AND expires_at <= :now "
                   "AND state_changed_at <= :now "
                   "ORDER BY expires_at LIMIT :limit")
        history_insert = (f"INSERT INTO {history.name} (kind, entity_id, from_status, to_status, {trigger}, actor, "
                          f"reason, meta, at, version) SELECT :kind, key, old_status, {_EXPIRED}, {_EXPIRE}, :actor, "
                          ":reason, {meta}, :now, version FROM {due}")
        self._returning = f" RETURNING {OUTBOX_ROW.returning(dialect)}"

        def outbox_insert(event_id: str, name: str, topic: str, due: str, recipients: str) -> str:
            """One outbox row per broadcast in ``due`` (alias ``d``), every column computed here."""
            values = OUTBOX_ROW.select_list(dialect, prefix=None, written_at=":now", sql={
                "event_id": event_id, "name": name, "topic": topic, "kind": ":kind", "id_field": ":id_field",
                "entity_id": "key", "status": _EXPIRED, "previous_status": "old_status",
                "state_changed_at": ":now", "version": "version", "slots_filled": "slots_filled",
                "slots_requested": "slots_requested", "expires_at": "expires_at",
                "trigger": _EXPIRE, "reason": ":reason", "recipients": recipients,
            })
            return f"INSERT INTO {outbox.name} ({OUTBOX_ROW.insert_columns(dialect)}) SELECT {values} FROM {due} d"
        if self._pg:
            everyone = pg_everyone_json(recipients, "d.customer_id", "d.key")
            changed = outbox_insert(event_id="gen_random_uuid()::text", name=":changed_name",
                                    topic=_CHANGED_TOPIC, due="due",
                                    recipients="json_build_array(json_build_array('customer', customer_id))")
            expired = outbox_insert(event_id="gen_random_uuid()::text", name=":expired_name",
                                    topic=_EXPIRED_TOPIC, due="due", recipients=everyone)
            # Two statements: the first locks the due rows, the second (a new snapshot under READ
            # COMMITTED) reads them and their recipients. In one statement, a notify_more committing
            # between the statement's snapshot and its lock on the row would go unseen (it locks the
            # row but changes nothing in it), and its transporter would never hear the expiry.
            self._lock = render(f"SELECT {pk} FROM {table} WHERE {overdue} FOR UPDATE SKIP LOCKED", dialect)
            head = (
                f"WITH due AS (SELECT {pk} AS id, CAST({pk} AS TEXT) AS key, status AS old_status, customer_id, "
                f"version + 1 AS version, slots_filled, slots_requested, expires_at FROM {table} "
                f"WHERE {pk} = ANY(:ids)), "
                f"upd AS (UPDATE {table} t SET status = {_EXPIRED}, state_changed_at = :now, version = due.version "
                f"FROM due WHERE t.{pk} = due.id), "
                f"hist AS ({history_insert.format(meta=_PG_EMPTY_JSON, due='due')}), "
            )
            self._with_events = [render(f"{head}ev1 AS ({changed}{self._returning}), "
                                        f"ev2 AS ({expired}{self._returning}) "
                                        "SELECT * FROM ev1 UNION ALL SELECT * FROM ev2", dialect)]
            self._without_events = [render(f"{head}ev1 AS ({changed}), ev2 AS ({expired}) SELECT count(*) FROM due",
                                           dialect)]
            return
        key = f"CAST({pk} AS TEXT)"
        if entity.pk.type.python_type is uuid.UUID:
            key = f"lower({_hex_as_uuid(pk)})"
        # The transporters' ids joined by the text between two of them: no string built per transporter.
        everyone = ("'[[\"customer\",' || json_quote(d.customer_id) || coalesce((SELECT '],[\"transporter\",' || "
                    "group_concat(q, '],[\"transporter\",') FROM (SELECT json_quote(r.transporter_id) AS q "
                    f"FROM {recipients.name} r WHERE r.kind = :kind AND r.entity_id = d.key "
                    "ORDER BY r.notified_at, r.transporter_id)), '') || ']]'")
        changed = outbox_insert(event_id=_sqlite_uuid7("d.rowid"), name=":changed_name",
                                topic=_CHANGED_TOPIC, due="temp.bl_due",
                                recipients="'[[\"customer\",' || json_quote(d.customer_id) || ']]'")
        expired = outbox_insert(event_id=_sqlite_uuid7(f"d.rowid + {_EXPIRED_COUNTER}"), name=":expired_name",
                                topic=_EXPIRED_TOPIC, due="temp.bl_due", recipients=everyone)
        prepare = [
            "CREATE TEMP TABLE IF NOT EXISTS bl_due (id, key, old_status, customer_id, version, slots_filled, "
            "slots_requested, expires_at)",
            "DELETE FROM temp.bl_due",
            f"INSERT INTO temp.bl_due SELECT {pk}, {key}, status, customer_id, version + 1, slots_filled, "
            f"slots_requested, expires_at FROM {table} WHERE {overdue}",
            f"UPDATE {table} SET status = {_EXPIRED}, state_changed_at = :now, version = version + 1 "
            f"WHERE {pk} IN (SELECT id FROM temp.bl_due)",
            history_insert.format(meta="'{}'", due="temp.bl_due"),
        ]
        self._with_events = [*prepare, changed + self._returning, expired + self._returning]
        self._without_events = [*prepare, changed, expired]

    def run(self, cursor: Any, params: dict[str, Any], with_events: bool) -> tuple[int, list[tuple[Any, ...]]]:
        """Execute the sweep on ``cursor`` inside the caller's transaction.

        Returns how many broadcasts it expired and, ``with_events``, the outbox rows it wrote.
        """
        count = 0
        rows: list[tuple[Any, ...]] = []
        if self._pg:
            cursor.execute(self._lock, params)
            ids = [id_ for (id_,) in cursor.fetchall()]
            if not ids:
                return 0, rows
            params = {**params, "ids": ids}
        else:
            params = {**params, "ev_ms": _uuid7_ms_prefix()}
        for statement in self._with_events if with_events else self._without_events:
            cursor.execute(statement, params)
            if statement.startswith("UPDATE"):
                count = cursor.rowcount
            elif with_events and (statement.startswith("WITH") or self._returning in statement):
                rows += cursor.fetchall()
            elif statement.startswith("WITH"):
                (count,) = cursor.fetchone()
        if self._pg and with_events:
            count = len(rows) // 2
        return count, rows


class SqlSweeper:
    """The sweeper part of :class:`~broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore`, on the store's
    connections (``db``) and tables (``schema``); it owns the sweep statements of each broadcasts table,
    built on first use."""

    def __init__(self, db: SqlConnections, schema: StoreTables) -> None:
        self._db = db
        self._schema = schema
        self._sweeps: dict[str, SweepSql] = {}

    def expire_overdue(self, kind: KindConfig, now: datetime, limit: int, actor: str,
                       with_events: bool = True) -> ExpiredBatch:
        """See :meth:`BroadcastStore.expire_overdue`."""
        db = self._db
        sql = self._schema.entity(kind.name)
        sweep = self._sweeps.get(sql.table.name)
        if sweep is None:
            sweep = self._sweeps[sql.table.name] = SweepSql(sql, db.engine.dialect, history_table,
                                                            recipients_table, outbox_table)
        params = {
            "kind": kind.name, "now": sql.time.bind(now), "now_ms": int(now.timestamp() * 1000), "limit": limit,
            "actor": actor,
            "reason": SWEEP_REASON, "id_field": kind.id_field,
            "changed_name": kind.event_name(Topic.STATE_CHANGED), "expired_name": kind.event_name(Topic.EXPIRED),
        }
        with db.cursor(None, write=True) as cur:  # several statements, in one transaction
            count, rows = sweep.run(cur, params, with_events)

        def load_events() -> list[BroadcastEvent]:
            return [self._schema.rebuild_tuple(row) for row in rows]

        return ExpiredBatch(count, load_events)


_PG_EMPTY_JSON = "CAST('{}' AS JSON)"

# SQLite's event ids are UUIDv7 (RFC 9562) with a counter (its "method 1"): the wall-clock
# milliseconds of the batch, then the row's place in the batch, then 48 random bits. Every batch's ids
# therefore sort after the previous batch's and in the order they are inserted, so the outbox's
# primary-key index only grows at its end. (Ids that share the sweep's ``now`` and differ only in
# random bits would land all over that index: a sweep of 50,000 broadcasts in batches of 1,000 then
# rewrote the whole index at every commit, 3x the pages the sweep needs.)
_COUNTER_BITS = 26
_EXPIRED_COUNTER = 1 << (_COUNTER_BITS - 1)
"""Added to the expired events' counter, so they sort after the batch's state-changed events."""


def _uuid7_ms_prefix() -> str:
    """The first two groups of a UUIDv7 minted now: 48 bits of Unix time in milliseconds."""
    ms = (time.time_ns() // 1_000_000) & 0xFFFF_FFFF_FFFF
    return f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-"


def _sqlite_uuid7(counter: str) -> str:
    """SQL for a UUIDv7 after ``:ev_ms``: version 7, the 26-bit ``counter`` in rand_a and the top of
    rand_b (after the variant bits), then 48 random bits."""
    return (f"printf('%s7%03x-%x%03x-%012x', :ev_ms, (({counter}) >> 14) & 4095, 8 | ((({counter}) >> 12) & 3), "
            f"({counter}) & 4095, random() & 281474976710655)")
