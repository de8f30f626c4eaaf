"""The SQLite sweep's SQL: the recipient lists it writes, its UUIDv7 event ids, and its use of the due
index whichever way that index spells its WHERE; the status CHECK it writes under."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from broadcast_lifecycle import BroadcastLifecycle, BroadcastStatus, Recipient
from broadcast_lifecycle.stores import _sql_sweep as sql_sweep
from broadcast_lifecycle.stores.schema import (
    EXPIRABLE_SQL_IN_LIST,
    broadcasts_table,
    history_table,
    outbox_table,
    recipients_table,
)
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
EARLY, LATE = NOW - timedelta(hours=2), NOW - timedelta(hours=1)


def _store(path: Path, customers: list[str], recipients: dict[int, list[tuple[str, datetime]]]) -> SQLAlchemyStore:
    """A SQLite store with one overdue active booking per customer (ids 1, 2, ...) and their recipients."""
    store = SQLAlchemyStore.from_url(f"sqlite:///{path}")
    store.create_all()
    rows = [{"id": i, "kind": "booking", "status": "active", "customer_id": customer, "state_changed_at": EARLY,
             "created_at": EARLY, "version": 3, "slots_requested": 2, "slots_filled": 0,
             "expires_at": NOW - timedelta(minutes=1)} for i, customer in enumerate(customers, 1)]
    notified = [{"kind": "booking", "entity_id": str(i), "transporter_id": transporter, "notified_at": at,
                 "slots_held": 0} for i, each in recipients.items() for transporter, at in each]
    with store.engine.begin() as conn:
        conn.execute(broadcasts_table.insert(), rows)
        if notified:
            conn.execute(recipients_table.insert(), notified)
    return store


def _outbox(path: Path) -> list[tuple[Any, ...]]:
    """(event_id, entity_id, topic, recipients as stored) in the order the rows were written."""
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT event_id, entity_id, topic, CAST(recipients AS TEXT) FROM bl_outbox "
                            "ORDER BY rowid").fetchall()


def _json(recipients: list[tuple[str, str]]) -> str:
    return json.dumps([list(r) for r in recipients], separators=(",", ":"), ensure_ascii=False)


def test_sweep_writes_recipient_lists_customer_first_then_by_notification(tmp_path: Path) -> None:
    """The expired event names the customer, then the transporters by (notified_at, transporter_id);
    quotes, backslashes and non-ASCII survive; no transporters leaves the customer alone."""
    customers = ['c"1\\é', "c2", "c3"]
    notified = {1: [("t-b", EARLY), ("t-a", LATE), ("t-c", EARLY)], 3: [('x"y', LATE)]}
    store = _store(tmp_path / "r.db", customers, notified)
    assert BroadcastLifecycle(store).expire_due(NOW) == 3
    expected_transporters = {1: ["t-b", "t-c", "t-a"], 2: [], 3: ['x"y']}
    rows = _outbox(tmp_path / "r.db")
    assert [(entity_id, topic) for _, entity_id, topic, _ in rows] == [
        ("1", "state_changed"), ("2", "state_changed"), ("3", "state_changed"),
        ("1", "expired"), ("2", "expired"), ("3", "expired")]
    for _, entity_id, topic, stored in rows:
        customer = [("customer", customers[int(entity_id) - 1])]
        transporters = [("transporter", t) for t in expected_transporters[int(entity_id)]]
        assert stored == _json(customer + (transporters if topic == "expired" else []))
    events = {(str(e.event.entity_id), e.event.topic.value): e.event for e in store.pending_events(10)}
    assert events["1", "expired"].recipients == (Recipient("customer", 'c"1\\é'), Recipient("transporter", "t-b"),
                                                Recipient("transporter", "t-c"), Recipient("transporter", "t-a"))
    assert events["2", "expired"].recipients == (Recipient("customer", "c2"),)
    store.engine.dispose()


class _Clock:
    """Stands in for the ``time`` module in sql_sweep: each call is one millisecond later."""

    def __init__(self, start_ms: int) -> None:
        self.ms = start_ms

    def time_ns(self) -> int:
        self.ms += 1
        return self.ms * 1_000_000


def _timestamp_ms(value: uuid.UUID) -> int:
    return value.int >> 80


def test_sweep_event_ids_are_uuid7_in_the_order_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every batch's ids carry its millisecond and rise in the order the rows are written, so the
    outbox's primary-key index only grows at its end."""
    start = 1_780_000_000_000
    monkeypatch.setattr(sql_sweep, "time", _Clock(start))
    store = _store(tmp_path / "ids.db", [f"c{i}" for i in range(1, 31)], {})
    assert BroadcastLifecycle(store).expire_due(NOW, batch_size=7) == 30
    ids = [row[0] for row in _outbox(tmp_path / "ids.db")]
    parsed = [uuid.UUID(each) for each in ids]
    assert [str(each) for each in parsed] == ids, "canonical lowercase 8-4-4-4-12 text"
    assert {(each.version, each.variant) for each in parsed} == {(7, uuid.RFC_4122)}
    assert ids == sorted(ids) and len(set(ids)) == len(ids) == 60
    batches = 5  # 7 + 7 + 7 + 7 + 2: the short batch ends the sweep of bookings
    assert sorted({_timestamp_ms(each) for each in parsed}) == [start + 1 + n for n in range(batches)]
    store.engine.dispose()


def test_sweep_event_ids_carry_the_wall_clock(tmp_path: Path) -> None:
    """Unpatched, the ids' milliseconds are the moment of the sweep (not the ``now`` it was given)."""
    store = _store(tmp_path / "clock.db", ["c1"], {})
    before = time.time_ns() // 1_000_000
    assert BroadcastLifecycle(store).expire_due(NOW) == 1
    after = time.time_ns() // 1_000_000
    stamps = {_timestamp_ms(uuid.UUID(row[0])) for row in _outbox(tmp_path / "clock.db")}
    assert len(stamps) == 1 and before <= stamps.pop() <= after
    store.engine.dispose()


def test_sweep_reads_the_due_index_in_either_spelling(tmp_path: Path) -> None:
    """The sweep's query repeats both spellings of the due index's WHERE (equalities now, an IN list in
    databases created earlier), since SQLite uses a partial index only for a query that repeats it."""
    path = tmp_path / "due.db"
    store = _store(path, [f"c{i}" for i in range(1, 5)], {})
    sweep = sql_sweep.SweepSql(store._schema.entity("booking"), store.engine.dialect, history_table, recipients_table,
                               outbox_table)
    create_temp, _, select_due = sweep._without_events[:3]
    params = {"kind": "booking", "now": "2026-06-01 12:00:00.000000", "limit": 10}

    def plan() -> str:
        with sqlite3.connect(path) as conn:
            conn.execute(create_temp)
            return " ".join(str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {select_due}", params))

    assert "USING INDEX ix_bl_broadcasts_due" in plan()
    with store.engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_bl_broadcasts_due"))
        conn.execute(text(f"CREATE INDEX ix_bl_broadcasts_due ON bl_broadcasts (kind, expires_at) "
                          f"WHERE {EXPIRABLE_SQL_IN_LIST}"))
    assert "USING INDEX ix_bl_broadcasts_due" in plan()
    assert BroadcastLifecycle(store).expire_due(NOW, batch_size=3) == 4
    store.engine.dispose()


def test_status_check_takes_every_state_and_refuses_others(tmp_path: Path) -> None:
    """The CHECK written as equalities still admits exactly the library's states."""
    store = _store(tmp_path / "check.db", ["c1"], {})
    with store.engine.begin() as conn:
        for status in BroadcastStatus:
            conn.execute(text("UPDATE bl_broadcasts SET status = :s WHERE id = 1"), {"s": status.value})
    with pytest.raises(IntegrityError), store.engine.begin() as conn:
        conn.execute(text("UPDATE bl_broadcasts SET status = 'bogus' WHERE id = 1"))
    store.engine.dispose()
