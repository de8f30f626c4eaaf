"""Accept and release in place on PostgreSQL: the built-in guards in the UPDATE's WHERE, no read first
(see :class:`~broadcast_lifecycle.stores.base.ChangesInPlace` and ``sql_text.pg_change_in_place``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from ..errors import StoreError
from ..events import Topic, build_events, new_event_id
from ..kinds import KindConfig
from ..lifecycle import Trigger, topics_of
from ..records import BroadcastSnapshot, EntityId
from ..states import BroadcastStatus
from ._sql_connections import SqlConnections
from ._sql_errors import UNDEFINED_FUNCTION, sqlstate
from ._sql_tables import StoreTables, utc
from ._sql_text import EVERYONE_SIGNATURE
from .base import AfterCommit, Committed, Loaded

__all__ = ["SqlInPlace"]

logger = logging.getLogger(__name__)

Committing = Callable[[Committed, AfterCommit, object], Committed]
"""The store's hand-off of a committed write (``committed, after_commit, tx``): its events dispatched."""



class SqlInPlace:
    """The in-place writer of :class:`~broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore` (accept and
    release), on the store's connections (``db``); it owns what it knows of the everyone function."""

    def __init__(self, db: SqlConnections, schema: StoreTables, committed: Committing) -> None:
        self._db = db
        self._schema = schema
        self._committed = committed
        self._everyone_function: bool | None = None
        """Whether the database has the everyone function, so an accept may fill in place and a transition
        announced to everyone be one statement (asked once, and again after :meth:`forget_function`)."""

    def change_in_place(self, kind: KindConfig, trigger: Trigger, entity_id: EntityId, transporter_id: str,
                        slots: int, at: datetime, after_commit: AfterCommit) -> Committed | Loaded | None:
        """See :class:`~broadcast_lifecycle.stores.base.ChangesInPlace`: PostgreSQL only (``None`` elsewhere).

        One statement; a declined one is followed by a read of the row (a fresh snapshot: the row as
        the guards just saw it), on which the core decides the refusal."""
        sql = self._schema.entity(kind.name)
        if not sql.in_place:
            return None
        variant = trigger.value
        if trigger is Trigger.ACCEPT and not self.has_everyone_function():
            variant = "accept_partial"
        statement = sql.in_place.get(variant)
        if statement is None:
            return None
        delta = slots if trigger is Trigger.ACCEPT else -slots
        params = {"id": self._schema.lookup_id(sql, kind.name, entity_id), "kind": kind.name, "key": str(entity_id),
                  "delta": delta, "at": at, "transporter": transporter_id, "trigger": trigger.value,
                  "id_field": kind.id_field, "ev_event_id": new_event_id(),
                  "ev_name": kind.event_name(Topic.STATE_CHANGED), "ev_topic": Topic.STATE_CHANGED.value,
                  "fill_event_id": new_event_id(), "fill_name": kind.event_name(Topic.FULLY_FILLED),
                  "fill_topic": Topic.FULLY_FILLED.value}
        try:
            with self._db.cursor(None, write=True, single=True) as cur:
                cur.execute(statement, params)
                row = cur.fetchone()
                if row is None:
                    cur.execute(sql.load, params)
                    found = cur.fetchone()
        except StoreError as exc:
            if self._db.errors.breaks_open_policy(exc, kind):
                return None  # a release opened it again beside the customer's other open one: decide it in full
            if variant != "accept" or sqlstate(exc.__cause__) != UNDEFINED_FUNCTION:
                raise
            self.function_went_missing()  # nothing was written
            return self.change_in_place(kind, trigger, entity_id, transporter_id, slots, at, after_commit)
        if row is None:
            return self._schema.loaded(sql, kind.name, entity_id, found)
        committed = self._in_place_result(kind, entity_id, trigger, slots, params, row)
        return self._committed(committed, after_commit, None)

    def has_everyone_function(self) -> bool:
        """Whether :data:`~broadcast_lifecycle.stores._sql_text.EVERYONE_FUNCTION` exists (asked once per
        store, and again after ``create_all``)."""
        if self._everyone_function is None:
            with self._db.cursor(None, write=False) as cur:
                cur.execute(f"SELECT to_regprocedure('{EVERYONE_SIGNATURE}') IS NOT NULL")
                (present,) = cur.fetchone()
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
            "PostgreSQL function %s is missing, so an accept that fills a broadcast, and a transition announced to "
            "every notified transporter, take the general path (a read, then a compare-and-set write in several "
            "round trips, which may retry). SQLAlchemyStore.create_all() creates it, or "
            "run broadcast_lifecycle.stores.schema.postgresql_functions_ddl() in a migration (docs/persistence.md); "
            "this store looks for it again after create_all() or a restart", EVERYONE_SIGNATURE)

    @staticmethod
    def _in_place_result(kind: KindConfig, entity_id: EntityId, trigger: Trigger, slots: int,
                         params: dict[str, Any], row: Sequence[Any]) -> Committed:
        """The new snapshot and the events an applied in-place statement wrote, from the row it returned
        (``tests/test_outbox_row.py`` holds these events to the stored rows)."""
        customer_id, requested, filled, version, changed_at, created_at, expires_at, status, addressed = row
        after = BroadcastSnapshot(kind.name, entity_id, customer_id, BroadcastStatus(status), requested, filled,
                                  version, utc(changed_at), utc(created_at), utc(expires_at) if expires_at else None)
        if trigger is Trigger.ACCEPT:
            previous = BroadcastStatus.ACTIVE if filled == slots else BroadcastStatus.PARTIALLY_FILLED
        else:
            previous = BroadcastStatus.PARTIALLY_FILLED  # in place only from there (in_place_states)
        if isinstance(addressed, str):
            addressed = json.loads(addressed)
        transporters = [rid for role, rid in addressed or () if role == "transporter"]
        # The same event building as every other path, from the table's topics for this edge.
        events = build_events(kind, after, previous, topics_of(trigger, previous, after.status), transporters,
                              trigger=trigger.value, event_ids=(params["ev_event_id"], params["fill_event_id"]))
        return Committed(after, events)
