"""Statements only PostgreSQL runs: the one-statement transitions (with data-modifying CTEs tied to
the compare-and-set UPDATE's row), the creation's steps, the sequence catch-up and the sweep.
Placeholders are ``:name`` (``common.render`` gives the driver's). The decided statements are in
``postgresql_decided``, the library's function and its probes in ``postgresql_functions``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Dialect, Table

from .._outbox_row import OUTBOX_ROW
from .common import (
    CHANGED_TOPIC,
    EXPIRED,
    EXPIRED_TOPIC,
    SweepTables,
    render,
    sweep_history,
    sweep_outbox_row,
    sweep_overdue,
    sweep_returning,
)
from .common import quote as _q
from .postgresql_functions import EVERYONE_FUNCTION, pg_everyone_json

if TYPE_CHECKING:
    from .._sql_text import EntitySql

__all__ = [
    "SINGLE_STATEMENT_EVENTS",
    "catch_up_sequence",
    "create_step",
    "holdings_of",
    "pg_single_statement",
    "sweep_statements",
]


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
    holds the same lock) committed while this statement waited (see ``postgresql_functions.pg_function_ddl``).
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


def holdings_of(recipients: Table) -> str:
    """The slots each of ``:transporters`` (a list) holds of a broadcast; a transporter never notified has no row."""
    return (f"SELECT transporter_id, slots_held FROM {recipients.name} WHERE kind = :kind AND entity_id = :key "
            "AND transporter_id = ANY(:transporters)")


def create_step(target: Table, columns: tuple[str, ...], name: str, dialect: Dialect) -> str:
    """A step of the one-statement creation (see ``pg_create``): ``INSERT INTO target SELECT ... FROM
    ins``, each value the typed parameter ``:{name}_{column}``, ``entity_id`` the inserted key as text."""
    preparer = dialect.identifier_preparer
    values = ["CAST(ins.id AS TEXT)" if column == "entity_id"
              else f"CAST(:{name}_{column} AS {target.c[column].type.compile(dialect)})"
              for column in columns]
    return (f"INSERT INTO {preparer.format_table(target)} ({', '.join(preparer.quote(c) for c in columns)}) "
            f"SELECT {', '.join(values)} FROM ins")


def catch_up_sequence(table: Table, dialect: Dialect) -> str:
    """Move the key's sequence of ``:table`` (``:column``) past the table's highest id, never back; no
    row when the key has no sequence."""
    preparer = dialect.identifier_preparer
    name = preparer.format_table(table)
    pk = preparer.quote(next(iter(table.primary_key.columns)).name)
    return (f"SELECT setval(CAST(seq AS regclass), GREATEST((SELECT max({pk}) FROM {name}), "
            "nextval(CAST(seq AS regclass)))) FROM (SELECT pg_get_serial_sequence(:table, :column) AS seq) s "
            "WHERE seq IS NOT NULL")


# -- the sweep (see _sql_sweep) ---------------------------------------------------------------------

_EMPTY_JSON = "CAST('{}' AS JSON)"


def sweep_statements(tables: SweepTables, dialect: Dialect) -> tuple[str, str, str]:
    """The sweep of one batch: the statement that claims the due rows, then the one that expires them
    with their history and outbox rows returning the rows (for dispatch) or a count (for the relay).

    Two statements: the first locks the due rows, the second (a new snapshot under READ COMMITTED)
    reads them and their recipients. In one statement, a notify_more committing between the
    statement's snapshot and its lock on the row would go unseen (it locks the row but changes
    nothing in it), and its transporter would never hear the expiry.
    """
    table, pk, _ = tables.names(dialect)
    returning = sweep_returning(dialect)
    everyone = pg_everyone_json(tables.recipients, "d.customer_id", "d.key")
    changed = sweep_outbox_row(tables, dialect, event_id="gen_random_uuid()::text", name=":changed_name",
                               topic=CHANGED_TOPIC, due="due",
                               recipients="json_build_array(json_build_array('customer', customer_id))")
    expired = sweep_outbox_row(tables, dialect, event_id="gen_random_uuid()::text", name=":expired_name",
                               topic=EXPIRED_TOPIC, due="due", recipients=everyone)
    lock = render(f"SELECT {pk} FROM {table} WHERE {sweep_overdue(tables)} FOR UPDATE SKIP LOCKED", dialect)
    head = (
        f"WITH due AS (SELECT {pk} AS id, CAST({pk} AS TEXT) AS key, status AS old_status, customer_id, "
        f"version + 1 AS version, slots_filled, slots_requested, expires_at FROM {table} "
        f"WHERE {pk} = ANY(:ids)), "
        f"upd AS (UPDATE {table} t SET status = {EXPIRED}, state_changed_at = :now, version = due.version "
        f"FROM due WHERE t.{pk} = due.id), "
        f"hist AS ({sweep_history(tables, dialect, _EMPTY_JSON, 'due')}), "
    )
    with_events = render(f"{head}ev1 AS ({changed}{returning}), ev2 AS ({expired}{returning}) "
                         "SELECT * FROM ev1 UNION ALL SELECT * FROM ev2", dialect)
    without_events = render(f"{head}ev1 AS ({changed}), ev2 AS ({expired}) SELECT count(*) FROM due", dialect)
    return lock, with_events, without_events
