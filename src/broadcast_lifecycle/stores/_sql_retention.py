"""The SQL store's retention: deleting delivered events, old idempotency records and finished
histories in bounded batches, each its own short transaction.

A batch picks at most ``limit`` rows and deletes them by primary key. On PostgreSQL the pick reads
an index that holds only candidates (``ix_bl_outbox_delivered``, ``ix_bl_idempotency_created``,
``ix_bl_history_terminal``) with ``FOR UPDATE SKIP LOCKED``: a row a writer or another pruner holds is
left for the next run instead of waited for. On SQLite a batch's writes are one ``BEGIN IMMEDIATE``
transaction, so writers wait for one batch at most; delivered events, which have no index there, are
found first by a read in insertion order (in WAL mode a read blocks no writer), then deleted by
rowid with the condition checked again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, literal_column, select, text, tuple_

from ._sql_connections import SqlConnections
from .base import PruneTarget
from .schema import TERMINAL_HISTORY_SQL, deliveries_table, history_table, idempotency_table, outbox_table

__all__ = ["SqlRetention"]


class SqlRetention:
    """The retention part of :class:`~broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore`, on the
    store's connections (``db``)."""

    def __init__(self, db: SqlConnections) -> None:
        self._db = db

    def prune(self, target: PruneTarget, before: datetime, limit: int) -> int:
        """See :meth:`BroadcastStore.prune`."""
        if target is PruneTarget.OUTBOX:
            return self._prune_outbox(before, limit)
        with self._db.core(None, write=True) as conn:
            if target is PruneTarget.IDEMPOTENCY:
                i = idempotency_table.c
                batch = (select(i.key).where(i.created_at < before).order_by(i.created_at).limit(limit)
                         .with_for_update(skip_locked=True))
                return len(conn.execute(delete(idempotency_table).where(i.key.in_(batch.scalar_subquery()))
                                        .returning(i.key)).all())
            # A terminal transition is a broadcast's last history row (terminal states are absorbing)
            # and is stamped with its last change: finding it finds a whole history to drop.
            h = history_table.c
            finished = conn.execute(
                select(h.kind, h.entity_id).where(text(TERMINAL_HISTORY_SQL), h.at < before)
                .order_by(h.at).limit(limit).with_for_update(skip_locked=True)).all()
            if finished:
                conn.execute(delete(history_table).where(
                    tuple_(h.kind, h.entity_id).in_([tuple(row) for row in finished])))
            return len(finished)

    def _prune_outbox(self, before: datetime, limit: int) -> int:
        o = outbox_table.c
        done = [o.delivered_at.is_not(None), o.delivered_at < before]
        if self._db.pg:
            batch: Any = (select(o.event_id).where(*done).order_by(o.delivered_at).limit(limit)
                          .with_for_update(skip_locked=True).scalar_subquery())
            doomed = o.event_id.in_(batch)
        else:
            rowid: Any = literal_column("rowid")
            with self._db.core(None) as conn:
                found = conn.execute(select(rowid).select_from(outbox_table).where(*done).order_by(rowid)
                                     .limit(limit)).scalars().all()
            if not found:
                return 0
            doomed = rowid.in_(found)
        with self._db.core(None, write=True) as conn:
            gone = conn.execute(delete(outbox_table).where(doomed, *done).returning(o.event_id)).scalars().all()
            if gone:  # their per-receiver rows, if a pass ever wrote any
                d = deliveries_table.c
                conn.execute(delete(deliveries_table).where(d.event_id == bindparam("gone")),
                             [{"gone": event_id} for event_id in gone])
        return len(gone)
