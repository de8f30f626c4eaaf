"""Statements only PostgreSQL runs: the one-statement transitions (with data-modifying CTEs tied to
the compare-and-set UPDATE's row), accept and release in place, the creation's steps, the sequence
catch-up and the sweep. Placeholders are ``:name`` (``common.render`` gives the driver's). The
decided statements are in ``postgresql_decided``, the library's function and its probes in
``postgresql_functions``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Dialect, Table

from ...events import Topic
from ...lifecycle import ROUTES, Trigger, allowed_from
from ...states import BroadcastStatus
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
    table_ref,
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
    "in_place_states",
    "pg_change_in_place",
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
    name = table_ref(dialect, entity.table)
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
