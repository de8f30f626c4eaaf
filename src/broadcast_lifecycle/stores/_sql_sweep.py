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
from ..expiry import SWEEP_REASON
from ..kinds import KindConfig
from ._sql_connections import SqlConnections
from ._sql_tables import StoreTables
from ._sql_text import EntitySql
from .base import ExpiredBatch
from .schema import history_table, outbox_table, recipients_table
from .sql import postgresql, sqlite
from .sql.common import SweepTables, sweep_returning

__all__ = ["SqlSweeper", "SweepSql"]


class SweepSql:
    """The sweep statements for one broadcasts table."""

    def __init__(self, entity: EntitySql, dialect: Dialect, history: Table, recipients: Table,
                 outbox: Table) -> None:
        self._pg = dialect.name == "postgresql"
        tables = SweepTables(entity.table, "kind" in entity.table.c, history, recipients, outbox)
        self._returning = sweep_returning(dialect)
        if self._pg:
            self._lock, with_events, without_events = postgresql.sweep_statements(tables, dialect)
            self._with_events, self._without_events = [with_events], [without_events]
        else:
            self._with_events, self._without_events = sqlite.sweep_statements(
                tables, dialect, uuid_key=entity.pk.type.python_type is uuid.UUID)

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


def _uuid7_ms_prefix() -> str:
    """The first two groups of a UUIDv7 minted now: 48 bits of Unix time in milliseconds (the prefix of
    SQLite's sweep event ids, ``sql.sqlite.uuid7``)."""
    ms = (time.time_ns() // 1_000_000) & 0xFFFF_FFFF_FFFF
    return f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-"
