"""PostgreSQL: the statement of a transition decided by its own statement (its layout, generated from
the transition table, is ``decided.DecidedLayout``), and the SQL of the guards and branches it checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlalchemy import Dialect, Table

from ...events import Topic
from ...lifecycle import Branch, Trigger, allowed_from
from ...states import BroadcastStatus
from .._outbox_row import OUTBOX_ROW
from .common import table_ref

if TYPE_CHECKING:
    from .decided import DecidedLayout

__all__ = ["BRANCH_SQL", "GUARD_SQL", "HOLDER_GUARDS", "decided_statement"]

_DEADLINE = ("COALESCE(CAST(:deadline AS TIMESTAMPTZ), o.expires_at, CAST(:default_deadline AS TIMESTAMPTZ))")
"""The command's deadline as ``service._deadline`` picks it: the given one (deadline=, or now + ttl), else
the broadcast's, else now + the kind's default ttl (``o`` is the row before the command)."""

_SLOTS = "CAST(:slots AS INTEGER)"
"""The command's slots (an accept's or a release's; 1 for the other triggers, which move no fill)."""

GUARD_SQL: Mapping[str, str] = {
    "deadline_in_future": f"{_DEADLINE} > :at",
    "deadline_later": f"o.expires_at IS NOT NULL AND {_DEADLINE} > o.expires_at",
    "transporter_notified": "h.slots_held IS NOT NULL",
    "slots_available": f"o.slots_requested - o.slots_filled >= {_SLOTS}",  # (a sum could pass INTEGER's range)
    "holds_slots": f"h.slots_held >= {_SLOTS}",
    "trip_fill_policy": (f"(o.status <> '{BroadcastStatus.PARTIALLY_FILLED.value}' "
                         "OR CAST(:allow_partial_trip AS BOOLEAN))"),
    "deadline_passed": "o.expires_at IS NOT NULL AND :at >= o.expires_at",
}
"""The built-in guards (``guards.GUARDS``) a statement can check on the locked row (``o``) and the
command's transporter's locked recipient row (``h``, no row: never notified), as SQL true when the
guard allows; ``tests/test_decided.py`` holds each to its Python guard."""

HOLDER_GUARDS = frozenset({"transporter_notified", "holds_slots"})
"""The guards of :data:`GUARD_SQL` that read the transporter's recipient row (``h``)."""

_HOLDING_VALUE_GUARDS = frozenset({"holds_slots"})
"""The guards that read the holding's value, which a concurrent command may have moved while the statement
waited for the broadcast's lock: the statement locks the recipient row for them, so they see the newest. Whether
the row exists is read from the statement's snapshot, taken before that wait: a transporter notified meanwhile
is refused by the statement, then decided on the row read again, and applied on the general path."""

BRANCH_SQL: Mapping[str, str] = {
    "fills_all": f"o.slots_requested - o.slots_filled = {_SLOTS}",
    "empties": f"o.slots_filled - {_SLOTS} = 0",
}
"""The branch conditions (``guards.BRANCH_TESTS``) as SQL on the locked row; ``tests/test_decided.py``
holds each to its Python test."""


def _edges(layout: DecidedLayout, edges: tuple[tuple[BroadcastStatus, BroadcastStatus], ...]) -> str:
    """SQL true on the updated row (``upd``) when the transition took one of ``edges`` (from-state, new
    state): as short as the layout allows (every edge from some states, or into some states)."""
    every = {(state, branch.dest) for state, route in layout.sources.items() for branch in route.branches}
    taken = set(edges)
    if taken == every:
        return "true"
    sources, dests = {s for s, _ in taken}, {d for _, d in taken}
    if taken == {e for e in every if e[0] in sources}:
        return f"o_status IN ({_states(sources)})"
    if taken == {e for e in every if e[1] in dests}:
        return f"status IN ({_states(dests)})"
    return " OR ".join(f"(o_status = '{source.value}' AND status = '{dest.value}')" for source, dest in edges)


def _states(states: set[BroadcastStatus]) -> str:
    return ", ".join(f"'{s.value}'" for s in sorted(states, key=list(BroadcastStatus).index))


def _allowed(layout: DecidedLayout) -> str:
    """The WHERE on the locked rows: per from-state, the state, not overdue where a deadline can expire it
    (a command on an overdue broadcast expires it instead: the caller's read decides that), and the
    state's guards; states that share all three in one clause."""
    clauses: dict[tuple[bool, tuple[str, ...]], list[BroadcastStatus]] = {}
    for state, route in layout.sources.items():
        expirable = layout.trigger is not Trigger.EXPIRE and state in allowed_from(Trigger.EXPIRE)
        clauses.setdefault((expirable, route.guards), []).append(state)
    parts = []
    for (expirable, guards), states in clauses.items():
        checks = [f"o.status IN ({_states(set(states))})"]
        if expirable:
            checks.append("(o.expires_at IS NULL OR o.expires_at > :at)")
        checks += [GUARD_SQL[guard] for guard in guards]
        parts.append("(" + " AND ".join(checks) + ")")
    return " OR ".join(parts)


def _branch(branch: Branch) -> str:
    """SQL true when the route takes ``branch`` (the table's first branch that holds wins)."""
    assert branch.name is not None
    return BRANCH_SQL[branch.name] if branch.expected else f"NOT ({BRANCH_SQL[branch.name]})"


def _new_status(layout: DecidedLayout) -> str:
    """The new state: the destination of each from-state's branch taken (a constant when there is one)."""
    routes = layout.sources.items()
    dests = {branch.dest for _, route in routes for branch in route.branches}
    if len(dests) == 1 and all(dest is not source for source in layout.sources for dest in dests):
        return f"'{dests.pop().value}'"
    whens = []
    for state, route in routes:
        *branched, last = route.branches
        whens += [f"WHEN o.status = '{state.value}' AND {_branch(b)} THEN '{b.dest.value}'" for b in branched]
        whens.append(f"WHEN o.status = '{state.value}' THEN '{last.dest.value}'")
    return f"CASE {' '.join(whens)} END"


def _fill(layout: DecidedLayout) -> str | None:
    """The new ``slots_filled`` (``None``: the trigger moves no fill)."""
    fills = {state: route.fill for state, route in layout.sources.items()}
    if not any(fills.values()):
        return None
    if len(set(fills.values())) == 1:
        sign = str(next(iter(fills.values())))
    else:
        sign = "CASE o.status {} END".format(" ".join(f"WHEN '{s.value}' THEN {f}" for s, f in fills.items()))
    return f"o.slots_filled + ({sign}) * {_SLOTS}"


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
    ``:allow_partial_trip``, ``:transporter`` and ``:slots`` (an accept's or release's), ``:trigger``,
    ``:actor``, ``:reason``, ``:meta``, ``:id_field``, and per outbox row ``:{slot}_event_id`` and
    ``:{slot}_name`` (slots ``changed``, ``offer`` and one per announced topic, named after it). It
    returns the row before the command (see :data:`_OLD`), the new state, the slots the command's
    transporter held before it (NULL: not notified, or a trigger that reads no holding), then the
    recipients of each announced topic's row in ``layout.announced`` order (NULL where that row was not
    written).

    The row is locked by the ``FOR NO KEY UPDATE`` subquery (a host row referencing it does not block it, as
    for a plain UPDATE) before any guard is checked, then (a ``LATERAL``
    subquery on it, so always second: every writer of a holding locks the broadcast first) the
    transporter's recipient row, so the guards, the old values returned and the update all see the
    newest committed rows; the everyone function (VOLATILE: a snapshot of its own) then sees every
    recipient committed while the statement waited (see ``postgresql_functions.pg_function_ddl``).
    """
    history, recipients, outbox, idempotency = library_tables
    quote = dialect.identifier_preparer.quote
    name, pk = table_ref(dialect, table), quote(next(iter(table.primary_key.columns)).name)
    where = f"{pk} = :id" + (" AND kind = :kind" if kind_column else "")
    expires = _DEADLINE if layout.sets_deadline else "o.expires_at"
    fill = _fill(layout)
    old = ", ".join(f"o.{column} AS o_{column}" for column in _OLD)
    holder, holding = "", "CAST(NULL AS INTEGER)"
    if layout.holder:  # the transporter's recipient row, locked after the broadcast's (LATERAL: o first)
        lock = any(_HOLDING_VALUE_GUARDS.intersection(route.guards) for route in layout.sources.values())
        holder = (f" LEFT JOIN LATERAL (SELECT slots_held FROM {recipients.name} r WHERE r.kind = :kind "
                  f"AND r.entity_id = :key AND r.transporter_id = :transporter AND o.pk IS NOT NULL"
                  f"{' FOR NO KEY UPDATE' if lock else ''}) h ON true")
        holding = "h.slots_held"
    upd = (f"UPDATE {name} t SET status = {_new_status(layout)}, version = o.version + 1, "
           f"{f'slots_filled = {fill}, ' if fill else ''}"
           f"state_changed_at = GREATEST(o.state_changed_at, :at), expires_at = {expires} "
           f"FROM (SELECT {pk} AS pk, {', '.join(_OLD)} FROM {name} WHERE {where} FOR NO KEY UPDATE) o{holder} "
           f"WHERE t.{pk} = o.pk AND ({_allowed(layout)}) "
           f"RETURNING {old}, {holding} AS o_holding, t.status, t.version, t.state_changed_at, t.slots_filled, "
           "t.slots_requested, t.expires_at, t.customer_id")
    computed = {"kind": ":kind", "entity_id": ":key", "id_field": ":id_field", "status": "status",
                "previous_status": "o_status", "state_changed_at": "state_changed_at", "version": "version",
                "slots_filled": "slots_filled", "slots_requested": "slots_requested", "expires_at": "expires_at",
                "trigger": ":trigger", "reason": ":reason"}
    insert = f"INSERT INTO {outbox.name} ({OUTBOX_ROW.insert_columns(dialect)}) SELECT "

    def row(slot: str, topic: Topic, recipients_sql: str, source: str = "upd", returning: bool = False) -> str:
        values = OUTBOX_ROW.select_list(dialect, prefix=f"{slot}_", sql={
            **computed, "topic": f"'{topic.value}'", "recipients": recipients_sql}, written_at="state_changed_at")
        tail = " RETURNING recipients" if returning else ""
        return f"{slot} AS ({insert}{values} FROM {source}{tail})"

    steps = [f"upd AS ({upd})",
             f"hist AS (INSERT INTO {history.name} (kind, entity_id, from_status, to_status, {quote('trigger')}, "
             "actor, reason, meta, at, version) SELECT :kind, :key, o_status, status, :trigger, "
             "CAST(:actor AS VARCHAR), :reason, CAST(:meta AS JSON), state_changed_at, version FROM upd)",
             row("changed", Topic.STATE_CHANGED, "json_build_array(json_build_array('customer', customer_id))")]
    if fill and layout.holder:  # the transporter's holding moves with the fill, as the general path's hold
        steps.append(f"hold AS (UPDATE {recipients.name} r SET slots_held = r.slots_held + upd.slots_filled "
                     "- upd.o_slots_filled, response = :trigger, responded_at = upd.state_changed_at FROM upd "
                     "WHERE r.kind = :kind AND r.entity_id = :key AND r.transporter_id = :transporter)")
    announced = []
    for topic, edges in layout.announced.items():
        slot = topic.value
        if topic is Topic.OFFERED:  # a re-offer, to the notified holding no slot; none once the deadline passed
            listed = f"{everyone_function}(:kind, :key, NULL)"
            condition = f"({_edges(layout, edges)}) AND (expires_at IS NULL OR expires_at > :at)"
        else:
            listed = f"{everyone_function}(:kind, :key, CAST(customer_id AS TEXT))"
            condition = _edges(layout, edges)
        steps.append(row(slot, topic, listed, f"upd WHERE {condition}", returning=True))
        announced.append(f"(SELECT recipients FROM {slot})")
    if offers:
        steps.append(f"rec AS (INSERT INTO {recipients.name} (kind, entity_id, transporter_id, notified_at, "
                     "slots_held) SELECT :kind, :key, r, state_changed_at, 0 FROM upd, "
                     "unnest(CAST(:transporters AS text[])) AS r ON CONFLICT DO NOTHING)")
        steps.append(row("offer", Topic.OFFERED, "CAST(:offer_recipients AS JSON)"))
    if keyed:
        steps.append(f"idem AS (INSERT INTO {idempotency.name} (key, kind, entity_id, {quote('trigger')}, outcome, "
                     f"created_at) SELECT :idem_key, :kind, :key, :trigger, {_outcome_json()}, :at FROM upd)")
    columns = ", ".join([*(f"o_{column}" for column in _OLD), "status", "o_holding", *announced])
    return f"WITH {', '.join(steps)} SELECT {columns} FROM upd"
