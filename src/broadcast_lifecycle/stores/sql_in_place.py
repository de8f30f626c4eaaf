"""Accept and release in place on PostgreSQL: the built-in guards in the UPDATE's WHERE, no read first
(see :class:`~broadcast_lifecycle.stores.base.ChangesInPlace` and ``sql_text.pg_change_in_place``)."""

from __future__ import annotations

import contextlib
import json
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
from .base import AfterCommit, Committed, Loaded
from .sql_plumbing import SqlPlumbing, utc
from .sql_text import EntitySql

__all__ = ["SqlInPlace"]


def _pipeline(connection: Any) -> contextlib.AbstractContextManager[Any]:
    """psycopg 3 sends the statements of the block in one round trip; other drivers one by one."""
    pipeline = getattr(connection, "pipeline", None)
    return pipeline() if pipeline is not None else contextlib.nullcontext()


_ACCEPTING = frozenset({BroadcastStatus.ACTIVE, BroadcastStatus.PARTIALLY_FILLED})


class SqlInPlace(SqlPlumbing):
    """In-place accept and release of :class:`~broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore`."""

    def change_in_place(self, kind: KindConfig, trigger: Trigger, entity_id: EntityId, transporter_id: str,
                        slots: int, at: datetime, after_commit: AfterCommit) -> Committed | Loaded | None:
        """See :class:`~broadcast_lifecycle.stores.base.ChangesInPlace`: PostgreSQL only (``None`` elsewhere)."""
        sql = self._entity(kind.name)
        statement = sql.in_place.get(trigger.value)
        if statement is None:
            return None
        delta = slots if trigger is Trigger.ACCEPT else -slots
        params = {"id": sql.id_param(entity_id), "kind": kind.name, "key": str(entity_id), "delta": delta, "at": at,
                  "transporter": transporter_id, "trigger": trigger.value, "ev_id": str(uuid.uuid4()),
                  "ev_name": kind.event_name(Topic.STATE_CHANGED),
                  "ev_id_field": kind.id_field, "entity_id": entity_id}
        with self._cursor(None, write=True, single=True) as cur:
            cur.execute(statement, params)
            row = cur.fetchone()
            if row is None:
                cur.execute(sql.load, params)  # a fresh snapshot: the row as the guards just saw it
                found = cur.fetchone()
        if row is not None:
            event, after = self._in_place_result(kind, entity_id, trigger, slots, params["ev_id"], row)
            return self._committed(Committed(after, (event,)), after_commit, None)
        loaded = self._loaded(sql, kind.name, entity_id, found)
        snap = loaded.snapshot
        if (trigger is Trigger.ACCEPT and snap.status in _ACCEPTING
                and snap.slots_filled + slots == snap.slots_requested):
            return self._fill_in_place(sql, kind, params, slots, after_commit)
        return loaded

    def _fill_in_place(self, sql: EntitySql, kind: KindConfig, params: dict[str, Any], slots: int,
                       after_commit: AfterCommit) -> Committed | Loaded:
        """The accept that fills the broadcast: one transaction sent in one round trip (a psycopg
        pipeline). The guarded UPDATE takes the row lock, then a second statement, whose fresh
        snapshot sees every recipient a concurrent ``notify_more`` committed before the lock was
        ours, writes the ``fully_filled`` event (see ``pg_fill_event``); the row lock is never held
        while this thread waits for the server or for the GIL. The row is read back after COMMIT."""
        params = {**params, "filled_id": str(uuid.uuid4()), "filled_name": kind.event_name(Topic.FULLY_FILLED)}
        entity_id = params["entity_id"]
        with self._cursor(None, write=True, single=True) as cur:
            raw = cur.connection
            control, event_cursor, back = raw.cursor(), raw.cursor(), raw.cursor()
            try:
                with _pipeline(raw):
                    control.execute("BEGIN")
                    cur.execute(sql.in_place["fill"], params)
                    event_cursor.execute(sql.in_place["filled_event"], params)
                    control.execute("COMMIT")
                    back.execute(sql.load, params)
            except BaseException:
                with contextlib.suppress(Exception):  # outside a transaction ROLLBACK only warns
                    control.execute("ROLLBACK")
                raise
            row = cur.fetchone()
            written = event_cursor.fetchone()
            found = back.fetchone()
        if row is None:
            return self._loaded(sql, kind.name, entity_id, found)
        changed, after = self._in_place_result(kind, entity_id, Trigger.ACCEPT, slots, params["ev_id"], row)
        assert written is not None, "the fill applied, so its fully_filled event was written"
        (addressed,) = written
        if isinstance(addressed, str):
            addressed = json.loads(addressed)
        filled = replace(changed, event_id=params["filled_id"], name=params["filled_name"], topic=Topic.FULLY_FILLED,
                         recipients=tuple(Recipient(role, rid) for role, rid in addressed))
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
