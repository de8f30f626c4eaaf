"""Statements only PostgreSQL runs: the one-statement transitions (with data-modifying CTEs tied to
the compare-and-set UPDATE's row), accept and release in place, the everyone function and the
probes the store makes about it. Placeholders are ``:name`` (``common.render`` gives the driver's).
"""

from __future__ import annotations

from collections.abc import Mapping
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
)
from .common import quote as _q

if TYPE_CHECKING:
    from .._sql_text import EntitySql
    from .decided import DecidedLayout

__all__ = [
    "EVERYONE_FUNCTION",
    "EVERYONE_SIGNATURE",
    "GUARD_SQL",
    "OUTBOX_DELIVERED_INDEX",
    "SINGLE_STATEMENT_EVENTS",
    "catch_up_sequence",
    "create_step",
    "decided_statement",
    "drop_function",
    "function_is_current",
    "functions_lock",
    "has_function",
    "index_exists",
    "outbox_delivered_index_ddl",
    "in_place_states",
    "pg_change_in_place",
    "pg_everyone_function_body",
    "pg_everyone_json",
    "pg_function_ddl",
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


def function_is_current() -> str:
    """Whether the function ``:signature`` exists with body ``:body`` and is VOLATILE."""
    return "SELECT prosrc = :body AND provolatile = 'v' FROM pg_proc WHERE oid = to_regprocedure(:signature)"


def functions_lock() -> str:
    """Take the transaction-scoped lock that makes one ``create_all`` at a time create the functions."""
    return "SELECT pg_advisory_xact_lock(hashtext('broadcast_lifecycle functions'))"


def drop_function(signature: str) -> str:
    """Drop the function ``signature`` if it exists."""
    return f"DROP FUNCTION IF EXISTS {signature}"


OUTBOX_DELIVERED_INDEX = "ix_bl_outbox_delivered"


def outbox_delivered_index_ddl(outbox: Table) -> str:
    """Delivered outbox rows by delivery time, for pruning."""
    return (f"CREATE INDEX IF NOT EXISTS {OUTBOX_DELIVERED_INDEX} ON {outbox.name} (delivered_at) "
            "WHERE delivered_at IS NOT NULL")


def index_exists(name: str) -> str:
    """The index ``name``'s oid, or NULL when there is none."""
    return f"SELECT to_regclass('{name}')"


def has_function(signature: str) -> str:
    """Whether the function ``signature`` exists (one boolean)."""
    return f"SELECT to_regprocedure('{signature}') IS NOT NULL"


# -- transitions decided by their own statement (see .decided) --------------------------------------

_DEADLINE = ("COALESCE(CAST(:deadline AS TIMESTAMPTZ), o.expires_at, CAST(:default_deadline AS TIMESTAMPTZ))")
"""The command's deadline as ``service._deadline`` picks it: the given one (deadline=, or now + ttl), else
the broadcast's, else now + the kind's default ttl (``o`` is the row before the command)."""

GUARD_SQL: Mapping[str, str] = {
    "deadline_in_future": f"{_DEADLINE} > :at",
    "deadline_later": f"o.expires_at IS NOT NULL AND {_DEADLINE} > o.expires_at",
    "trip_fill_policy": (f"(o.status <> '{BroadcastStatus.PARTIALLY_FILLED.value}' "
                         "OR CAST(:allow_partial_trip AS BOOLEAN))"),
    "deadline_passed": "o.expires_at IS NOT NULL AND :at >= o.expires_at",
}
"""The built-in guards (``guards.GUARDS``) a statement can check on the locked row, as SQL true when
the guard allows; ``tests/test_decided.py`` holds each to its Python guard."""


def _states(states: tuple[BroadcastStatus, ...] | list[BroadcastStatus]) -> str:
    return ", ".join(f"'{s.value}'" for s in states)


def _source_clause(layout: DecidedLayout, state: BroadcastStatus, guards: tuple[str, ...]) -> str:
    """The WHERE of one from-state: the state, not overdue where a deadline can expire it (a command on
    an overdue broadcast expires it instead: the caller's read decides that), and the state's guards."""
    parts = [f"o.status = '{state.value}'"]
    if layout.trigger is not Trigger.EXPIRE and state in allowed_from(Trigger.EXPIRE):
        parts.append("(o.expires_at IS NULL OR o.expires_at > :at)")
    parts += [GUARD_SQL[guard] for guard in guards]
    return "(" + " AND ".join(parts) + ")"


_OLD = ("status", "customer_id", "slots_requested", "slots_filled", "version", "state_changed_at", "created_at",
        "expires_at")
"""The row before the command, in ``EntitySql.load``'s order: what the statement returns first."""


def _utc_text(column: str) -> str:
    """``column`` (a timestamptz) as ``BroadcastSnapshot.to_json`` writes a time: ISO 8601 in UTC with
    microseconds (which ``datetime.fromisoformat`` reads on every supported Python)."""
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')"""


def _outcome_json() -> str:
    """``IdempotentOutcome.to_json()`` of the updated row (in ``upd``), the command's actor and
    fingerprint; ``tests/test_decided.py`` holds the two to the same outcome."""
    snapshot = ("json_build_object('customerId', customer_id, 'status', status, 'slotsRequested', slots_requested, "
                f"'slotsFilled', slots_filled, 'version', version, 'stateChangedAt', {_utc_text('state_changed_at')}, "
                f"'createdAt', {_utc_text('o_created_at')}, 'expiresAt', {_utc_text('expires_at')})")
    return (f"json_build_object('snapshot', {snapshot}, 'actor', CAST(:actor AS TEXT), "
            "'fingerprint', CAST(:fingerprint AS TEXT))")


def decided_statement(layout: DecidedLayout, table: Table, kind_column: bool, library_tables: tuple[Table, ...],
                      dialect: Dialect, everyone_function: str, offers: bool, keyed: bool = False) -> str:
    """The statement of ``layout`` on ``table`` (``:name`` placeholders). ``offers``: the command
    records new recipients (``:transporters``) and offers them the broadcast. ``keyed``: it records
    ``:idem_key`` with the command's outcome (a key already recorded fails the whole statement).

    Parameters: ``:id``, ``:kind``, ``:key``, ``:at``, ``:deadline``, ``:default_deadline``,
    ``:allow_partial_trip``, ``:trigger``, ``:actor``, ``:reason``, ``:meta``, ``:id_field``, and per
    outbox row ``:{slot}_event_id`` and ``:{slot}_name`` (slots ``changed``, ``offer`` and one per
    announced topic, named after it). It returns the row before the command (see :data:`_OLD`), the
    new state, then the recipients of each announced topic's row in ``layout.announced`` order (NULL where that row
    was not written).

    The row is locked by the ``FOR UPDATE`` subquery before any guard is checked, so the guards,
    the old values returned and the update all see the newest committed row; the everyone function
    (VOLATILE: a snapshot of its own) then sees every recipient committed while the statement waited.
    """
    history, recipients, outbox, idempotency = library_tables
    quote = dialect.identifier_preparer.quote
    name, pk = quote(table.name), quote(next(iter(table.primary_key.columns)).name)
    where = f"{pk} = :id" + (" AND kind = :kind" if kind_column else "")
    dests = {dest for dest, _ in layout.sources.values()}
    if len(dests) == 1 and all(dest is not source for source, (dest, _) in layout.sources.items()):
        new_status = f"'{dests.pop().value}'"
    else:
        new_status = "CASE o.status {} END".format(" ".join(f"WHEN '{s.value}' THEN '{d.value}'"
                                                            for s, (d, _) in layout.sources.items()))
    expires = _DEADLINE if layout.sets_deadline else "o.expires_at"
    allowed = " OR ".join(_source_clause(layout, state, guards) for state, (_, guards) in layout.sources.items())
    old = ", ".join(f"o.{column} AS o_{column}" for column in _OLD)
    upd = (f"UPDATE {name} t SET status = {new_status}, version = o.version + 1, "
           f"state_changed_at = GREATEST(o.state_changed_at, :at), expires_at = {expires} "
           f"FROM (SELECT {pk} AS pk, {', '.join(_OLD)} FROM {name} WHERE {where} FOR UPDATE) o "
           f"WHERE t.{pk} = o.pk AND ({allowed}) "
           f"RETURNING {old}, t.status, t.version, t.state_changed_at, t.slots_filled, t.slots_requested, "
           "t.expires_at, t.customer_id")
    computed = {"kind": ":kind", "entity_id": ":key", "id_field": ":id_field", "status": "status",
                "previous_status": "o_status", "state_changed_at": "state_changed_at", "version": "version",
                "slots_filled": "slots_filled", "slots_requested": "slots_requested", "expires_at": "expires_at",
                "trigger": ":trigger", "reason": ":reason"}
    insert = f"INSERT INTO {outbox.name} ({OUTBOX_ROW.insert_columns(dialect)}) SELECT "

    def row(slot: str, topic: Topic, recipients_sql: str, condition: str = "", returning: bool = False) -> str:
        values = OUTBOX_ROW.select_list(dialect, prefix=f"{slot}_", sql={
            **computed, "topic": f"'{topic.value}'", "recipients": recipients_sql}, written_at="state_changed_at")
        tail = " RETURNING recipients" if returning else ""
        return f"{slot} AS ({insert}{values} FROM upd{condition}{tail})"

    steps = [f"upd AS ({upd})",
             f"hist AS (INSERT INTO {history.name} (kind, entity_id, from_status, to_status, {quote('trigger')}, "
             "actor, reason, meta, at, version) SELECT :kind, :key, o_status, status, :trigger, "
             "CAST(:actor AS VARCHAR), :reason, CAST(:meta AS JSON), state_changed_at, version FROM upd)",
             row("changed", Topic.STATE_CHANGED, "json_build_array(json_build_array('customer', customer_id))")]
    announced = []
    for topic, states in layout.announced.items():
        slot = topic.value
        condition = f" WHERE o_status IN ({_states(states)})"
        if topic is Topic.OFFERED:  # a re-offer, to the notified holding no slot; none once the deadline passed
            listed = f"{everyone_function}(:kind, :key, NULL)"
            condition += " AND (expires_at IS NULL OR expires_at > :at)"
        else:
            listed = f"{everyone_function}(:kind, :key, CAST(customer_id AS TEXT))"
        steps.append(row(slot, topic, listed, condition, returning=True))
        announced.append(f"(SELECT recipients FROM {slot})")
    if offers:
        steps.append(f"rec AS (INSERT INTO {recipients.name} (kind, entity_id, transporter_id, notified_at, "
                     "slots_held) SELECT :kind, :key, r, state_changed_at, 0 FROM upd, "
                     "unnest(CAST(:transporters AS text[])) AS r ON CONFLICT DO NOTHING)")
        steps.append(row("offer", Topic.OFFERED, "CAST(:offer_recipients AS JSON)"))
    if keyed:
        steps.append(f"idem AS (INSERT INTO {idempotency.name} (key, kind, entity_id, {quote('trigger')}, outcome, "
                     f"created_at) SELECT :idem_key, :kind, :key, :trigger, {_outcome_json()}, :at FROM upd)")
    columns = ", ".join([*(f"o_{column}" for column in _OLD), "status", *announced])
    return f"WITH {', '.join(steps)} SELECT {columns} FROM upd"


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
