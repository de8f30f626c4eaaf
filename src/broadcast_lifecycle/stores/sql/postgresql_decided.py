"""PostgreSQL: the statement of a transition decided by its own statement (its layout, generated from
the transition table, is ``decided.DecidedLayout``), and the SQL of the guards it checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlalchemy import Dialect, Table

from ...events import Topic
from ...lifecycle import Trigger, allowed_from
from ...states import BroadcastStatus
from .._outbox_row import OUTBOX_ROW
from .common import table_ref

if TYPE_CHECKING:
    from .decided import DecidedLayout

__all__ = ["GUARD_SQL", "decided_statement"]

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
    name, pk = table_ref(dialect, table), quote(next(iter(table.primary_key.columns)).name)
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
