"""PostgreSQL's transitions without a read first, each one statement decided in the statement: its
from-states, guards, branches, fill and holding generated from the transition table (see
:class:`~broadcast_lifecycle.stores.base.DecidesInStatement`, ``sql.decided`` and ``sql.postgresql_decided``),
every trigger but create; it addresses events to every notified transporter with the library's PL/pgSQL
function, whose presence this part asks the database about."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from .._quick import quick_constructor
from ..errors import BroadcastError, StoreError, show_id
from ..events import BroadcastEvent, Recipient, Topic, build_events, build_offer, new_event_id
from ..kinds import KindConfig
from ..lifecycle import Trigger
from ..records import BroadcastSnapshot
from ._sql_connections import Committing, SqlConnections
from ._sql_errors import UNDEFINED_FUNCTION, sqlstate
from ._sql_tables import StoreTables
from ._sql_text import EntitySql, dumps
from .base import AfterCommit, Change, Committed, Loaded, Plan, StatementCommand
from .schema import history_table, idempotency_table, outbox_table, recipients_table
from .sql.common import render
from .sql.decided import DecidedLayout, decided_layout
from .sql.postgresql_decided import decided_statement
from .sql.postgresql_functions import EVERYONE_FUNCTION, EVERYONE_SIGNATURE, has_function

LIBRARY_TABLES = (history_table, recipients_table, outbox_table, idempotency_table)

__all__ = ["SqlInPlace"]

_new_loaded = quick_constructor(Loaded)
_new_committed = quick_constructor(Committed)

logger = logging.getLogger(__name__)


class SqlInPlace:
    """The one-statement writer of :class:`~broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore` (each
    trigger decided in its statement), on the store's connections (``db``) and tables (``schema``); it owns
    its decided statements and what it knows of the everyone function."""

    def __init__(self, db: SqlConnections, schema: StoreTables, committed: Committing) -> None:
        self._db = db
        self._schema = schema
        self._committed = committed
        self._everyone_function: bool | None = None
        """Whether the database has the everyone function, so a transition announced to everyone may be
        one statement (asked once, and again after :meth:`forget_function`)."""
        self._pg = db.engine.dialect.name == "postgresql"
        self._decided: dict[tuple[str, Trigger, bool, bool], str] = {}
        """The decided statements built so far, by table, trigger, whether the command offers and is keyed."""
        self._shared: dict[tuple[str, Trigger], tuple[dict[str, Any], tuple[tuple[str, str], ...]]] = {}
        """The parameters each kind's commands of a trigger send alike, and the event slots (see _shared_params)."""

    def decides_in_statement(self, kind: KindConfig, trigger: Trigger) -> bool:
        """Whether ``trigger`` of ``kind`` has a decided statement here (PostgreSQL, a trigger whose table
        routes a statement can decide, and the everyone function where its topics need it)."""
        layout = decided_layout(trigger)
        return layout is not None and self._pg and (not layout.everyone or self.has_everyone_function())

    def decide_in_statement(self, command: StatementCommand, plan: Plan,
                            after_commit: AfterCommit) -> Committed | Loaded | None:
        """See :class:`~broadcast_lifecycle.stores.base.DecidesInStatement`: one autocommit statement
        (``sql.decided``); when it refuses, a read of the row in the same checkout."""
        kind, trigger, entity_id = command.kind, command.trigger, command.entity_id
        layout = decided_layout(trigger)
        if layout is None:
            return None
        sql = self._schema.entity(kind.name)
        statement, params, ids = self._prepare(command, layout, sql)
        try:
            row, found = self._write_or_read(sql, statement, params)
        except StoreError as exc:
            if self._db.errors.breaks_open_policy(exc, kind):
                return None  # decide it in full, which words the policy's refusal
            if not layout.everyone or sqlstate(exc.__cause__) != UNDEFINED_FUNCTION:
                raise
            self.function_went_missing()  # nothing was written
            return None
        if row is None:
            return self._schema.loaded(sql, kind.name, entity_id, found)
        before = self._schema.snapshot(sql, kind.name, entity_id, row)
        change: Change | None = None
        refused: BroadcastError | None = None
        try:
            change = plan(_new_loaded(before, row[9]))
        except BroadcastError as exc:
            refused = exc
        if change is None or change.decision.trigger is not trigger or change.decision.to_status._value_ != row[8]:
            # Written already: the statement and the table disagree (tests/test_decided.py keeps them together).
            decided = refused if change is None else change.decision.to_status.value
            raise StoreError(f"the {trigger.value} statement of {kind.name} {show_id(entity_id)} wrote {row[8]} "
                             f"from {before.status.value} where the transition table decides {decided}; the write "
                             "is committed and its events wait in the outbox for the relay (a library bug: "
                             "please report it)")
        after = change.after()
        events = self._statement_events(change, after, ids, dict(zip(layout.announced, row[10:], strict=True)))
        return self._committed(_new_committed(after, events), after_commit, None)

    def statement(self, command: StatementCommand) -> tuple[str, dict[str, Any]]:
        """The statement :meth:`decide_in_statement` runs for ``command`` and its parameters (new event
        ids each call); ``ValueError`` for a trigger with no decided statement. For benchmarks."""
        layout = decided_layout(command.trigger)
        if layout is None:
            raise ValueError(f"{command.trigger.value} has no decided statement")
        statement, params, _ = self._prepare(command, layout, self._schema.entity(command.kind.name))
        return statement, params

    def _prepare(self, command: StatementCommand, layout: DecidedLayout,
                 sql: EntitySql) -> tuple[str, dict[str, Any], dict[str, str]]:
        """The statement of ``command``, its parameters and the ids of the events it writes, by slot."""
        kind, entity_id = command.kind, command.entity_id
        offers = bool(command.recipients)
        statement = self._decided_statement(sql, layout, offers, command.idempotency_key is not None)
        shared, slots = self._shared_params(kind, layout)
        bind = sql.time.bind
        params: dict[str, Any] = {
            **shared, "id": self._schema.lookup_id(sql, kind.name, entity_id), "key": str(entity_id),
            "at": bind(command.at), "deadline": bind(command.deadline), "transporter": command.transporter_id or "",
            "slots": command.slots, "default_deadline": bind(command.default_deadline), "actor": command.actor,
            "reason": command.reason, "meta": dumps(command.metadata) if command.metadata else "{}",
            "idem_key": command.idempotency_key, "fingerprint": command.fingerprint,
        }
        ids = {}
        for slot, param in slots:
            params[param] = ids[slot] = new_event_id()
        if offers:
            params["offer_event_id"] = ids["offer"] = new_event_id()
            params["transporters"] = list(command.recipients)
            params["offer_recipients"] = dumps([["transporter", t] for t in command.recipients])
        return statement, params, ids

    def _shared_params(self, kind: KindConfig,
                       layout: DecidedLayout) -> tuple[dict[str, Any], tuple[tuple[str, str], ...]]:
        """The parameters every command of ``kind`` and ``layout``'s trigger sends alike, and the event slots
        (each with its id's parameter) besides the offer; worked out once."""
        shape = (kind.name, layout.trigger)
        shared = self._shared.get(shape)
        if shared is None:
            slots = ("changed", *(topic.value for topic in layout.announced))
            params: dict[str, Any] = {"kind": kind.name, "id_field": kind.id_field, "trigger": layout.trigger.value,
                                      "allow_partial_trip": kind.allow_partial_trip}
            for slot in (*slots, "offer"):
                topic = Topic.STATE_CHANGED if slot == "changed" else Topic.OFFERED if slot == "offer" else Topic(slot)
                params[f"{slot}_name"] = kind.event_name(topic)
            shared = self._shared[shape] = (params, tuple((slot, f"{slot}_event_id") for slot in slots))
        return shared

    def _write_or_read(self, sql: EntitySql, statement: str, params: dict[str, Any]) -> tuple[Any, Any]:
        """``(row, None)``: the one-statement write's row; ``(None, found)``: it declined, and ``found`` is the
        broadcast's row read right after, on the same connection (``None``: no such broadcast)."""
        with self._db.cursor(None, write=True, single=True) as cur:
            cur.execute(statement, params)
            row = cur.fetchone()
            if row is not None:
                return row, None
            cur.execute(sql.load, params)
            return None, cur.fetchone()

    def _decided_statement(self, sql: EntitySql, layout: DecidedLayout, offers: bool, keyed: bool) -> str:
        shape = (sql.table.name, layout.trigger, offers, keyed)
        statement = self._decided.get(shape)
        if statement is None:
            dialect = self._db.engine.dialect
            statement = self._decided[shape] = render(decided_statement(
                layout, sql.table, "kind" in sql.table.c, LIBRARY_TABLES, dialect, EVERYONE_FUNCTION, offers, keyed),
                dialect)
        return statement

    @staticmethod
    def _statement_events(change: Change, after: BroadcastSnapshot, ids: dict[str, str],
                          listed: dict[Topic, Any]) -> tuple[BroadcastEvent, ...]:
        """The events of ``change`` as the statement wrote them: under its ids and, for a topic announced to
        the notified transporters, to the recipients it listed (an event whose row it did not write, a
        re-offer to nobody, left out as ``build_events`` leaves it out when it is given the recipients)."""
        d = change.decision
        topics = d.topics
        transporters_listed: tuple[str, ...] = ()
        if len(topics) > 1:
            topics = (topics[0], *(topic for topic in topics[1:] if listed.get(topic) is not None))
        if len(topics) == 2:  # one announced topic: to the customer (but a re-offer) and the transporters listed
            transporters_listed = tuple(rid for role, rid in _pairs(listed[topics[1]]) if role == "transporter")
        events = build_events(change.kind, after, d.from_status, topics, transporters_listed, trigger=d.trigger.value,
                              reason=change.reason, event_ids=[ids["changed"], *(ids[t.value] for t in topics[1:])])
        if len(topics) > 2:  # not in the table today: each announced topic to the recipients listed for it
            events = tuple(replace(event, recipients=tuple(Recipient(*pair) for pair in _pairs(listed[event.topic])))
                           if event.topic in listed else event for event in events)
        if not change.recipients:
            return events
        (offer,) = build_offer(change.kind, after, d.from_status, change.recipients, trigger=d.trigger.value,
                               reason=change.reason)
        return (*events, replace(offer, event_id=ids["offer"]))

    def has_everyone_function(self) -> bool:
        """Whether :data:`~broadcast_lifecycle.stores.sql.postgresql_functions.EVERYONE_FUNCTION` exists (asked once per
        store, and again after ``create_all``)."""
        if self._everyone_function is None:
            with self._db.cursor(None, write=False) as cur:
                cur.execute(has_function(EVERYONE_SIGNATURE, outbox_table.name))
                present, tables = cur.fetchone()
            if not tables:  # nothing is created yet: the command fails on the missing tables, worded for that
                return False
            if not present:
                self._warn_missing_function()
            self._everyone_function = bool(present)
        return self._everyone_function

    def function_went_missing(self) -> None:
        """The function was dropped since it was found: stop using it (and say so)."""
        self._everyone_function = False
        self._warn_missing_function()

    def forget_function(self) -> None:
        """Ask the database again next time (after ``create_all``, which may have created the function)."""
        self._everyone_function = None

    @staticmethod
    def _warn_missing_function() -> None:
        logger.warning(
            "PostgreSQL function %s is missing, so accept, release and a transition announced to every notified "
            "transporter take the general path (a read, then a compare-and-set write in several "
            "round trips, which may retry). SQLAlchemyStore.create_all() creates it, or "
            "run broadcast_lifecycle.stores.schema.postgresql_functions_ddl() in a migration (docs/persistence.md); "
            "this store looks for it again after create_all() or a restart", EVERYONE_SIGNATURE)


def _pairs(listed: Any) -> list[Any]:
    """A statement's list of recipients (JSON, as the driver returned it) as ``[role, id]`` pairs."""
    return json.loads(listed) if isinstance(listed, str) else list(listed)
