"""Pre-rendered SQL for the hot path, with SQLAlchemy's own type processors for values.

Commands run these strings on the DBAPI cursor: no statement compilation or result machinery per
call, yet values are written exactly as SQLAlchemy would write them, so the host's ORM reads them.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import BigInteger, Column, Dialect, Integer, SmallInteger, Table
from sqlalchemy.dialects import sqlite

from ..events import Topic
from ..lifecycle import ROUTES, Trigger, allowed_from
from ..states import BroadcastStatus
from ..validation import is_entity_id
from ._outbox_row import OUTBOX_ROW

__all__ = [
    "ColumnCapacity",
    "EVERYONE_FUNCTION",
    "EVERYONE_SIGNATURE",
    "SINGLE_STATEMENT_EVENTS",
    "EntitySql",
    "LibrarySql",
    "TimeCodec",
    "dumps",
    "in_place_states",
    "pg_change_in_place",
    "pg_everyone_function_body",
    "pg_everyone_json",
    "pg_function_ddl",
    "pg_single_statement",
    "render",
]

_NAMED = re.compile(r"(?<![:\w]):(\w+)")


def render(sql: str, dialect: Dialect) -> str:
    """Turn ``:name`` placeholders into the driver's style (sqlite3 takes them as they are)."""
    if dialect.name == "sqlite":
        return sql
    return _NAMED.sub(r"%(\1)s", sql)


def _processor(column: Column[Any], dialect: Dialect, bind: bool) -> Callable[[Any], Any] | None:
    impl = column.type.dialect_impl(dialect)
    proc = impl.bind_processor(dialect) if bind else impl.result_processor(dialect, None)
    return proc


class TimeCodec:
    """Aware UTC datetimes to and from the driver's representation.

    On SQLite with SQLAlchemy's default ``DATETIME`` storage format (naive UTC text,
    ``YYYY-MM-DD HH:MM:SS.ffffff``) it formats and parses with ``datetime``'s own ISO methods,
    which write and read exactly that text several times faster than the generic processors.
    """

    def __init__(self, column: Column[Any], dialect: Dialect) -> None:
        self._bind = _processor(column, dialect, bind=True)
        self._result = _processor(column, dialect, bind=False)
        impl = column.type.dialect_impl(dialect)
        self._iso_text = (isinstance(impl, sqlite.DATETIME) and not getattr(impl, "_reg", None)
                          and impl._storage_format == sqlite.DATETIME._storage_format)
        self._last: tuple[datetime | None, Any, datetime | None, Any] = (None, None, None, None)
        """The last two values bound and their results: a command binds its time and its deadline for the
        row, the history and each event, alternately (one tuple, replaced whole, so threads never see half)."""

    def bind(self, value: datetime | None) -> Any:
        """The value to send for ``value``."""
        if value is None:
            return None
        last = self._last
        if last[0] is value:
            return last[1]
        if last[2] is value:
            return last[3]
        utc = value if value.tzinfo is timezone.utc else value.astimezone(timezone.utc)
        if self._iso_text:
            bound: Any = utc.isoformat(" ", "microseconds")[:26]  # the naive text, without "+00:00"
        else:
            bound = self._bind(utc) if self._bind else utc
        self._last = (value, bound, last[0], last[1])
        return bound

    def result(self, value: Any) -> datetime | None:
        """The aware UTC datetime for a stored value."""
        if value is None:
            return None
        if self._iso_text and isinstance(value, str):
            try:
                return datetime.fromisoformat(value + "+00:00")
            except ValueError:
                pass  # not the default text (written by hand?): the generic parser below says what it is
        parsed: datetime = self._result(value) if self._result else value
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=timezone.utc)
        return parsed.astimezone(timezone.utc)


class LibrarySql:
    """Statements on the library's own tables."""

    def __init__(self, dialect: Dialect, history: Table, recipients: Table, outbox: Table, idempotency: Table) -> None:
        json_param = "CAST(:{} AS JSON)" if dialect.name == "postgresql" else ":{}"
        self.time = TimeCodec(history.c.at, dialect)
        self.hold = render(
            f"UPDATE {recipients.name} SET slots_held = slots_held + :delta, response = :response, "
            "responded_at = :at WHERE kind = :kind AND entity_id = :key AND transporter_id = :transporter",
            dialect,
        )
        self.add_recipient = render(
            f"INSERT INTO {recipients.name} (kind, entity_id, transporter_id, notified_at, slots_held) "
            "VALUES (:kind, :key, :transporter, :at, 0) ON CONFLICT DO NOTHING",
            dialect,
        )
        self.list_recipients = render(
            f"SELECT transporter_id, slots_held FROM {recipients.name} WHERE kind = :kind AND entity_id = :key "
            "ORDER BY notified_at, transporter_id",
            dialect,
        )
        self.add_history = render(
            f"INSERT INTO {history.name} (kind, entity_id, from_status, to_status, {_q(dialect, 'trigger')}, "
            "actor, reason, meta, at, version) VALUES (:kind, :key, :from_status, :to_status, :trigger, "
            f":actor, :reason, {json_param.format('meta')}, :at, :version)",
            dialect,
        )
        self.add_key = render(
            f"INSERT INTO {idempotency.name} (key, kind, entity_id, {_q(dialect, 'trigger')}, outcome, created_at) "
            f"VALUES (:idem_key, :kind, :key, :trigger, {json_param.format('idem_outcome')}, :at)",
            dialect,
        )
        self.mark_delivered = render(
            f"UPDATE {outbox.name} SET delivered_at = :at WHERE event_id = :event_id", dialect)
        self.add_event = render(
            f"INSERT INTO {outbox.name} ({OUTBOX_ROW.insert_columns(dialect)}) "
            f"VALUES ({OUTBOX_ROW.select_list(dialect)})",
            dialect,
        )
        """One outbox row: ``OUTBOX_ROW.params(event, time.bind)`` and ``:at``."""


def pg_single_statement(entity: EntitySql, library_tables: tuple[Table, Table, Table, Table], dialect: Dialect,
                        events: int, everyone: bool = False) -> str:
    """One PostgreSQL statement that applies a transition: the compare-and-set UPDATE, the
    recipients, the holder's slots, the history row and ``events`` outbox rows (parameters
    ``:ev0_*``, ``:ev1_*``, ...: ``OUTBOX_ROW.params(event, bind, prefix)``). Each data-modifying
    CTE is tied to the UPDATE's row, so a lost race writes nothing. It returns how many rows it
    changed (1, or 0 after a lost race) and, ``everyone``, the last event's recipients.

    ``everyone``: the last event goes to the customer and every notified transporter (a terminal
    transition's, or fully_filled's); :data:`EVERYONE_FUNCTION` lists them on a snapshot taken after
    the UPDATE holds the row lock, so the list includes a transporter whose ``notify_more`` (which
    holds the same lock) committed while this statement waited (see :func:`pg_change_in_place`).
    The statement returns that list for the event sent after commit.
    """
    history, recipients, outbox, idempotency = library_tables
    rows = ""
    for i in range(events):
        # a later event takes the columns the transition's events share from the first one's parameters
        computed = {name: f":ev0_{name}" for name in OUTBOX_ROW.shared} if i else {}
        if everyone and i == events - 1:
            computed["recipients"] = f"{EVERYONE_FUNCTION}(:kind, :key, CAST(:customer AS TEXT))"
        returning = " RETURNING recipients" if everyone and i == events - 1 else ""
        rows += (f"ev{i} AS (INSERT INTO {outbox.name} ({OUTBOX_ROW.insert_columns(dialect)}) "
                 f"SELECT {OUTBOX_ROW.select_list(dialect, prefix=f'ev{i}_', sql=computed)} FROM upd{returning}), ")
    announced = f"(SELECT recipients FROM ev{events - 1})" if everyone else "NULL"
    return render(
        f"WITH upd AS ({entity.update} RETURNING 1), "
        f"rec AS (INSERT INTO {recipients.name} (kind, entity_id, transporter_id, notified_at, slots_held) "
        "SELECT :kind, :key, t, :at, 0 FROM upd, unnest(CAST(:transporters AS text[])) AS t "
        "ON CONFLICT DO NOTHING), "
        f"hold AS (UPDATE {recipients.name} SET slots_held = slots_held + :delta, response = :response, "
        "responded_at = :at WHERE kind = :kind AND entity_id = :key AND transporter_id = :transporter "
        "AND EXISTS (SELECT 1 FROM upd)), "
        f"hist AS (INSERT INTO {history.name} (kind, entity_id, from_status, to_status, {_q(dialect, 'trigger')}, "
        "actor, reason, meta, at, version) SELECT :kind, :key, :from_status, :to_status, :trigger, :actor, "
        ":reason, CAST(:meta AS JSON), :at, :new_version FROM upd), "
        f"{rows}"
        f"idem AS (INSERT INTO {idempotency.name} (key, kind, entity_id, {_q(dialect, 'trigger')}, outcome, "
        "created_at) "
        "SELECT CAST(:idem_key AS VARCHAR), :kind, :key, :trigger, CAST(:idem_outcome AS JSON), :at FROM upd "
        "WHERE CAST(:idem_key AS VARCHAR) IS NOT NULL) "
        f"SELECT count(*), {announced} FROM upd",
        dialect,
    )


SINGLE_STATEMENT_EVENTS = (1, 2)
"""The event counts the one-statement path is rendered for (a transition's state-changed event, and
start_broadcast's offer or the announcement to everyone notified); anything else takes the general path."""


def in_place_states(trigger: Trigger) -> tuple[BroadcastStatus, ...]:
    """The states from which the in-place statement applies ``trigger``: those where the table has it
    and every branch announces only what the statement writes (the state change, and the accept's
    ``fully_filled`` announcement); a re-offer, say, needs the general path."""
    written = {Topic.FULLY_FILLED} if trigger is Trigger.ACCEPT else set()
    return tuple(s for s in BroadcastStatus if (trigger, s) in ROUTES
                 and all(set(b.announces) <= written for b in ROUTES[(trigger, s)].branches))


def _state_guard(trigger: Trigger) -> str:
    """The in-place WHERE on the state, from the table: :func:`in_place_states`, and not overdue where
    the deadline can expire the broadcast (a command on an overdue one expires it: the general path)."""
    states = in_place_states(trigger)
    guard = "status IN ({})".format(", ".join(f"'{s.value}'" for s in states))
    expirable = allowed_from(Trigger.EXPIRE)
    if all(s in expirable for s in states):
        return f"{guard} AND (expires_at IS NULL OR expires_at > :at)"
    if any(s in expirable for s in states):
        raise ValueError(f"{trigger} in place from states only some of which expire: {states}")
    return guard


_IN_PLACE = {
    # variant: (state guard, fill guard, new status (from the old row), previous status (from the new
    # row, in the CTEs that read upd), holder guard); :delta is +n for accept, -n for release
    "accept": (  # partial or filling; the filling one also writes fully_filled (see pg_change_in_place)
        _state_guard(Trigger.ACCEPT),
        "slots_filled + :delta <= slots_requested",
        "CASE WHEN slots_filled + :delta = slots_requested THEN 'fully_filled' ELSE 'partially_filled' END",
        "CASE WHEN slots_filled = :delta THEN 'active' ELSE 'partially_filled' END",
        "",
    ),
    "accept_partial": (  # without the everyone function: the filling accept goes the general way
        _state_guard(Trigger.ACCEPT),
        "slots_filled + :delta < slots_requested",
        "'partially_filled'",
        "CASE WHEN slots_filled = :delta THEN 'active' ELSE 'partially_filled' END",
        "",
    ),
    "release": (  # from partially_filled only: a release from fully_filled re-offers
        _state_guard(Trigger.RELEASE),
        "slots_filled + :delta >= 0",
        "CASE WHEN slots_filled + :delta = 0 THEN 'active' ELSE 'partially_filled' END",
        "'partially_filled'",
        " AND r.slots_held + :delta >= 0",
    ),
}


def pg_change_in_place(entity: EntitySql, variant: str, library_tables: tuple[Table, Table, Table, Table],
                       dialect: Dialect) -> str:
    """One PostgreSQL statement for an accept or a release, guarded in its own WHERE (``variant``
    is a key of ``_IN_PLACE``).

    No read first and no version compare: concurrent writers queue on the row lock and each
    re-checks the guards on the row as the previous one left it, so a hot broadcast has no retry
    storm. It returns the new state (the previous status follows from it; ``:delta`` is signed: +
    for accept, - for release) and, last, the recipients of the ``fully_filled`` event when this
    accept filled the broadcast; no row means a guard failed and the caller reads the row to decide
    the refusal (see ``SqlInPlace``). The outbox rows' columns come from ``OUTBOX_ROW``: what the
    statement computes from the updated row, the rest from ``:ev_*`` / ``:fill_*`` parameters.

    The ``fully_filled`` recipients come from :data:`EVERYONE_FUNCTION`, a VOLATILE function, which
    PostgreSQL runs on a snapshot of its own taken when it is called: after the UPDATE holds the row
    lock. So it sees the recipients that a ``notify_more`` (which holds the same lock) committed
    while this statement waited, where the statement's own snapshot, taken before the wait, would not.
    """
    history, recipients, outbox, _ = library_tables
    state_guard, fill_guard, new_status, previous, holder_guard = _IN_PLACE[variant]
    name = _q(dialect, entity.table.name)
    where = f"{_q(dialect, entity.pk.name)} = :id" + (" AND kind = :kind" if "kind" in entity.table.c else "")
    computed = {  # the event columns this statement computes from the updated row; the rest are parameters
        "kind": ":kind", "entity_id": ":key", "id_field": ":id_field", "status": "status",
        "previous_status": previous, "state_changed_at": "state_changed_at", "version": "version",
        "slots_filled": "slots_filled", "slots_requested": "slots_requested", "expires_at": "expires_at",
        "trigger": ":trigger", "reason": "NULL",  # in place only without a reason (see the service)
    }
    insert = f"INSERT INTO {outbox.name} ({OUTBOX_ROW.insert_columns(dialect)}) SELECT "
    customer = "json_build_array(json_build_array('customer', customer_id))"
    changed = OUTBOX_ROW.select_list(dialect, prefix="ev_", sql={**computed, "recipients": customer})
    tail = " SELECT {}, NULL FROM upd".format(", ".join(_ROW))
    if variant == "accept":
        # Only the recipients come back, not the rows: returning a data-modifying CTE's rows cost about
        # 50 us per statement (measured); the caller builds the events and tests hold them to the rows.
        everyone = f"{EVERYONE_FUNCTION}(:kind, :key, CAST(customer_id AS TEXT))"
        filled = OUTBOX_ROW.select_list(dialect, prefix="fill_", sql={**computed, "recipients": everyone})
        tail = (f", filled AS ({insert}{filled} FROM upd WHERE status = 'fully_filled' RETURNING recipients)"
                " SELECT {}, (SELECT recipients FROM filled) FROM upd".format(", ".join(_ROW)))
    return render(
        f"WITH upd AS (UPDATE {name} SET slots_filled = slots_filled + :delta, status = {new_status}, "
        "version = version + 1, state_changed_at = GREATEST(state_changed_at, :at) "
        f"WHERE {where} AND {state_guard} AND {fill_guard} "
        f"AND EXISTS (SELECT 1 FROM {recipients.name} r WHERE r.kind = :kind AND r.entity_id = :key "
        f"AND r.transporter_id = :transporter{holder_guard}) "
        f"RETURNING {', '.join(_ROW)}), "
        f"hold AS (UPDATE {recipients.name} SET slots_held = slots_held + :delta, response = :trigger, "
        "responded_at = :at WHERE kind = :kind AND entity_id = :key AND transporter_id = :transporter "
        "AND EXISTS (SELECT 1 FROM upd)), "
        f"hist AS (INSERT INTO {history.name} (kind, entity_id, from_status, to_status, {_q(dialect, 'trigger')}, "
        f"actor, reason, meta, at, version) SELECT :kind, :key, {previous}, status, :trigger, "
        "CAST(:transporter AS VARCHAR), NULL, CAST('{}' AS JSON), state_changed_at, version FROM upd), "
        f"ev AS ({insert}{changed} FROM upd)"
        f"{tail}",
        dialect,
    )


_ROW = ("customer_id", "slots_requested", "slots_filled", "version", "state_changed_at", "created_at", "expires_at",
        "status")
"""The columns an applied in-place statement returns (then the ``fully_filled`` recipients, or NULL)."""


EVERYONE_FUNCTION = "bl_everyone_json"
"""PostgreSQL: the function ``(kind, key, customer)`` returning :func:`pg_everyone_json` on a fresh
snapshot (see :func:`pg_change_in_place`); ``schema.postgresql_functions_ddl()`` creates it."""
EVERYONE_SIGNATURE = f"{EVERYONE_FUNCTION}(text, text, text)"


def pg_everyone_json(recipients: Table, customer: str, key: str, kind: str = ":kind") -> str:
    """PostgreSQL: a terminal event's recipients as a JSON array, the customer first, then every
    notified transporter by notification time and id (``customer``, ``key`` and ``kind`` are SQL
    expressions). A NULL ``customer`` lists a re-offer's recipients instead: the notified transporters
    holding no slot."""
    return ("(SELECT json_agg(x ORDER BY o, n, tid) FROM (SELECT 0 AS o, NULL::timestamptz AS n, ''::text AS tid, "
            f"json_build_array('customer', {customer}) AS x WHERE {customer} IS NOT NULL "
            "UNION ALL SELECT 1, r.notified_at, r.transporter_id, "
            f"json_build_array('transporter', r.transporter_id) FROM {recipients.name} r "
            f"WHERE r.kind = {kind} AND r.entity_id = {key} AND ({customer} IS NOT NULL OR r.slots_held = 0)) s)")


def pg_everyone_function_body(recipients: Table) -> str:
    """The body of :data:`EVERYONE_FUNCTION`: :func:`pg_everyone_json` of its arguments (kind, key,
    customer), in PL/pgSQL: never inlined into the calling statement, so the function keeps its own
    snapshot, and its query is planned once per connection (a LANGUAGE sql function's is planned at
    every call, about 0.3 ms on each terminal transition)."""
    return f" BEGIN RETURN {pg_everyone_json(recipients, '$3', '$2', kind='$1')}; END "


def pg_function_ddl(signature: str, returns: str, body: str) -> str:
    """``CREATE OR REPLACE FUNCTION`` for a library function. VOLATILE is the point: such a
    function takes a new snapshot for each query in it, so it sees what committed while its
    caller waited for a lock (see :func:`pg_change_in_place`)."""
    return f"CREATE OR REPLACE FUNCTION {signature} RETURNS {returns} LANGUAGE plpgsql VOLATILE AS $body${body}$body$"


class EntitySql:
    """Statements on one broadcasts table (a host model's or the standalone one)."""

    def __init__(self, table: Table, dialect: Dialect, kind_column: bool, recipients: Table) -> None:
        pks = list(table.primary_key.columns)
        if len(pks) != 1:
            raise ValueError(f"table {table.name} must have a single-column primary key, has {len(pks)}")
        self.table = table
        self.pk = pks[0]
        self.bind_id = _processor(self.pk, dialect, bind=True)
        self.keys = ColumnCapacity(self.pk, dialect)
        """What the key column holds: an id it cannot hold is no broadcast's (see ``_lookup_id``)."""
        self.customers = ColumnCapacity(table.c.customer_id, dialect)
        self.time = TimeCodec(table.c.state_changed_at, dialect)
        name = _q(dialect, table.name)
        where = f"{_q(dialect, self.pk.name)} = :id" + (" AND kind = :kind" if kind_column else "")
        self.load = render(
            "SELECT status, customer_id, slots_requested, slots_filled, version, state_changed_at, created_at, "
            f"expires_at, (SELECT slots_held FROM {recipients.name} WHERE kind = :kind AND entity_id = :key "
            f"AND transporter_id = :transporter) FROM {name} WHERE {where}",
            dialect,
        )
        self.update = render(
            f"UPDATE {name} SET status = :to_status, state_changed_at = :at, version = :new_version, "
            "slots_filled = slots_filled + :delta, expires_at = :expires_at "
            f"WHERE {where} AND version = :version",
            dialect,
        )
        self.single_apply: dict[tuple[int, bool], str] = {}
        """PostgreSQL only: the one-statement form of a transition, by its number of events and whether
        the last goes to everyone notified (see pg_single_statement)."""
        self.in_place: dict[str, str] = {}
        """PostgreSQL only: guarded one-statement accept and release, by variant (see pg_change_in_place)."""
        self.load_for_update = self.load + (" FOR UPDATE" if dialect.name == "postgresql" else "")

    def holds(self, entity_id: object) -> bool:
        """Whether the key column can hold ``entity_id`` (a valid id, of its type and range)."""
        return is_entity_id(entity_id) and self.keys.holds(entity_id)

    def id_param(self, entity_id: Any) -> Any:
        """The primary-key value as the driver wants it."""
        return self.bind_id(entity_id) if self.bind_id else entity_id


class ColumnCapacity:
    """The values a column can hold on this database, for checking arguments before they are sent.

    By the column's Python type: an int within the column's range (PostgreSQL's SMALLINT, INTEGER
    and BIGINT are 16, 32 and 64 bits; every SQLite integer is 64 bits), a string within a declared
    length on PostgreSQL (SQLite ignores lengths), a UUID. A type it does not know holds anything.
    """

    def __init__(self, column: Column[Any], dialect: Dialect) -> None:
        self.column = column
        try:
            self.python_type: type | None = column.type.python_type
        except NotImplementedError:
            self.python_type = None
        bits = 64
        if dialect.name == "postgresql" and isinstance(column.type, Integer):
            bits = 64 if isinstance(column.type, BigInteger) else 16 if isinstance(column.type, SmallInteger) else 32
        self.low, self.high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        length = getattr(column.type, "length", None)
        self.length: int | None = length if dialect.name == "postgresql" and isinstance(length, int) else None

    def holds(self, value: object) -> bool:
        """Whether the column can hold ``value``."""
        expected = self.python_type
        if expected is None or expected not in (int, str, uuid.UUID):
            return True
        if expected is int:
            return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high
        if expected is str:
            return isinstance(value, str) and (self.length is None or len(value) <= self.length)
        return isinstance(value, uuid.UUID)

    def allowed(self) -> str:
        """What :meth:`holds` accepts, in words."""
        if self.python_type is int:
            return f"an int from {self.low} to {self.high}"
        if self.python_type is str:
            return "a string" + (f" of at most {self.length} characters" if self.length is not None else "")
        if self.python_type is uuid.UUID:
            return "a UUID"
        return f"a value of type {self.column.type}"

    def where(self) -> str:
        """The column, for messages: ``bookings.id (INTEGER)``."""
        return f"{self.column.table.name}.{self.column.name} ({self.column.type})"


def _q(dialect: Dialect, name: str) -> str:
    return dialect.identifier_preparer.quote(name)


_JSON = json.JSONEncoder(separators=(",", ":"), default=str)


def dumps(value: Any) -> str:
    """Compact JSON for the JSON columns."""
    return _JSON.encode(value)
