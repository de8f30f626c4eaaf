"""The SQL store's tables, one part of it: which table and statements serve each kind, and what the
rows read from them mean (snapshots, states, outbox events, times)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect

from .._quick import quick_constructor
from ..errors import BroadcastNotFound, CorruptState, InvalidArgument
from ..events import BroadcastEvent
from ..records import BroadcastSnapshot, EntityId
from ..states import BroadcastStatus
from ._outbox_row import OUTBOX_ROW
from ._sql_text import EntitySql, LibrarySql
from .base import Loaded
from .schema import broadcasts_table, history_table, idempotency_table, outbox_table, recipients_table

__all__ = ["StoreTables", "table_of", "utc"]

_STATUSES = [s.value for s in BroadcastStatus]
_STATUS_OF = {s.value: s for s in BroadcastStatus}
_new_snapshot = quick_constructor(BroadcastSnapshot)
_new_loaded = quick_constructor(Loaded)


class StoreTables:
    """The library's tables and, per kind, the broadcasts table that holds it: the host's model given
    in ``models`` or the standalone ``bl_broadcasts``."""

    def __init__(self, dialect: Dialect, models: Mapping[str, Any]) -> None:
        self.lib = LibrarySql(dialect, history_table, recipients_table, outbox_table, idempotency_table)
        """The statements on the library's own tables (history, recipients, outbox, keys)."""
        self.standalone = EntitySql(broadcasts_table, dialect, kind_column=True, recipients=recipients_table)
        """The statements on ``bl_broadcasts``, for the kinds not on a host model."""
        self.hosts = {kind: EntitySql(table_of(model), dialect, kind_column=False, recipients=recipients_table)
                      for kind, model in models.items()}
        """The statements on each host model's table, by kind."""

    def entity(self, kind: str) -> EntitySql:
        """The statements on ``kind``'s broadcasts table."""
        return self.hosts.get(kind, self.standalone)

    def all(self) -> tuple[EntitySql, ...]:
        """The statements on every broadcasts table the store writes."""
        return (self.standalone, *self.hosts.values())

    def by_name(self) -> dict[str, Table]:
        """The broadcasts tables the store writes, by name."""
        return {sql.table.name: sql.table for sql in self.all()}

    def lookup_id(self, sql: EntitySql, kind: str, entity_id: EntityId) -> Any:
        """``entity_id`` as the driver takes it for ``sql``'s key; ``BroadcastNotFound`` for an id that
        column cannot hold (another type, out of range), which no row can have."""
        if not sql.holds(entity_id):
            raise BroadcastNotFound(kind, entity_id)
        return sql.id_param(entity_id)

    @staticmethod
    def status(table: Table, entity_id: EntityId, value: Any) -> BroadcastStatus:
        """The state stored in ``table``; ``CorruptState`` if it is not one."""
        status = _STATUS_OF.get(value)
        if status is None:
            raise CorruptState(table.name, entity_id, value, _STATUSES)
        return status

    def snapshot(self, sql: EntitySql, kind: str, entity_id: EntityId, row: Sequence[Any]) -> BroadcastSnapshot:
        """The snapshot in a row read by ``EntitySql.load``."""
        time = sql.time
        return _new_snapshot(
            kind=kind, id=entity_id, customer_id=row[1], status=self.status(sql.table, entity_id, row[0]),
            slots_requested=row[2], slots_filled=row[3], version=row[4],
            state_changed_at=time.result(row[5]),  # type: ignore[arg-type]
            created_at=time.result(row[6]),  # type: ignore[arg-type]
            expires_at=time.result(row[7]),
        )

    def read_loaded(self, cur: Any, sql: EntitySql, kind: str, entity_id: EntityId, transporter_id: str | None,
                    statement: str | None = None) -> Loaded:
        """Run ``sql.load`` (or ``statement``, a variant of it such as ``load_for_update``) on ``cur``."""
        cur.execute(statement or sql.load, {"id": self.lookup_id(sql, kind, entity_id), "kind": kind,
                                            "key": str(entity_id), "transporter": transporter_id or ""})
        return self.loaded(sql, kind, entity_id, cur.fetchone())

    def loaded(self, sql: EntitySql, kind: str, entity_id: EntityId, row: Sequence[Any] | None) -> Loaded:
        """The broadcast and the transporter's holding in a row read by ``EntitySql.load``;
        ``BroadcastNotFound`` when there was no row."""
        if row is None:
            raise BroadcastNotFound(kind, entity_id)
        return _new_loaded(self.snapshot(sql, kind, entity_id, row), row[8])

    def rebuild(self, row: Mapping[str, Any]) -> BroadcastEvent:
        """The event in an outbox row (as Core or the raw driver returned it), keyed by column name."""
        return OUTBOX_ROW.rebuild(row, self._entity_id, self._time)

    def rebuild_tuple(self, values: Sequence[Any]) -> BroadcastEvent:
        """The event in a row of ``OUTBOX_ROW.returning`` columns."""
        return OUTBOX_ROW.rebuild_tuple(values, self._entity_id, self._time)

    def _entity_id(self, kind: str, key: str) -> EntityId:
        id_type = self.entity(kind).pk.type.python_type
        return key if id_type is str else id_type(key)

    def _time(self, value: Any) -> datetime | None:
        return utc(value) if isinstance(value, datetime) else self.lib.time.result(value)


def table_of(model: Any) -> Table:
    """The table of a host model given to the store (a mapped class or a ``Table``)."""
    table = model if isinstance(model, Table) else getattr(model, "__table__", None)
    if not isinstance(table, Table):
        raise InvalidArgument(f"{model!r} is neither a mapped class nor a Table")
    return table


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive one (as SQLite returns it) is taken as UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
