"""Statements both databases run (placeholders ``:name``; :func:`render` gives the driver's style).

Each is a builder taking the tables it names (and the dialect where the spelling differs: a JSON
parameter is ``CAST(... AS JSON)`` on PostgreSQL), so no table name is spelled out here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Dialect, Table

from ...expiry import EXPIRABLE, EXPIRY_TOPICS
from ...lifecycle import Trigger
from ...states import CLOSED, TERMINAL, BroadcastStatus
from .._outbox_row import OUTBOX_ROW

__all__ = [
    "EXPIRABLE_SQL",
    "EXPIRABLE_SQL_IN_LIST",
    "STATUS_CHECK",
    "TERMINAL_HISTORY_SQL",
    "SweepTables",
    "add_events",
    "add_history",
    "add_key",
    "add_recipient",
    "due_index_ddl",
    "hold",
    "insert_broadcast",
    "list_recipients",
    "load_broadcast",
    "load_broadcast_row",
    "mark_delivered",
    "open_customer_index_ddl",
    "open_customer_index_name",
    "quote",
    "recall_key",
    "render",
    "sweep_history",
    "sweep_outbox_row",
    "sweep_overdue",
    "sweep_returning",
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


def table_ref(dialect: Dialect, table: Table) -> str:
    """``table`` as a statement names it: quoted where it must be, and with its schema if it has one."""
    return dialect.identifier_preparer.format_table(table)


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


def recall_key(idempotency: Table, dialect: Dialect) -> str:
    """The command and outcome recorded under ``:idem_key``."""
    return (f"SELECT kind, entity_id, {quote(dialect, 'trigger')}, outcome FROM {idempotency.name} "
            "WHERE key = :idem_key")


def mark_delivered(outbox: Table) -> str:
    """Settle one outbox event as delivered."""
    return f"UPDATE {outbox.name} SET delivered_at = :at WHERE event_id = :event_id"


def add_events(outbox: Table, dialect: Dialect) -> str:
    """Outbox rows with positional values in the driver's style, for ``executemany``: the rows of
    ``OUTBOX_ROW.rows(events, time.bind, at)``."""
    return (f"INSERT INTO {outbox.name} ({OUTBOX_ROW.insert_columns(dialect)}) "
            f"VALUES ({OUTBOX_ROW.insert_values(dialect)})")


def insert_broadcast(table: Table, names: tuple[str, ...], dialect: Dialect) -> str:
    """``INSERT INTO <table> (names) VALUES (...) ON CONFLICT (<key>) DO NOTHING RETURNING <key>`` with
    positional placeholders in the driver's style (``?`` for sqlite3, ``%s`` for psycopg)."""
    preparer = dialect.identifier_preparer
    mark = "?" if dialect.name == "sqlite" else "%s"
    key = preparer.quote(next(iter(table.primary_key.columns)).name)
    return (f"INSERT INTO {preparer.format_table(table)} ({', '.join(preparer.quote(n) for n in names)}) "
            f"VALUES ({', '.join(mark for _ in names)}) ON CONFLICT ({key}) DO NOTHING RETURNING {key}")


def _row_filter(table: Table, dialect: Dialect, kind_column: bool) -> str:
    pk = next(iter(table.primary_key.columns))
    return f"{quote(dialect, pk.name)} = :id" + (" AND kind = :kind" if kind_column else "")


_ROW_COLUMNS = "status, customer_id, slots_requested, slots_filled, version, state_changed_at, created_at, expires_at"


def load_broadcast(table: Table, dialect: Dialect, kind_column: bool, recipients: Table) -> str:
    """A broadcast's row and ``:transporter``'s holding (``EntitySql.load``'s column order)."""
    return (f"SELECT {_ROW_COLUMNS}, (SELECT slots_held FROM {recipients.name} WHERE kind = :kind "
            f"AND entity_id = :key AND transporter_id = :transporter) FROM {table_ref(dialect, table)} "
            f"WHERE {_row_filter(table, dialect, kind_column)}")


def load_broadcast_row(table: Table, dialect: Dialect, kind_column: bool) -> str:
    """:func:`load_broadcast` without a transporter's holding (NULL in its place), for a command by no
    transporter."""
    return (f"SELECT {_ROW_COLUMNS}, NULL FROM {table_ref(dialect, table)} "
            f"WHERE {_row_filter(table, dialect, kind_column)}")


def update_broadcast(table: Table, dialect: Dialect, kind_column: bool) -> str:
    """The compare-and-set UPDATE of a decided transition (by ``:version``)."""
    return (f"UPDATE {table_ref(dialect, table)} SET status = :to_status, state_changed_at = :at, "
            "version = :new_version, slots_filled = slots_filled + :delta, expires_at = :expires_at "
            f"WHERE {_row_filter(table, dialect, kind_column)} AND version = :version")


# -- DDL: the status CHECK and the partial indexes (``schema`` re-exports them) -----------------------

def _status_is_one_of(states: list[str], column: str = "status") -> str:
    """SQL for "status is one of ``states``", as equalities joined by OR rather than ``status IN (...)``.

    SQLite evaluates a CHECK constraint, and a partial index's WHERE, for every row it writes, and
    there it builds an IN list of more than two values into a lookup table anew for each row: about
    1 us per list per row (an UPDATE of the status evaluates the due index's WHERE twice, for the old
    row and the new). Equalities cost next to nothing. PostgreSQL does not mind the spelling.
    """
    return "({})".format(" OR ".join(f"{column} = '{state}'" for state in states))


STATUS_CHECK = _status_is_one_of([s.value for s in BroadcastStatus])
"""The CHECK on every status column; adding a state means replacing this constraint (additive)."""

TERMINAL_HISTORY_SQL = _status_is_one_of(sorted(s.value for s in TERMINAL), "to_status")
"""History rows of terminal transitions (the last row of a finished broadcast): the filter of
``ix_bl_history_terminal`` and of the history pruning that reads it."""

_EXPIRABLE = sorted(EXPIRABLE)
EXPIRABLE_SQL = _status_is_one_of([s.value for s in _EXPIRABLE])
"""The states a deadline can expire, as SQL: the sweeper's filter and its partial index share it."""

EXPIRABLE_SQL_IN_LIST = "status IN ({})".format(", ".join(f"'{s.value}'" for s in _EXPIRABLE))
"""The same filter as due indexes created before :data:`EXPIRABLE_SQL` spelled it; the sweeper's
query carries both, since SQLite uses a partial index only for a query that repeats its WHERE."""


def due_index_ddl(table: str, kind_column: bool = False, on: str | None = None) -> str:
    """DDL for the partial index the sweeper reads: overdue candidates only, by deadline (``on``: the
    table as the statement names it, if not ``table``: with its schema, say)."""
    columns = "kind, expires_at" if kind_column else "expires_at"
    return f"CREATE INDEX IF NOT EXISTS ix_{table}_due ON {on or table} ({columns}) WHERE {EXPIRABLE_SQL}"


def open_customer_index_name(table: str, kind: str) -> str:
    """The name of ``kind``'s one-open-broadcast-per-customer index on ``table``."""
    return f"uq_{table}_{kind}_open_customer"


def open_customer_index_ddl(table: str, kind: str, scoped: bool = False, on: str | None = None) -> str:
    """DDL for the one-open-broadcast-per-customer policy: a partial unique index over the states
    that are not closed yet (``scoped`` adds ``kind = ...`` for the shared standalone table; ``on`` as
    for :func:`due_index_ddl`)."""
    states = ", ".join(f"'{s.value}'" for s in BroadcastStatus if s not in CLOSED)
    scope = f" AND kind = '{kind}'" if scoped else ""
    return (f"CREATE UNIQUE INDEX IF NOT EXISTS {open_customer_index_name(table, kind)} "
            f"ON {on or table} (customer_id) WHERE status IN ({states}){scope}")


# -- the sweep (see _sql_sweep): what an expiry writes, from the core's ``Expiry`` ------------------

EXPIRED, EXPIRE = f"'{BroadcastStatus.EXPIRED.value}'", f"'{Trigger.EXPIRE.value}'"
CHANGED_TOPIC, EXPIRED_TOPIC = (f"'{topic.value}'" for topic in EXPIRY_TOPICS)


@dataclass(frozen=True)
class SweepTables:
    """The tables one sweep writes: a broadcasts table (``kind_column``: the standalone one) and the
    library's history, recipients and outbox."""

    table: Table
    kind_column: bool
    history: Table
    recipients: Table
    outbox: Table

    def names(self, dialect: Dialect) -> tuple[str, str, str]:
        """The broadcasts table, its key and ``trigger``, quoted."""
        pk = next(iter(self.table.primary_key.columns))
        return table_ref(dialect, self.table), quote(dialect, pk.name), quote(dialect, "trigger")


def sweep_overdue(tables: SweepTables) -> str:
    """The overdue rows of ``:kind``, oldest deadline first, at most ``:limit`` (both spellings of the
    expirable states: SQLite uses the due index only for a query that repeats its WHERE)."""
    kind_filter = " AND kind = :kind" if tables.kind_column else ""
    return (f"{EXPIRABLE_SQL} AND {EXPIRABLE_SQL_IN_LIST}{kind_filter} AND expires_at <= :now "
            "AND state_changed_at <= :now ORDER BY expires_at LIMIT :limit")


def sweep_history(tables: SweepTables, dialect: Dialect, meta: str, due: str) -> str:
    """The history row of each broadcast in ``due`` (with ``meta`` as its metadata)."""
    trigger = quote(dialect, "trigger")
    return (f"INSERT INTO {tables.history.name} (kind, entity_id, from_status, to_status, {trigger}, actor, "
            f"reason, meta, at, version) SELECT :kind, key, old_status, {EXPIRED}, {EXPIRE}, :actor, "
            f":reason, {meta}, :now, version FROM {due}")


def sweep_outbox_row(tables: SweepTables, dialect: Dialect, event_id: str, name: str, topic: str, due: str,
                     recipients: str) -> str:
    """One outbox row per broadcast in ``due`` (alias ``d``), every column computed here."""
    values = OUTBOX_ROW.select_list(dialect, prefix=None, written_at=":now", sql={
        "event_id": event_id, "name": name, "topic": topic, "kind": ":kind", "id_field": ":id_field",
        "entity_id": "key", "status": EXPIRED, "previous_status": "old_status",
        "state_changed_at": ":now", "version": "version", "slots_filled": "slots_filled",
        "slots_requested": "slots_requested", "expires_at": "expires_at",
        "trigger": EXPIRE, "reason": ":reason", "recipients": recipients,
    })
    return f"INSERT INTO {tables.outbox.name} ({OUTBOX_ROW.insert_columns(dialect)}) SELECT {values} FROM {due} d"


def sweep_returning(dialect: Dialect) -> str:
    """What a sweep's outbox INSERT returns for the events to be rebuilt."""
    return f" RETURNING {OUTBOX_ROW.returning(dialect)}"

