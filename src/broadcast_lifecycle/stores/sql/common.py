"""Statements both databases run (placeholders ``:name``; :func:`render` gives the driver's style).

Each is a builder taking the tables it names (and the dialect where the spelling differs: a JSON
parameter is ``CAST(... AS JSON)`` on PostgreSQL), so no table name is spelled out here.
"""

from __future__ import annotations

import re

from sqlalchemy import Dialect, Table

from .._outbox_row import OUTBOX_ROW

__all__ = [
    "add_event",
    "add_history",
    "add_key",
    "add_recipient",
    "hold",
    "list_recipients",
    "load_broadcast",
    "mark_delivered",
    "quote",
    "render",
    "update_broadcast",
]

_NAMED = re.compile(r"(?<![:\w]):(\w+)")


def render(sql: str, dialect: Dialect) -> str:
    """Turn ``:name`` placeholders into the driver's style (sqlite3 takes them as they are)."""
    if dialect.name == "sqlite":
        return sql
    return _NAMED.sub(r"%(\1)s", sql)


def quote(dialect: Dialect, name: str) -> str:
    """``name`` quoted for ``dialect`` where it must be (``"trigger"``)."""
    return dialect.identifier_preparer.quote(name)


def _json(dialect: Dialect, name: str) -> str:
    return f"CAST(:{name} AS JSON)" if dialect.name == "postgresql" else f":{name}"


def hold(recipients: Table) -> str:
    """Move a transporter's holding by ``:delta`` and record its response."""
    return (f"UPDATE {recipients.name} SET slots_held = slots_held + :delta, response = :response, "
            "responded_at = :at WHERE kind = :kind AND entity_id = :key AND transporter_id = :transporter")


def add_recipient(recipients: Table) -> str:
    """Record one transporter as notified (nothing if it was already)."""
    return (f"INSERT INTO {recipients.name} (kind, entity_id, transporter_id, notified_at, slots_held) "
            "VALUES (:kind, :key, :transporter, :at, 0) ON CONFLICT DO NOTHING")


def list_recipients(recipients: Table) -> str:
    """The notified transporters and their holdings, in notification order."""
    return (f"SELECT transporter_id, slots_held FROM {recipients.name} WHERE kind = :kind AND entity_id = :key "
            "ORDER BY notified_at, transporter_id")


def add_history(history: Table, dialect: Dialect) -> str:
    """One history row."""
    return (f"INSERT INTO {history.name} (kind, entity_id, from_status, to_status, {quote(dialect, 'trigger')}, "
            "actor, reason, meta, at, version) VALUES (:kind, :key, :from_status, :to_status, :trigger, "
            f":actor, :reason, {_json(dialect, 'meta')}, :at, :version)")


def add_key(idempotency: Table, dialect: Dialect) -> str:
    """One idempotency key and its outcome."""
    return (f"INSERT INTO {idempotency.name} (key, kind, entity_id, {quote(dialect, 'trigger')}, outcome, "
            f"created_at) VALUES (:idem_key, :kind, :key, :trigger, {_json(dialect, 'idem_outcome')}, :at)")


def mark_delivered(outbox: Table) -> str:
    """Settle one outbox event as delivered."""
    return f"UPDATE {outbox.name} SET delivered_at = :at WHERE event_id = :event_id"


def add_event(outbox: Table, dialect: Dialect) -> str:
    """One outbox row: ``OUTBOX_ROW.params(event, time.bind)`` and ``:at``."""
    return (f"INSERT INTO {outbox.name} ({OUTBOX_ROW.insert_columns(dialect)}) "
            f"VALUES ({OUTBOX_ROW.select_list(dialect)})")


def _row_filter(table: Table, dialect: Dialect, kind_column: bool) -> str:
    pk = next(iter(table.primary_key.columns))
    return f"{quote(dialect, pk.name)} = :id" + (" AND kind = :kind" if kind_column else "")


def load_broadcast(table: Table, dialect: Dialect, kind_column: bool, recipients: Table) -> str:
    """A broadcast's row and ``:transporter``'s holding (``EntitySql.load``'s column order)."""
    return ("SELECT status, customer_id, slots_requested, slots_filled, version, state_changed_at, created_at, "
            f"expires_at, (SELECT slots_held FROM {recipients.name} WHERE kind = :kind AND entity_id = :key "
            f"AND transporter_id = :transporter) FROM {quote(dialect, table.name)} "
            f"WHERE {_row_filter(table, dialect, kind_column)}")


def update_broadcast(table: Table, dialect: Dialect, kind_column: bool) -> str:
    """The compare-and-set UPDATE of a decided transition (by ``:version``)."""
    return (f"UPDATE {quote(dialect, table.name)} SET status = :to_status, state_changed_at = :at, "
            "version = :new_version, slots_filled = slots_filled + :delta, expires_at = :expires_at "
            f"WHERE {_row_filter(table, dialect, kind_column)} AND version = :version")
