"""The raw baseline of ``bench_lifecycle.py``: the whole lifecycle on a bare driver connection
(``sqlite3`` or psycopg), doing per transition the work the library does, in one transaction.

Per command: read the row, check the trigger against the state, compare-and-set UPDATE (by version),
the recipients' rows (notified, or the accepting transporter's holding), one history row, and the
outbox rows: the state change to the customer, the offer to the transporters a start_broadcast
notifies, the offer again at activate to every notified transporter holding no slot (the re-offer,
read in the same transaction) and, for a transition into fully_filled, completed, cancelled or
expired, the announcement to the customer and every notified transporter (read in the same
transaction).
Creation inserts the row, its history row and its event. Values are written the way SQLAlchemy
writes them, so the library could read these rows (and the events are the library's, ids aside).

On PostgreSQL ``BEGIN`` and the read travel together (client-side binding, one simple query), then
one round trip per statement and the ``COMMIT``: the plain way to write it with a driver.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

__all__ = ["RawLifecycle", "SQLITE_DURABLE"]

KIND = "booking"
ID_FIELD = "bookingId"
SQLITE_DURABLE = ("PRAGMA busy_timeout = 30000", "PRAGMA journal_mode = WAL", "PRAGMA synchronous = FULL",
                  "PRAGMA temp_store = MEMORY", "PRAGMA cache_size = -32768")
"""What the raw sqlite3 connection sets: the library's settings with ``SqliteSettings(synchronous="FULL")``."""

_NEXT = {  # trigger: (from states, to state or None when the fill decides)
    "start_broadcast": ({"created"}, "broadcasting"),
    "activate": ({"broadcasting"}, "active"),
    "accept": ({"active", "partially_filled"}, None),
    "start_trip": ({"fully_filled"}, "in_progress"),
    "complete": ({"in_progress"}, "completed"),
    "cancel": ({"created", "broadcasting", "active", "partially_filled", "fully_filled"}, "cancelled"),
}
_REOFFERS = {("activate", "broadcasting")}
"""(trigger, from-state) pairs that offer the broadcast again (the library's ``lifecycle.REOFFERS`` that
these scenarios reach)."""
_TO_ALL = {"fully_filled": "BOOKING_FULLY_FILLED", "completed": "BOOKING_COMPLETED", "cancelled": "BOOKING_CANCELLED"}

LOAD = ("SELECT status, customer_id, slots_requested, slots_filled, version, expires_at FROM bl_broadcasts "
        "WHERE id = %s AND kind = %s")
INSERT = ("INSERT INTO bl_broadcasts (kind, status, customer_id, state_changed_at, created_at, version, "
          "slots_requested, slots_filled, expires_at) VALUES (%s, 'created', %s, %s, %s, 1, %s, 0, NULL) RETURNING id")
UPDATE = ("UPDATE bl_broadcasts SET status = %s, state_changed_at = %s, version = %s, "
          "slots_filled = slots_filled + %s, expires_at = %s WHERE id = %s AND kind = %s AND version = %s")
NOTIFY = ("INSERT INTO bl_recipients (kind, entity_id, transporter_id, notified_at, slots_held) "
          "VALUES (%s, %s, %s, %s, 0) ON CONFLICT DO NOTHING")
HOLD = ("UPDATE bl_recipients SET slots_held = slots_held + %s, response = %s, responded_at = %s "
        "WHERE kind = %s AND entity_id = %s AND transporter_id = %s")
EVERYONE = ("SELECT transporter_id FROM bl_recipients WHERE kind = %s AND entity_id = %s "
            "ORDER BY notified_at, transporter_id")
NOT_HOLDING = ("SELECT transporter_id FROM bl_recipients WHERE kind = %s AND entity_id = %s AND slots_held = 0 "
               "ORDER BY notified_at, transporter_id")
HISTORY = ('INSERT INTO bl_transition_history (kind, entity_id, from_status, to_status, "trigger", actor, reason, '
           "meta, at, version) VALUES (%s, %s, %s, %s, %s, %s, NULL, {json}, %s, %s)")
OUTBOX = ("INSERT INTO bl_outbox (event_id, name, topic, kind, id_field, entity_id, status, previous_status, "
          'state_changed_at, version, slots_filled, slots_requested, expires_at, "trigger", reason, recipients, '
          "created_at, attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, {json}, %s, 0)")


class RawLifecycle:
    """Commands on one connection; ``pg`` picks the dialect (psycopg with a DSN, else a sqlite3 path)."""

    def __init__(self, target: str, pg: bool) -> None:
        self.pg = pg
        if pg:
            self.conn: Any = psycopg.connect(target, autocommit=True)
            self.first: Any = psycopg.ClientCursor(self.conn)
            json_param = "CAST(%s AS JSON)"
        else:
            self.conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
            for pragma in SQLITE_DURABLE:
                self.conn.execute(pragma)
            json_param = "%s"
        self.sql = {name: self._dialect(text.replace("{json}", json_param)) for name, text in (
            ("load", LOAD), ("insert", INSERT), ("update", UPDATE), ("notify", NOTIFY), ("hold", HOLD),
            ("everyone", EVERYONE), ("not_holding", NOT_HOLDING), ("history", HISTORY), ("outbox", OUTBOX))}
        self.cur = self.conn.cursor()

    def _dialect(self, sql: str) -> str:
        return sql if self.pg else sql.replace("%s", "?")

    def _now(self) -> Any:
        return self._stamp(datetime.now(timezone.utc))

    def _stamp(self, at: datetime) -> Any:
        """``at`` as the driver takes it (SQLite: the text SQLAlchemy writes, naive UTC)."""
        return at if self.pg else at.replace(tzinfo=None).isoformat(" ", "microseconds")

    def _begin_and_load(self, entity_id: int) -> tuple[Any, ...]:
        if self.pg:
            self.first.execute("BEGIN; " + LOAD, (entity_id, KIND))
            self.first.nextset()
            row = self.first.fetchone()
        else:
            self.cur.execute("BEGIN IMMEDIATE")
            row = self.cur.execute(self.sql["load"], (entity_id, KIND)).fetchone()
        if row is None:
            raise RuntimeError(f"raw: booking {entity_id} not found")
        return tuple(row)

    def create(self, customer: str, slots: int) -> int:
        """Insert a booking in ``created``, its history row and its event; returns its id."""
        cur, now = self.cur, self._now()
        cur.execute("BEGIN" if self.pg else "BEGIN IMMEDIATE")
        try:
            cur.execute(self.sql["insert"], (KIND, customer, now, now, slots))
            (entity_id,) = cur.fetchone()
            key = str(entity_id)
            cur.execute(self.sql["history"], (KIND, key, None, "created", "create", customer, "{}", now, 1))
            cur.execute(self.sql["outbox"], self._event("BROADCAST_STATE_CHANGED", "state_changed", key, "created",
                                                        None, now, 1, 0, slots, None, "create",
                                                        [["customer", customer]], now))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return int(entity_id)

    def command(self, entity_id: int, trigger: str, actor: str, transporter: str | None = None,
                notify: Sequence[str] = (), ttl: timedelta | None = None) -> str:
        """Apply ``trigger`` (accept by ``transporter`` of one slot; start_broadcast notifying ``notify``;
        activate with ``ttl``); returns the new state. Raises when the state does not allow it."""
        cur, key = self.cur, str(entity_id)
        status, customer, requested, filled, version, expires_at = self._begin_and_load(entity_id)
        try:
            allowed, to = _NEXT[trigger]
            if status not in allowed:
                raise RuntimeError(f"raw: {trigger} refused in {status}")
            delta = 1 if trigger == "accept" else 0
            if to is None:
                to = "fully_filled" if filled + delta == requested else "partially_filled"
            now = self._now()
            if ttl is not None:
                expires_at = self._stamp(datetime.now(timezone.utc) + ttl)
            cur.execute(self.sql["update"], (to, now, version + 1, delta, expires_at, entity_id, KIND, version))
            if cur.rowcount != 1:
                raise RuntimeError("raw: compare-and-set lost")
            if notify:
                cur.executemany(self.sql["notify"], [(KIND, key, t, now) for t in notify])
            if delta:
                cur.execute(self.sql["hold"], (delta, trigger, now, KIND, key, transporter))
            cur.execute(self.sql["history"], (KIND, key, status, to, trigger, actor, "{}", now, version + 1))
            events = [self._event("BROADCAST_STATE_CHANGED", "state_changed", key, to, status, now, version + 1,
                                  filled + delta, requested, expires_at, trigger, [["customer", customer]], now)]
            if notify:  # the offer, one event addressed to each transporter notified now
                events.append(self._event("BOOKING_OFFERED", "offered", key, to, status, now, version + 1,
                                          filled + delta, requested, expires_at, trigger,
                                          [["transporter", t] for t in notify], now))
            if (trigger, status) in _REOFFERS:  # offered again to every notified transporter holding no slot
                cur.execute(self.sql["not_holding"], (KIND, key))
                if offered := [["transporter", t] for (t,) in cur.fetchall()]:
                    events.append(self._event("BOOKING_OFFERED", "offered", key, to, status, now, version + 1,
                                              filled + delta, requested, expires_at, trigger, offered, now))
            if to in _TO_ALL:
                cur.execute(self.sql["everyone"], (KIND, key))
                everyone = [["customer", customer], *(["transporter", t] for (t,) in cur.fetchall())]
                events.append(self._event(_TO_ALL[to], to, key, to, status, now, version + 1, filled + delta,
                                          requested, expires_at, trigger, everyone, now))
            cur.executemany(self.sql["outbox"], events)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return to

    @staticmethod
    def _event(name: str, topic: str, key: str, status: str, previous: str | None, changed_at: Any, version: int,
               filled: int, requested: int, expires_at: Any, trigger: str, recipients: list[list[str]],
               now: Any) -> tuple[Any, ...]:
        return (str(uuid.uuid4()), name, topic, KIND, ID_FIELD, key, status, previous, changed_at, version, filled,
                requested, expires_at, trigger, json.dumps(recipients), now)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()
