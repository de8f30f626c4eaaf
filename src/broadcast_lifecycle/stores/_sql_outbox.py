"""The SQL store's outbox: reading, claiming and settling events written with their transitions.

Per-receiver state lives in ``bl_deliveries``, written only by :meth:`SqlOutbox.record_attempt` (a
pass in which a receiver raised); ``mark_delivered``, the usual path, touches ``bl_outbox`` alone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, case, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..records import EntityId
from ._sql_connections import SqlConnections
from ._sql_tables import StoreTables, utc
from .base import OutboxBucket, OutboxEntry
from .outbox_state import DeadLetter, DeliveryAttempt, ReceiverDelivery
from .schema import deliveries_table, outbox_table

_ERROR_LENGTH = 4000
"""Error texts are cut to this length (a traceback-sized message is not what an operator needs)."""

__all__ = ["SqlOutbox"]


class SqlOutbox:
    """The outbox part of :class:`~broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore`, on the store's
    connections (``db``) and tables (``schema``)."""

    def __init__(self, db: SqlConnections, schema: StoreTables) -> None:
        self._db = db
        self._schema = schema

    def pending_events(self, limit: int, created_before: datetime | None = None) -> Sequence[OutboxEntry]:
        """See :meth:`BroadcastStore.pending_events`."""
        o = outbox_table.c
        query = select(outbox_table).where(o.delivered_at.is_(None), o.dead_at.is_(None))
        if created_before is not None:
            query = query.where(o.created_at < created_before)
        with self._db.core(None) as conn:
            rows = conn.execute(query.order_by(o.created_at).limit(limit)).mappings().all()
            return self._with_receivers(conn, [self._entry(row) for row in rows])

    def claim_events(self, now: datetime, limit: int, created_before: datetime,
                     lease_until: datetime) -> Sequence[OutboxEntry]:
        """See :meth:`BroadcastStore.claim_events`. PostgreSQL skips rows another relay has locked."""
        o = outbox_table.c
        due = (select(o.event_id)
               .where(o.delivered_at.is_(None), o.dead_at.is_(None), o.created_at < created_before,
                      or_(o.next_attempt_at.is_(None), o.next_attempt_at <= now))
               .order_by(o.created_at).limit(limit).with_for_update(skip_locked=True))
        claim = (update(outbox_table).where(o.event_id.in_(due.scalar_subquery()))
                 .values(next_attempt_at=lease_until).returning(outbox_table))
        with self._db.core(None, write=True) as conn:
            rows = conn.execute(claim).mappings().all()
            entries = self._with_receivers(conn, [self._entry(row) for row in rows])
        return sorted(entries, key=lambda e: e.created_at)

    def mark_delivered(self, event_ids: Sequence[str], at: datetime) -> None:
        """See :meth:`BroadcastStore.mark_delivered`."""
        params = [{"event_id": event_id, "at": self._schema.lib.time.bind(at)} for event_id in event_ids]
        with self._db.cursor(None, write=True, single=len(params) == 1) as cur:
            cur.executemany(self._schema.lib.mark_delivered, params)

    def record_attempt(self, attempt: DeliveryAttempt) -> None:
        """See :meth:`BroadcastStore.record_attempt`: the receivers' rows upserted and the event's
        row settled in one transaction."""
        o, d = outbox_table.c, deliveries_table.c
        values: dict[str, Any] = {
            "next_attempt_at": attempt.next_attempt_at,
            "delivered_at": attempt.at if attempt.outcome == "delivered" else None,
            "dead_at": attempt.at if attempt.outcome == "dead" else None,
        }
        if attempt.failed:
            values.update(attempts=o.attempts + 1, last_error=(attempt.error or "")[:_ERROR_LENGTH])
        rows = [{"event_id": attempt.event_id, "receiver": r.receiver, "attempts": r.attempts,
                 "last_error": r.last_error[:_ERROR_LENGTH] if r.last_error else None,
                 "next_attempt_at": r.next_attempt_at, "delivered_at": r.delivered_at, "dead_at": r.dead_at}
                for r in attempt.receivers]
        with self._db.core(None, write=True) as conn:
            if rows:
                upsert = (postgresql.insert if self._db.pg else sqlite.insert)(deliveries_table)
                conn.execute(upsert.on_conflict_do_update(
                    index_elements=[d.event_id, d.receiver],
                    set_={name: upsert.excluded[name] for name in
                          ("attempts", "last_error", "next_attempt_at", "delivered_at", "dead_at")}), rows)
            conn.execute(update(outbox_table).where(o.event_id == attempt.event_id).values(values))

    def dead_letters(self, limit: int) -> Sequence[DeadLetter]:
        """See :meth:`BroadcastStore.dead_letters`."""
        d = deliveries_table.c
        query = (select(outbox_table, d.receiver, d.attempts.label("receiver_attempts"),
                        d.last_error.label("receiver_error"), d.dead_at.label("receiver_dead_at"))
                 .join(deliveries_table, d.event_id == outbox_table.c.event_id)
                 .where(d.dead_at.is_not(None)).order_by(d.dead_at.desc()).limit(limit))
        with self._db.core(None) as conn:
            rows = conn.execute(query).mappings().all()
        return [DeadLetter(event=self._entry(row).event, receiver=row["receiver"], attempts=row["receiver_attempts"],
                           last_error=row["receiver_error"], dead_at=utc(row["receiver_dead_at"]),
                           created_at=utc(row["created_at"]))
                for row in rows]

    def _with_receivers(self, conn: Connection, entries: list[OutboxEntry]) -> list[OutboxEntry]:
        """``entries`` with their per-receiver state (one query, by primary key)."""
        if not entries:
            return entries
        d = deliveries_table.c
        rows = conn.execute(select(deliveries_table).where(d.event_id.in_([e.event.event_id for e in entries]))
                            .order_by(d.event_id, d.receiver)).mappings().all()
        if not rows:
            return entries
        states: dict[str, list[ReceiverDelivery]] = defaultdict(list)
        for row in rows:
            states[row["event_id"]].append(ReceiverDelivery(
                receiver=row["receiver"], attempts=row["attempts"], last_error=row["last_error"],
                next_attempt_at=_maybe_utc(row["next_attempt_at"]), delivered_at=_maybe_utc(row["delivered_at"]),
                dead_at=_maybe_utc(row["dead_at"])))
        return [replace(e, receivers=tuple(states[e.event.event_id])) if e.event.event_id in states else e
                for e in entries]

    def _entry(self, row: Mapping[str, Any]) -> OutboxEntry:
        return OutboxEntry(self._schema.rebuild(row), utc(row["created_at"]), row["attempts"], row["last_error"],
                           _maybe_utc(row["next_attempt_at"]), _maybe_utc(row["dead_at"]),
                           _maybe_utc(row["delivered_at"]))

    def outbox_summary(self) -> dict[str, OutboxBucket]:
        """See :class:`~broadcast_lifecycle.stores.base.InspectsOutbox` (one grouped query)."""
        o = outbox_table.c
        state = case((o.dead_at.is_not(None), "dead"), (o.attempts > 0, "retrying"), else_="pending")
        query = (select(state, func.count(), func.min(o.created_at)).where(o.delivered_at.is_(None))
                 .group_by(state))
        with self._db.core(None) as conn:
            rows = conn.execute(query).all()
        return {name: OutboxBucket(count, utc(oldest)) for name, count, oldest in rows}

    def outbox_of(self, kind: str, entity_id: EntityId) -> Sequence[OutboxEntry]:
        """See :class:`~broadcast_lifecycle.stores.base.InspectsOutbox`."""
        o = outbox_table.c
        query = (select(outbox_table).where(o.kind == kind, o.entity_id == str(entity_id))
                 .order_by(o.created_at, o.version, o.name))
        with self._db.core(None) as conn:
            rows = conn.execute(query).mappings().all()
            return self._with_receivers(conn, [self._entry(row) for row in rows])


def _maybe_utc(value: datetime | None) -> datetime | None:
    return utc(value) if value is not None else None
