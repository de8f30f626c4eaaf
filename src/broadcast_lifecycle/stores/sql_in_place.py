"""Accept and release in place on PostgreSQL: the built-in guards in the UPDATE's WHERE, no read first
(see :class:`~broadcast_lifecycle.stores.base.ChangesInPlace` and ``sql_text.pg_change_in_place``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..events import BroadcastEvent, Recipient, Topic
from ..kinds import KindConfig
from ..lifecycle import Trigger
from ..records import BroadcastSnapshot, EntityId
from ..states import BroadcastStatus
from .base import AfterCommit, Committed
from .sql_plumbing import LostRace, SqlPlumbing, utc
from .sql_text import EntitySql, event_params

__all__ = ["SqlInPlace"]


class SqlInPlace(SqlPlumbing):
    """In-place accept and release of :class:`~broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore`."""

    def change_in_place(self, kind: KindConfig, trigger: Trigger, entity_id: EntityId, transporter_id: str,
                        slots: int, at: datetime, after_commit: AfterCommit) -> Committed | None:
        """See :class:`~broadcast_lifecycle.stores.base.ChangesInPlace`: PostgreSQL only (``None`` elsewhere)."""
        sql = self._entity(kind.name)
        statement = sql.in_place.get(trigger.value)
        if statement is None:
            return None
        delta = slots if trigger is Trigger.ACCEPT else -slots
        event_id = str(uuid.uuid4())
        params = {"id": sql.id_param(entity_id), "kind": kind.name, "key": str(entity_id), "delta": delta, "at": at,
                  "transporter": transporter_id, "trigger": trigger.value, "ev_id": event_id,
                  "ev_name": kind.event_name(Topic.STATE_CHANGED),
                  "ev_id_field": kind.id_field, "entity_id": entity_id}
        with self._cursor(None, write=True, single=True) as cur:
            cur.execute(statement, params)
            row = cur.fetchone()
        if row is None:
            if trigger is not Trigger.ACCEPT:
                return None
            return self._fill_in_place(sql, kind, params, slots, after_commit)
        event, after = self._in_place_result(kind, entity_id, trigger, slots, event_id, row)
        return self._committed(Committed(after, (event,)), after_commit, None)

    def _fill_in_place(self, sql: EntitySql, kind: KindConfig, params: dict[str, Any], slots: int,
                       after_commit: AfterCommit) -> Committed | None:
        """The accept that fills the broadcast: the guarded UPDATE takes the row lock, then the
        recipients are read (so a concurrent notify_more is seen or refused) for the terminal event."""
        params = {**params, "ev_id": str(uuid.uuid4())}
        try:
            with self._cursor(None, write=True) as cur:
                cur.execute(sql.in_place["fill"], params)
                row = cur.fetchone()
                if row is None:
                    raise LostRace
                entity_id = params["entity_id"]
                changed, after = self._in_place_result(kind, entity_id, Trigger.ACCEPT, slots, params["ev_id"], row)
                cur.execute(self._lib.list_recipients, params)
                everyone = (Recipient("customer", after.customer_id),
                            *(Recipient("transporter", t) for (t,) in cur.fetchall()))
                filled = replace(changed, event_id=str(uuid.uuid4()), name=kind.event_name(Topic.FULLY_FILLED),
                                 topic=Topic.FULLY_FILLED, recipients=everyone)
                cur.execute(self._lib.add_event, {**params, **event_params(filled, params["at"])})
        except LostRace:
            return None
        return self._committed(Committed(after, (changed, filled)), after_commit, None)

    @staticmethod
    def _in_place_result(kind: KindConfig, entity_id: EntityId, trigger: Trigger, slots: int, event_id: str,
                         row: Sequence[Any]) -> tuple[BroadcastEvent, BroadcastSnapshot]:
        """The state-changed event and the new snapshot from an in-place statement's RETURNING row."""
        customer_id, requested, filled, version, changed_at, created_at, expires_at, status = row
        after = BroadcastSnapshot(kind.name, entity_id, customer_id, BroadcastStatus(status), requested, filled,
                                  version, utc(changed_at), utc(created_at), utc(expires_at) if expires_at else None)
        if trigger is Trigger.ACCEPT:
            previous = BroadcastStatus.ACTIVE if filled == slots else BroadcastStatus.PARTIALLY_FILLED
        else:
            previous = BroadcastStatus.FULLY_FILLED if filled + slots == requested else BroadcastStatus.PARTIALLY_FILLED
        event = BroadcastEvent(event_id, kind.event_name(Topic.STATE_CHANGED), Topic.STATE_CHANGED, kind.name,
                               kind.id_field, entity_id, (Recipient("customer", customer_id),), after.status, previous,
                               after.state_changed_at, version, filled, requested)
        return event, after
