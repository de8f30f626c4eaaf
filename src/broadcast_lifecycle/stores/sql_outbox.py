"""The SQL store's outbox: reading, claiming and settling events written with their transitions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, or_, select, update

from ..records import EntityId
from .base import OutboxBucket, OutboxEntry
from .schema import outbox_table
from .sql_plumbing import SqlPlumbing, utc

__all__ = ["SqlOutbox"]


class SqlOutbox(SqlPlumbing):
    """Outbox operations of :class:`~broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore`."""

    def pending_events(self, limit: int, created_before: datetime | None = None) -> Sequence[OutboxEntry]:
        """See :meth:`BroadcastStore.pending_events`."""
        o = outbox_table.c
        query = select(outbox_table).where(o.delivered_at.is_(None), o.dead_at.is_(None))
        if created_before is not None:
            query = query.where(o.created_at < created_before)
        with self._core(None) as conn:
            rows = conn.execute(query.order_by(o.created_at).limit(limit)).mappings().all()
        return [self._entry(row) for row in rows]

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
        with self._core(None, write=True) as conn:
            rows = conn.execute(claim).mappings().all()
        return sorted((self._entry(row) for row in rows), key=lambda e: e.created_at)

    def mark_delivered(self, event_ids: Sequence[str], at: datetime) -> None:
        """See :meth:`BroadcastStore.mark_delivered`."""
        params = [{"event_id": event_id, "at": self._lib.time.bind(at)} for event_id in event_ids]
        with self._cursor(None, write=True, single=len(params) == 1) as cur:
            cur.executemany(self._lib.mark_delivered, params)

    def record_failure(self, event_id: str, error: str, at: datetime, retry_at: datetime | None) -> None:
        """See :meth:`BroadcastStore.record_failure`."""
        o = outbox_table.c
        values: dict[str, Any] = {"attempts": o.attempts + 1, "last_error": error[:4000], "next_attempt_at": retry_at}
        if retry_at is None:
            values["dead_at"] = at
        with self._core(None, write=True) as conn:
            conn.execute(update(outbox_table).where(o.event_id == event_id).values(values))

    def dead_events(self, limit: int) -> Sequence[OutboxEntry]:
        """See :meth:`BroadcastStore.dead_events`."""
        o = outbox_table.c
        query = select(outbox_table).where(o.dead_at.is_not(None)).order_by(o.dead_at.desc()).limit(limit)
        with self._core(None) as conn:
            rows = conn.execute(query).mappings().all()
        return [self._entry(row) for row in rows]

    def _entry(self, row: Mapping[str, Any]) -> OutboxEntry:
        return OutboxEntry(self._rebuild(row), utc(row["created_at"]), row["attempts"], row["last_error"],
                           utc(row["next_attempt_at"]) if row["next_attempt_at"] else None,
                           utc(row["dead_at"]) if row["dead_at"] else None,
                           utc(row["delivered_at"]) if row["delivered_at"] else None)

    def outbox_summary(self) -> dict[str, OutboxBucket]:
        """See :class:`~broadcast_lifecycle.stores.base.InspectsOutbox` (one grouped query)."""
        o = outbox_table.c
        state = case((o.dead_at.is_not(None), "dead"), (o.attempts > 0, "retrying"), else_="pending")
        query = (select(state, func.count(), func.min(o.created_at)).where(o.delivered_at.is_(None))
                 .group_by(state))
        with self._core(None) as conn:
            rows = conn.execute(query).all()
        return {name: OutboxBucket(count, utc(oldest)) for name, count, oldest in rows}

    def outbox_of(self, kind: str, entity_id: EntityId) -> Sequence[OutboxEntry]:
        """See :class:`~broadcast_lifecycle.stores.base.InspectsOutbox`."""
        o = outbox_table.c
        query = (select(outbox_table).where(o.kind == kind, o.entity_id == str(entity_id))
                 .order_by(o.created_at, o.version, o.name))
        with self._core(None) as conn:
            rows = conn.execute(query).mappings().all()
        return [self._entry(row) for row in rows]
