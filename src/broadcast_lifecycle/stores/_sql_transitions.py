"""The SQL store's transitions, one part of it: a decided change written as the compare-and-set
UPDATE, its recipients and holding, its history row, its events and its key, in one transaction
(or, on PostgreSQL without a host transaction, in one statement); and recipients added to an open
broadcast. The in-place and decided-in-statement paths are :mod:`._sql_in_place`'s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from sqlalchemy.engine import Dialect

from ..errors import OpenBroadcastExists, StoreError
from ..events import BroadcastEvent, Recipient, Topic
from ..records import BroadcastSnapshot, EntityId
from ._outbox_row import OUTBOX_ROW
from ._positional import LOAD, UPDATE, Positional, WrittenSql
from ._sql_connections import Committing, LostRace, SqlConnections
from ._sql_errors import UNDEFINED_FUNCTION, sqlstate
from ._sql_in_place import SqlInPlace
from ._sql_tables import StoreTables
from ._sql_text import EntitySql, dumps
from ._sql_translate import ErrorTranslator
from .base import AfterCommit, BatchNotWritten, Change, Committed, Loaded, NewRecipients, Plan

__all__ = ["SqlTransitions"]


class SqlTransitions:
    """The transitions of :class:`~broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore`, on its
    connections (``db``), tables (``schema``) and general statements (``written``, run with positional
    values: see :mod:`._positional`)."""

    def __init__(self, db: SqlConnections, schema: StoreTables, errors: ErrorTranslator, written: WrittenSql,
                 in_place: SqlInPlace, committed: Committing, dialect: Dialect) -> None:
        self._db, self._schema, self._errors, self._written = db, schema, errors, written
        self._in_place, self._committed = in_place, committed
        self._updates = {sql.table.name: Positional(sql.update, UPDATE, dialect) for sql in schema.all()}
        self._loads = {  # by table and whether the command's transporter's holding is read
            (sql.table.name, holding): Positional(sql.load if holding else sql.load_row, LOAD, dialect)
            for sql in schema.all() for holding in (True, False)}

    def apply(self, change: Change, after_commit: AfterCommit, tx: object = None) -> Committed | None:
        """See :meth:`BroadcastStore.apply`."""
        try:
            return self._apply(change, after_commit, tx)
        except StoreError as exc:
            if not self._errors.breaks_open_policy(exc, change.kind):
                raise
            raise _second_open(change) from exc

    def _apply(self, change: Change, after_commit: AfterCommit, tx: object) -> Committed | None:
        sql = self._schema.entity(change.before.kind)
        if tx is None and (one := self._one_statement(sql, change)) is not None:
            return self._apply_in_one_statement(one, sql, change, after_commit)
        try:
            committed = self._db.transaction(tx, lambda cur: self._write(cur, sql, change))
        except LostRace:
            return None
        return self._committed(committed, after_commit, tx)

    def _one_statement(self, sql: EntitySql, change: Change) -> _OneStatement | None:
        """PostgreSQL: the statement that writes ``change`` whole, with its events, when there is one."""
        # A re-offer goes to the transporters holding no slot: one statement lists them only when it moves
        # no holding itself (activate); a release's re-offer lists them after its write, on the general path.
        if not sql.single_apply or (change.decision.fill_delta and Topic.OFFERED in change.decision.topics):
            return None
        everyone = change.needs_recipients  # its last event goes to every notified transporter (or re-offer)
        if everyone and (change.recipients or not self._in_place.has_everyone_function()):
            return None
        after = change.after()
        events = change.events(after, ())
        statement = sql.single_apply.get((len(events), everyone))
        return None if statement is None else _OneStatement(statement, after, events, everyone)

    def decide_and_apply(self, kind: str, entity_id: EntityId, transporter_id: str | None, plan: Plan,
                         after_commit: AfterCommit, tx: object = None) -> Committed | None:
        """See :class:`~broadcast_lifecycle.stores.base.DecidesUnderLock`."""
        sql = self._schema.entity(kind)
        load, schema = self._loads[(sql.table.name, transporter_id is not None)], self._schema
        planned: list[Change] = []

        def decide_and_write(cur: Any) -> Committed:
            cur.execute(load.text, load.params((  # as StoreTables.read_loaded does, positional
                kind, str(entity_id), transporter_id or "", schema.lookup_id(sql, kind, entity_id))))
            planned.append(plan(schema.loaded(sql, kind, entity_id, cur.fetchone())))
            return self._write(cur, sql, planned[0])

        try:
            committed = self._db.transaction(tx, decide_and_write)
        except LostRace:
            return None
        except StoreError as exc:
            if not planned or not self._errors.breaks_open_policy(exc, planned[0].kind):
                raise
            raise _second_open(planned[0]) from exc
        return self._committed(committed, after_commit, tx)

    def decide_and_apply_batch(self, kind: str, entity_id: EntityId,
                               plans: Sequence[tuple[str | None, Plan]]) -> list[Committed | Exception]:
        """See :class:`~broadcast_lifecycle.stores.base.DecidesInBatch`: one transaction, the row locked by its
        first read; each change written as it is alone (in its one statement where it has one), on the row as
        the changes before it left it."""
        sql, schema = self._schema.entity(kind), self._schema
        outcomes: list[Committed | Exception] = []

        def decide_and_write(cur: Any) -> None:
            snapshot = schema.read_loaded(cur, sql, kind, entity_id, None, sql.load_for_update).snapshot
            held: dict[str, int] = {}  # the slots each transporter the batch names holds (none: never notified)
            named = sorted({t for t, _ in plans if t is not None})
            if named:
                cur.execute(schema.lib.holdings_of, {"kind": kind, "key": str(entity_id), "transporters": named})
                held.update(cur.fetchall())
            for transporter_id, plan in plans:
                holding = None if transporter_id is None else held.get(transporter_id)
                try:
                    change = plan(Loaded(snapshot, holding))
                except Exception as refusal:  # the item's outcome, handed back to its caller
                    outcomes.append(refusal)
                    continue
                one = self._one_statement(sql, change)
                committed = self._write(cur, sql, change) if one is None else self._write_in_one_statement(
                    cur, one, sql, change)
                outcomes.append(committed)
                snapshot = committed.snapshot
                held.update((t, 0) for t in change.recipients if t not in held)
                if change.transporter_id is not None and change.decision.fill_delta:
                    held[change.transporter_id] = held.get(change.transporter_id, 0) + change.decision.fill_delta

        written: list[bool] = []

        def before_the_commit(cur: Any) -> None:
            try:
                decide_and_write(cur)
            except Exception as exc:  # rolled back: nothing of the batch is written
                raise BatchNotWritten(f"{type(exc).__name__}: {exc}") from exc
            written.append(True)

        try:
            self._db.transaction(None, before_the_commit)
        except BatchNotWritten:
            raise
        except Exception as exc:
            if written:  # the COMMIT failed: its outcome is unknown, raised as it is
                raise
            raise BatchNotWritten(f"{type(exc).__name__}: {exc}") from exc  # no connection, or BEGIN failed
        return outcomes

    def _write(self, cur: Any, sql: EntitySql, change: Change) -> Committed:
        """The statements of ``change`` on an open write transaction; ``LostRace`` if the
        compare-and-set matched no row."""
        before, decision = change.before, change.decision
        lib = self._schema.lib
        kind, key, at = before.kind, str(before.id), lib.time.bind(change.at)
        trigger, to_status = decision.trigger.value, decision.to_status.value
        after = change.after()
        update, written = self._updates[sql.table.name], self._written
        cur.execute(update.text, update.params((  # in the declared orders of ._positional
            to_status, at, after.version, decision.fill_delta, sql.time.bind(decision.expires_at),
            sql.id_param(before.id), kind, before.version)))
        if cur.rowcount != 1:
            raise LostRace
        if change.recipients:
            cur.executemany(written.recipient.text, [written.recipient.params((kind, key, t, at))
                                                     for t in change.recipients])
        if change.transporter_id is not None and decision.fill_delta:
            cur.execute(written.hold.text, written.hold.params((
                decision.fill_delta, trigger, at, kind, key, change.transporter_id)))
        if change.needs_recipients:
            cur.execute(lib.list_recipients, {"kind": kind, "key": key})
            rows = cur.fetchall()
            events = change.events(after, [row[0] for row in rows], {row[0] for row in rows if row[1] > 0})
        else:
            events = change.events(after, ())
        cur.execute(written.history.text, written.history.params((
            kind, key, decision.from_status.value, to_status, trigger, change.actor, change.reason,
            dumps(change.metadata) if change.metadata else "{}", at, after.version)))
        cur.executemany(lib.add_events, OUTBOX_ROW.rows(events, lib.time.bind, at))
        if (outcome := change.outcome(after)) is not None:
            cur.execute(lib.add_key, {"kind": kind, "key": key, "at": at, "idem_key": outcome.key,
                                      "trigger": trigger, "idem_outcome": dumps(outcome.to_json())})
        return Committed(after, events)

    def _apply_in_one_statement(self, one: _OneStatement, sql: EntitySql, change: Change,
                                after_commit: AfterCommit) -> Committed | None:
        """PostgreSQL: one round trip, atomic on its own (autocommit). With ``one.everyone`` the last event
        goes to every notified transporter, listed by the statement (see ``sql.postgresql.pg_single_statement``)."""
        try:
            with self._db.cursor(None, write=True, single=True) as cur:
                committed = self._write_in_one_statement(cur, one, sql, change)
        except LostRace:
            return None
        except StoreError as exc:
            if not one.everyone or sqlstate(exc.__cause__) != UNDEFINED_FUNCTION:
                raise
            self._in_place.function_went_missing()  # nothing was written: take the general path
            return self.apply(change, after_commit)
        return self._committed(committed, after_commit, None)

    def _write_in_one_statement(self, cur: Any, one: _OneStatement, sql: EntitySql, change: Change) -> Committed:
        """``one`` on ``cur``; ``LostRace`` if its compare-and-set matched no row."""
        before, decision, events = change.before, change.decision, one.events
        bind = self._schema.lib.time.bind
        base = {"kind": before.kind, "key": str(before.id), "at": bind(change.at)}
        entry = change.history_entry()
        params = {
            **base, "id": sql.id_param(before.id), "to_status": decision.to_status.value,
            "new_version": one.after.version, "delta": decision.fill_delta,
            "expires_at": sql.time.bind(decision.expires_at), "version": before.version,
            "transporters": list(change.recipients), "transporter": change.transporter_id or "",
            "response": decision.trigger.value, "from_status": decision.from_status.value,
            "trigger": entry.trigger, "actor": entry.actor, "reason": entry.reason, "meta": dumps(entry.metadata),
            "idem_key": change.idempotency_key,
            "idem_outcome": dumps(outcome.to_json()) if (outcome := change.outcome(one.after)) is not None else None,
        }
        for i, event in enumerate(events):
            params.update(OUTBOX_ROW.params(event, bind, prefix=f"ev{i}_", shared=not i))
        if one.everyone:  # no customer: the function lists a re-offer's recipients
            params["customer"] = None if events[-1].topic is Topic.OFFERED else before.customer_id
        cur.execute(one.statement, params)
        applied, addressed = cur.fetchone()
        if applied != 1:
            raise LostRace
        if one.everyone:
            pairs = json.loads(addressed) if isinstance(addressed, str) else addressed
            events = (*events[:-1], replace(events[-1], recipients=tuple(Recipient(role, rid) for role, rid in pairs)))
        return Committed(one.after, events)

    def add_recipients(self, new: NewRecipients, after_commit: AfterCommit, tx: object = None) -> Committed:
        """See :meth:`BroadcastStore.add_recipients`. Locks the broadcast row, so a concurrent
        terminal transition either sees the new recipients or makes this call see it closed."""
        kind = new.kind.name
        sql, lib = self._schema.entity(kind), self._schema.lib
        base = {"kind": kind, "key": str(new.entity_id), "at": lib.time.bind(new.at)}

        def write(cur: Any) -> Committed:
            events: tuple[BroadcastEvent, ...] = ()
            snapshot = self._schema.read_loaded(cur, sql, kind, new.entity_id, None, sql.load_for_update).snapshot
            if snapshot.status in new.open_states:
                cur.execute(lib.list_recipients, base)
                known = {row[0] for row in cur.fetchall()}
                added = [t for t in new.transporters if t not in known]
                if added:
                    cur.executemany(lib.add_recipient, [{**base, "transporter": t} for t in added])
                events = new.events(snapshot, added)
                if events:
                    cur.executemany(lib.add_events, OUTBOX_ROW.rows(events, lib.time.bind, base["at"]))
            return Committed(snapshot, events)

        committed = self._db.transaction(tx, write)
        return self._committed(committed, after_commit, tx) if committed.events else committed


class _OneStatement(NamedTuple):
    """The statement that writes a change whole (PostgreSQL), the broadcast after it and its events."""

    statement: str
    after: BroadcastSnapshot
    events: tuple[BroadcastEvent, ...]
    everyone: bool  # the last event goes to every notified transporter, listed by the statement


def _second_open(change: Change) -> OpenBroadcastExists:
    """The refusal of ``change``, which opened its broadcast again while the customer has another
    open one of a kind that allows one (the policy's index refused the write)."""
    before = change.before
    return OpenBroadcastExists(before.kind, before.customer_id, entity_id=before.id, from_state=before.status.value,
                               trigger=change.decision.trigger.value)
