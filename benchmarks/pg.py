"""Raw-driver baselines for ``bench_sql.py``: psycopg versions of one transition, libpq protocol
tracing (round trips), and cursors that clock the time spent inside the driver.

Everything here works on the library's schema (``bl_broadcasts``, ``bl_recipients``,
``bl_transition_history``, ``bl_outbox``) but uses none of the library's code.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import psycopg
from pg_trace import pg_trace, round_trips

__all__ = [
    "DRIVER",
    "DriverClock",
    "RawPgFive",
    "RawPgOne",
    "TimedPgClientCursor",
    "TimedPgCursor",
    "next_state",
    "pg_trace",
    "round_trips",
]

Row = tuple[Any, ...]


class DriverClock:
    """Seconds spent in, and calls of, the driver's execute methods (the timed cursors add to it),
    in all and by statement (the statement's first 24 characters)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.by_statement: dict[str, float] = {}

    def reset(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.by_statement = {}

    def add(self, started: float, args: tuple[Any, ...]) -> None:
        elapsed = time.perf_counter() - started
        self.seconds += elapsed
        self.calls += 1
        head = str(args[0])[:24] if args else "?"
        self.by_statement[head] = self.by_statement.get(head, 0.0) + elapsed


DRIVER = DriverClock()
"""The one clock every timed cursor reports to (the benchmark runs one thing at a time)."""


class TimedPgCursor(psycopg.Cursor[Row]):
    """A psycopg cursor that adds each execute (parameter dumping, the round trip, the server's
    work, reading the result) to :data:`DRIVER`."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().execute(*args, **kwargs)
        finally:
            DRIVER.add(started, args)

    def executemany(self, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            super().executemany(*args, **kwargs)
        finally:
            DRIVER.add(started, args)


class TimedPgClientCursor(psycopg.ClientCursor[Row]):
    """:class:`TimedPgCursor` for client-side binding."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().execute(*args, **kwargs)
        finally:
            DRIVER.add(started, args)


def next_state(status: str, requested: int, filled: int, held: int | None, accept: bool) -> tuple[str, int]:
    """A raw version's own guard and next state for accept/release of one slot: (status, delta)."""
    if accept:
        if status not in ("active", "partially_filled") or held is None or filled + 1 > requested:
            raise RuntimeError(f"raw accept refused in {status}")
        delta = 1
    else:
        if status not in ("partially_filled", "fully_filled") or not held:
            raise RuntimeError(f"raw release refused in {status}")
        delta = -1
    filled += delta
    return ("active" if filled == 0 else "fully_filled" if filled == requested else "partially_filled"), delta


LOAD_FOR_UPDATE = (
    "SELECT status, customer_id, slots_requested, slots_filled, version, expires_at, "
    "(SELECT slots_held FROM bl_recipients WHERE kind = %s AND entity_id = %s AND transporter_id = %s) "
    "FROM bl_broadcasts WHERE id = %s AND kind = %s FOR UPDATE"
)
UPDATE = (
    "UPDATE bl_broadcasts SET status = %s, state_changed_at = %s, version = %s, slots_filled = slots_filled + %s, "
    "expires_at = %s WHERE id = %s AND kind = %s AND version = %s"
)
HOLD = (
    "UPDATE bl_recipients SET slots_held = slots_held + %s, response = %s, responded_at = %s "
    "WHERE kind = %s AND entity_id = %s AND transporter_id = %s"
)
HISTORY = (
    'INSERT INTO bl_transition_history (kind, entity_id, from_status, to_status, "trigger", actor, reason, meta, '
    "at, version) VALUES (%s, %s, %s, %s, %s, %s, %s, CAST(%s AS JSON), %s, %s)"
)
OUTBOX = (
    "INSERT INTO bl_outbox (event_id, name, topic, kind, id_field, entity_id, status, previous_status, "
    'state_changed_at, version, slots_filled, slots_requested, expires_at, "trigger", reason, recipients, '
    "created_at, attempts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, CAST(%s AS JSON), %s, 0)"
)


class RawPgFive:
    """The issue's baseline: BEGIN+SELECT ... FOR UPDATE (one round trip: client-side binding sends
    both in one simple query), UPDATE, INSERT history, INSERT outbox, COMMIT. ``hold=True`` adds the
    slot-holder UPDATE the library also makes (six round trips)."""

    def __init__(self, dsn: str, kind: str, entity_id: int, transporter: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, cursor_factory=TimedPgCursor)
        self.first = TimedPgClientCursor(self.conn)
        self.cur = self.conn.cursor()
        self.kind, self.entity_id, self.key, self.transporter = kind, entity_id, str(entity_id), transporter

    def transition(self, accept: bool, hold: bool) -> None:
        """Accept (or release) one slot."""
        first, cur, kind, key, transporter = self.first, self.cur, self.kind, self.key, self.transporter
        first.execute("BEGIN; " + LOAD_FOR_UPDATE, (kind, key, transporter, self.entity_id, kind))
        first.nextset()
        row = first.fetchone()
        if row is None:
            raise RuntimeError("raw: broadcast not found")
        status, customer, requested, filled, version, expires_at, held = row
        if not hold and held is not None:  # this version keeps no holdings: any notified transporter may release
            held = 1
        to, delta = next_state(status, requested, filled, held, accept)
        trigger = "accept" if accept else "release"
        now = datetime.now(timezone.utc)
        try:
            cur.execute(UPDATE, (to, now, version + 1, delta, expires_at, self.entity_id, kind, version))
            if hold:
                cur.execute(HOLD, (delta, trigger, now, kind, key, transporter))
            cur.execute(HISTORY, (kind, key, status, to, trigger, transporter, None, "{}", now, version + 1))
            cur.execute(OUTBOX, (str(uuid.uuid4()), "BROADCAST_STATE_CHANGED", "state_changed", kind, "bookingId", key,
                                 to, status, now, version + 1, filled + delta, requested, expires_at, trigger, None,
                                 json.dumps([["customer", customer]]), now))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def step(self, hold: bool) -> Callable[[int], None]:
        """``n`` transitions, accept and release alternately."""
        def run(n: int) -> None:
            for _ in range(n // 2):
                self.transition(True, hold)
                self.transition(False, hold)
        return run


ONE_STATEMENT = """
WITH upd AS (
  UPDATE bl_broadcasts SET slots_filled = slots_filled + %(delta)s, version = version + 1, state_changed_at = %(at)s,
    status = CASE WHEN slots_filled + %(delta)s = 0 THEN 'active'
                  WHEN slots_filled + %(delta)s = slots_requested THEN 'fully_filled' ELSE 'partially_filled' END
  WHERE id = %(id)s AND kind = %(kind)s AND status = ANY(%(from_states)s)
    AND slots_filled + %(delta)s BETWEEN 0 AND slots_requested
    AND (expires_at IS NULL OR expires_at > %(at)s)
    AND EXISTS (SELECT 1 FROM bl_recipients WHERE kind = %(kind)s AND entity_id = %(key)s
                AND transporter_id = %(transporter)s AND slots_held + %(delta)s >= 0)
  RETURNING status, version, slots_filled, slots_requested, customer_id, expires_at,
    CASE WHEN slots_filled - %(delta)s = 0 THEN 'active'
         WHEN slots_filled - %(delta)s = slots_requested THEN 'fully_filled' ELSE 'partially_filled' END AS previous),
hold AS (
  UPDATE bl_recipients SET slots_held = slots_held + %(delta)s, response = %(trigger)s, responded_at = %(at)s
  WHERE kind = %(kind)s AND entity_id = %(key)s AND transporter_id = %(transporter)s AND EXISTS (SELECT 1 FROM upd)),
hist AS (
  INSERT INTO bl_transition_history (kind, entity_id, from_status, to_status, "trigger", actor, reason, meta, at,
                                     version)
  SELECT %(kind)s, %(key)s, previous, status, %(trigger)s, %(transporter)s, NULL, CAST('{}' AS JSON), %(at)s, version
  FROM upd),
ev AS (
  INSERT INTO bl_outbox (event_id, name, topic, kind, id_field, entity_id, status, previous_status, state_changed_at,
                         version, slots_filled, slots_requested, expires_at, "trigger", reason, recipients, created_at,
                         attempts)
  SELECT %(event_id)s, 'BROADCAST_STATE_CHANGED', 'state_changed', %(kind)s, 'bookingId', %(key)s, status, previous,
         %(at)s, version, slots_filled, slots_requested, expires_at, %(trigger)s, NULL,
         json_build_array(json_build_array('customer', customer_id)), %(at)s, 0
  FROM upd)
SELECT status, version, slots_filled, slots_requested FROM upd
"""
"""A prototype of a single-round-trip accept/release: the guard (state, fill, deadline, holder) is in
the UPDATE's WHERE instead of a version compare-and-set, the new state comes back by RETURNING, and
history and outbox rows are built from it. No prior read; a loser (no row) reads once to learn why."""

CLASSIFY = "SELECT status, slots_filled, slots_requested FROM bl_broadcasts WHERE id = %s AND kind = %s"


class RawPgOne:
    """Runs :data:`ONE_STATEMENT` (autocommit: one statement is its own transaction)."""

    def __init__(self, dsn: str, kind: str, transporter: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, cursor_factory=TimedPgCursor)
        self.cur = self.conn.cursor()
        self.kind, self.transporter = kind, transporter

    def transition(self, entity_id: int, accept: bool, transporter: str | None = None) -> bool:
        """Accept (or release) one slot; False when the guard refused (after reading why, as a library must)."""
        cur = self.cur
        cur.execute(ONE_STATEMENT, {
            "delta": 1 if accept else -1, "at": datetime.now(timezone.utc), "id": entity_id, "kind": self.kind,
            "key": str(entity_id), "transporter": transporter or self.transporter,
            "trigger": "accept" if accept else "release", "event_id": str(uuid.uuid4()),
            "from_states": ["active", "partially_filled"] if accept else ["partially_filled", "fully_filled"],
        })
        if cur.fetchone() is not None:
            return True
        cur.execute(CLASSIFY, (entity_id, self.kind))
        cur.fetchone()
        return False

    def step(self, entity_id: int) -> Callable[[int], None]:
        """``n`` transitions, accept and release alternately."""
        def run(n: int) -> None:
            for _ in range(n // 2):
                if not (self.transition(entity_id, True) and self.transition(entity_id, False)):
                    raise RuntimeError("one-statement prototype refused a transition")
        return run
