"""Accept and release in place on PostgreSQL: the built-in guards in the UPDATE's WHERE, no read first
(see :class:`~broadcast_lifecycle.stores.base.ChangesInPlace` and ``sql_text.pg_change_in_place``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..errors import StoreError
from ..events import Topic
from ..kinds import KindConfig
from ..lifecycle import Trigger
from ..records import BroadcastSnapshot, EntityId
from ..states import BroadcastStatus
from .base import AfterCommit, Committed, Loaded
from .outbox_row import OUTBOX_ROW
from .sql_errors import sqlstate
from .sql_plumbing import SqlPlumbing, utc
from .sql_text import EVERYONE_SIGNATURE

__all__ = ["SqlInPlace"]

logger = logging.getLogger(__name__)

_UNDEFINED_FUNCTION = "42883"


class SqlInPlace(SqlPlumbing):
    """In-place accept and release of :class:`~broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore`."""

    _fills_in_place: bool | None = None
    """Whether the database has the everyone function, so an accept may fill in place (asked once)."""

    def change_in_place(self, kind: KindConfig, trigger: Trigger, entity_id: EntityId, transporter_id: str,
                        slots: int, at: datetime, after_commit: AfterCommit) -> Committed | Loaded | None:
        """See :class:`~broadcast_lifecycle.stores.base.ChangesInPlace`: PostgreSQL only (``None`` elsewhere).

        One statement; a declined one is followed by a read of the row (a fresh snapshot: the row as
        the guards just saw it), on which the core decides the refusal."""
        sql = self._entity(kind.name)
        if not sql.in_place:
            return None
        variant = trigger.value
        if trigger is Trigger.ACCEPT and not self._can_fill_in_place():
            variant = "accept_partial"
        statement = sql.in_place.get(variant)
        if statement is None:
            return None
        delta = slots if trigger is Trigger.ACCEPT else -slots
        params = {"id": self._lookup_id(sql, kind.name, entity_id), "kind": kind.name, "key": str(entity_id),
                  "delta": delta, "at": at, "transporter": transporter_id, "trigger": trigger.value,
                  "id_field": kind.id_field, "ev_event_id": str(uuid.uuid4()),
                  "ev_name": kind.event_name(Topic.STATE_CHANGED), "ev_topic": Topic.STATE_CHANGED.value,
                  "fill_event_id": str(uuid.uuid4()), "fill_name": kind.event_name(Topic.FULLY_FILLED),
                  "fill_topic": Topic.FULLY_FILLED.value}
        try:
            with self._cursor(None, write=True, single=True) as cur:
                cur.execute(statement, params)
                row = cur.fetchone()
                if row is None:
                    cur.execute(sql.load, params)
                    found = cur.fetchone()
        except StoreError as exc:
            if variant != "accept" or sqlstate(exc.__cause__) != _UNDEFINED_FUNCTION:
                raise
            self._fills_in_place = False  # dropped since it was found; nothing was written
            self._warn_missing_function()
            return self.change_in_place(kind, trigger, entity_id, transporter_id, slots, at, after_commit)
        if row is None:
            return self._loaded(sql, kind.name, entity_id, found)
        return self._committed(self._in_place_result(kind, entity_id, row), after_commit, None)

    def _can_fill_in_place(self) -> bool:
        """Whether :data:`~broadcast_lifecycle.stores.sql_text.EVERYONE_FUNCTION` exists (asked once per
        store, and again after ``create_all``)."""
        if self._fills_in_place is None:
            with self._cursor(None, write=False) as cur:
                cur.execute(f"SELECT to_regprocedure('{EVERYONE_SIGNATURE}') IS NOT NULL")
                (present,) = cur.fetchone()
            if not present:
                self._warn_missing_function()
            self._fills_in_place = bool(present)
        return self._fills_in_place

    @staticmethod
    def _warn_missing_function() -> None:
        logger.warning(
            "PostgreSQL function %s is missing, so an accept that fills a broadcast takes the general path "
            "(a read, then a compare-and-set write that may retry). SQLAlchemyStore.create_all() creates it, or "
            "run broadcast_lifecycle.stores.schema.postgresql_functions_ddl() in a migration (docs/persistence.md); "
            "this store looks for it again after create_all() or a restart", EVERYONE_SIGNATURE)

    def _in_place_result(self, kind: KindConfig, entity_id: EntityId, row: Sequence[Any]) -> Committed:
        """The new snapshot and the events an applied in-place statement wrote, rebuilt from the
        outbox rows it returned (see ``sql_text.IN_PLACE_ROW``)."""
        customer_id, requested, filled, version, changed_at, created_at, expires_at, status = row[:8]
        after = BroadcastSnapshot(kind.name, entity_id, customer_id, BroadcastStatus(status), requested, filled,
                                  version, utc(changed_at), utc(created_at), utc(expires_at) if expires_at else None)
        width = len(OUTBOX_ROW.names)
        rows = (row[start:start + width] for start in range(8, len(row), width))
        events = tuple(self._rebuild_tuple(values) for values in rows if values[0] is not None)
        return Committed(after, events)
