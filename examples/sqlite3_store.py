"""A complete store on the standard library's ``sqlite3``, without SQLAlchemy: the worked example of
docs/adapters.md, held to the whole contract suite by tests/test_example_store.py.

One connection behind one lock; every write is one ``BEGIN IMMEDIATE`` transaction, which takes
SQLite's write lock at once, so writers never interleave (in this process or another). Ids of every
type share one TEXT column (``encode_id``); times are fixed-width UTC text (``time_to_text``), which
sorts in time order; history rows, events and idempotency records are JSON from the core's codecs,
and each outbox row keeps its receivers' delivery state as JSON once one of them failed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import broadcast_lifecycle as bl
from broadcast_lifecycle import stores
from broadcast_lifecycle.stores import decode_id, encode_id, time_from_text, time_to_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS broadcasts (kind TEXT, id TEXT, customer_id TEXT NOT NULL, status TEXT NOT NULL,
    slots_requested INTEGER NOT NULL, slots_filled INTEGER NOT NULL, version INTEGER NOT NULL,
    state_changed_at TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT, PRIMARY KEY (kind, id));
CREATE TABLE IF NOT EXISTS automatic_ids (n INTEGER PRIMARY KEY AUTOINCREMENT);
CREATE TABLE IF NOT EXISTS recipients (kind TEXT, id TEXT, transporter_id TEXT, notified_at TEXT NOT NULL,
    slots_held INTEGER NOT NULL DEFAULT 0, response TEXT, PRIMARY KEY (kind, id, transporter_id));
CREATE TABLE IF NOT EXISTS history (kind TEXT, id TEXT, version INTEGER, entry TEXT NOT NULL,
    PRIMARY KEY (kind, id, version));
CREATE TABLE IF NOT EXISTS outbox (event_id TEXT PRIMARY KEY, event TEXT NOT NULL, created_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, next_attempt_at TEXT, dead_at TEXT, receivers TEXT);
CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, outcome TEXT NOT NULL, created_at TEXT NOT NULL);
"""

_COLUMNS = "customer_id, status, slots_requested, slots_filled, version, state_changed_at, created_at, expires_at"
_EXPIRABLE = ", ".join(f"'{status.value}'" for status in stores.EXPIRABLE)
_CLOSED = ", ".join(f"'{status.value}'" for status in stores.CLOSED)
_ENTRY = "SELECT event, created_at, attempts, last_error, next_attempt_at, dead_at, receivers FROM outbox"
_TERMINAL = ", ".join(f"'{status.value}'" for status in bl.TERMINAL)
_RECEIVER_TIMES = ("next_attempt_at", "delivered_at", "dead_at")


class Sqlite3Store:
    """A :class:`~broadcast_lifecycle.stores.BroadcastStore` in one SQLite file. It cannot join a
    host transaction: ``tx`` must be ``None``."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    # -- commands --------------------------------------------------------------------------

    def insert(self, new: stores.NewBroadcast, after_commit: stores.AfterCommit, tx: object = None) -> stores.Committed:
        """See :meth:`BroadcastStore.insert`."""
        _no_tx(tx)
        kind = new.kind.name
        with self._write() as db:
            entity_id = new.entity_id if new.entity_id is not None else _automatic_id(db, kind)
            if new.idempotency_key is not None and _recall(db, new.idempotency_key):
                raise bl.IdempotencyKeyReused(new.idempotency_key, "is already recorded")
            if db.execute("SELECT 1 FROM broadcasts WHERE kind = ? AND id = ?", _key(kind, entity_id)).fetchone():
                raise bl.DuplicateBroadcast(kind, entity_id)
            if new.kind.one_open_per_customer and db.execute(
                    f"SELECT 1 FROM broadcasts WHERE kind = ? AND customer_id = ? AND status NOT IN ({_CLOSED})",
                    (kind, new.customer_id)).fetchone():
                raise bl.OpenBroadcastExists(kind, new.customer_id)
            snapshot = new.snapshot(entity_id)
            db.execute(f"INSERT INTO broadcasts (kind, id, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (*_key(kind, entity_id), *_columns(snapshot)))
            events = new.events(snapshot)
            _write_records(db, new.history_entry(entity_id), events, new.at, new.outcome(snapshot))
        committed = stores.Committed(snapshot, events)
        after_commit(committed)  # once committed, outside the lock: receivers may call the store
        return committed

    def apply(self, change: stores.Change, after_commit: stores.AfterCommit,
              tx: object = None) -> stores.Committed | None:
        """See :meth:`BroadcastStore.apply`: the UPDATE is the compare-and-set on ``version``."""
        _no_tx(tx)
        before, decision, after = change.before, change.decision, change.after()
        key = _key(before.kind, before.id)
        with self._write() as db:
            if not _save(db, before, after):
                return None  # another writer got there first: nothing is written
            if change.idempotency_key is not None and _recall(db, change.idempotency_key):
                raise bl.IdempotencyKeyReused(change.idempotency_key, "is already recorded")  # rolls back
            _notify(db, key, change.recipients, change.at)
            if change.transporter_id is not None and decision.fill_delta:
                db.execute("UPDATE recipients SET slots_held = slots_held + ?, response = ? "
                           "WHERE kind = ? AND id = ? AND transporter_id = ?",
                           (decision.fill_delta, decision.trigger.value, *key, change.transporter_id))
            events = change.events(after, _transporters(db, key) if change.needs_recipients else ())
            _write_records(db, change.history_entry(), events, change.at, change.outcome(after))
        committed = stores.Committed(after, events)
        after_commit(committed)
        return committed

    def add_recipients(self, new: stores.NewRecipients, after_commit: stores.AfterCommit,
                       tx: object = None) -> stores.Committed:
        """See :meth:`BroadcastStore.add_recipients`. Checked and written in one write transaction, so
        a terminal transition either lists these recipients or makes this call see it closed."""
        _no_tx(tx)
        key, events = _key(new.kind.name, new.entity_id), tuple[bl.BroadcastEvent, ...]()
        with self._write() as db:
            snapshot = _load(db, new.kind.name, new.entity_id)
            if snapshot.status in new.open_states:
                notified = set(_transporters(db, key))
                added = [t for t in new.transporters if t not in notified]
                _notify(db, key, added, new.at)
                events = new.events(snapshot, added)  # the offer to those added, if any
                _write_events(db, events, new.at)
        committed = stores.Committed(snapshot, events)
        if events:
            after_commit(committed)
        return committed

    def expire_overdue(self, kind: bl.KindConfig, now: datetime, limit: int, actor: str,
                       with_events: bool = True) -> stores.ExpiredBatch:
        """See :meth:`BroadcastStore.expire_overdue`; what an expiry writes comes from ``Expiry``."""
        events: list[bl.BroadcastEvent] = []
        with self._write() as db:
            rows = db.execute(f"SELECT id, {_COLUMNS} FROM broadcasts WHERE kind = ? AND status IN ({_EXPIRABLE}) "
                              "AND expires_at <= ? AND state_changed_at <= ? ORDER BY expires_at LIMIT ?",
                              (kind.name, time_to_text(now), time_to_text(now), limit)).fetchall()
            for row in rows:
                expiry = stores.Expiry(kind=kind, before=_snapshot(kind.name, row), at=now, actor=actor)
                _save(db, expiry.before, expiry.after())
                expired = expiry.events(_transporters(db, (kind.name, row[0])))
                _write_records(db, expiry.history_entry(), expired, now, None)
                events += expired
        return stores.ExpiredBatch(len(rows), lambda: events)

    # -- queries ---------------------------------------------------------------------------

    def recall(self, key: str, tx: object = None) -> stores.IdempotentOutcome | None:
        """See :meth:`BroadcastStore.recall`."""
        _no_tx(tx)
        with self._lock:
            return _recall(self._db, key)

    def load(self, kind: str, entity_id: bl.EntityId, transporter_id: str | None = None,
             tx: object = None) -> stores.Loaded:
        """See :meth:`BroadcastStore.load`."""
        _no_tx(tx)
        with self._lock:
            snapshot = _load(self._db, kind, entity_id)
            held = self._db.execute("SELECT slots_held FROM recipients WHERE kind = ? AND id = ? "
                                    "AND transporter_id = ?", (*_key(kind, entity_id), transporter_id)).fetchone()
        return stores.Loaded(snapshot, held[0] if held else None)

    def recipients(self, kind: str, entity_id: bl.EntityId, tx: object = None) -> tuple[bl.RecipientRecord, ...]:
        """See :meth:`BroadcastStore.recipients`: notification order, ties by transporter id."""
        _no_tx(tx)
        with self._lock:
            _load(self._db, kind, entity_id)
            rows = self._db.execute("SELECT transporter_id, notified_at, slots_held, response FROM recipients "
                                    "WHERE kind = ? AND id = ? ORDER BY notified_at, transporter_id",
                                    _key(kind, entity_id)).fetchall()
        return tuple(bl.RecipientRecord(t, time_from_text(at), held, response) for t, at, held, response in rows)

    def history(self, kind: str, entity_id: bl.EntityId, tx: object = None) -> tuple[bl.HistoryEntry, ...]:
        """See :meth:`BroadcastStore.history`."""
        _no_tx(tx)
        with self._lock:
            _load(self._db, kind, entity_id)
            rows = self._db.execute("SELECT entry FROM history WHERE kind = ? AND id = ? ORDER BY version",
                                    _key(kind, entity_id)).fetchall()
        return tuple(stores.history_from_json(json.loads(entry)) for (entry,) in rows)

    # -- the outbox ------------------------------------------------------------------------

    def pending_events(self, limit: int, created_before: datetime | None = None) -> Sequence[stores.OutboxEntry]:
        """See :meth:`BroadcastStore.pending_events`."""
        before = time_to_text(created_before) if created_before is not None else "~"  # "~" sorts after any time
        with self._lock:
            rows = self._db.execute(f"{_ENTRY} WHERE dead_at IS NULL AND created_at < ? "
                                    "ORDER BY created_at, rowid LIMIT ?", (before, limit)).fetchall()
        return [_entry(row) for row in rows]

    def claim_events(self, now: datetime, limit: int, created_before: datetime,
                     lease_until: datetime) -> Sequence[stores.OutboxEntry]:
        """See :meth:`BroadcastStore.claim_events`: chosen and leased in one write transaction."""
        with self._write() as db:
            rows = db.execute(f"{_ENTRY} WHERE dead_at IS NULL AND created_at < ? AND (next_attempt_at IS NULL "
                              "OR next_attempt_at <= ?) ORDER BY created_at, rowid LIMIT ?",
                              (time_to_text(created_before), time_to_text(now), limit)).fetchall()
            entries = [_entry(row) for row in rows]
            db.executemany("UPDATE outbox SET next_attempt_at = ? WHERE event_id = ?",
                           [(time_to_text(lease_until), e.event.event_id) for e in entries])
        return entries

    def mark_delivered(self, event_ids: Sequence[str], at: datetime) -> None:
        """See :meth:`BroadcastStore.mark_delivered`; a delivered event is deleted."""
        with self._write() as db:
            db.executemany("DELETE FROM outbox WHERE event_id = ?", [(event_id,) for event_id in event_ids])

    def record_attempt(self, attempt: stores.DeliveryAttempt) -> None:
        """See :meth:`BroadcastStore.record_attempt`: the receivers' states merged into the row's JSON; a
        delivered event is deleted, as ``mark_delivered`` does."""
        with self._write() as db:
            row = db.execute("SELECT receivers FROM outbox WHERE event_id = ?", (attempt.event_id,)).fetchone()
            if row is None:
                return
            if attempt.outcome == "delivered":
                db.execute("DELETE FROM outbox WHERE event_id = ?", (attempt.event_id,))
                return
            states = {state.receiver: state for state in _states(row[0])}
            states.update((state.receiver, state) for state in attempt.receivers)
            db.execute("UPDATE outbox SET attempts = attempts + ?, last_error = coalesce(?, last_error), "
                       "next_attempt_at = ?, dead_at = ?, receivers = ? WHERE event_id = ?",
                       (int(attempt.failed), attempt.error, time_to_text(attempt.next_attempt_at),
                        time_to_text(attempt.at) if attempt.outcome == "dead" else None,
                        json.dumps([_state_json(state) for state in states.values()]), attempt.event_id))

    def dead_letters(self, limit: int) -> Sequence[stores.DeadLetter]:
        """See :meth:`BroadcastStore.dead_letters`."""
        with self._lock:
            rows = self._db.execute(f"{_ENTRY} WHERE receivers IS NOT NULL").fetchall()
        letters = [stores.DeadLetter(event=entry.event, receiver=state.receiver, attempts=state.attempts,
                                     last_error=state.last_error, dead_at=state.dead_at, created_at=entry.created_at)
                   for entry in map(_entry, rows) for state in entry.receivers if state.dead_at is not None]
        return sorted(letters, key=lambda letter: letter.dead_at, reverse=True)[:limit]

    def prune(self, target: stores.PruneTarget, before: datetime, limit: int) -> int:
        """See :meth:`BroadcastStore.prune`. Delivered events are deleted at once: none to prune."""
        if target is stores.PruneTarget.OUTBOX:
            return 0
        with self._write() as db:
            if target is stores.PruneTarget.IDEMPOTENCY:
                return db.execute("DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency "
                                  "WHERE created_at < ? LIMIT ?)", (time_to_text(before), limit)).rowcount
            done = db.execute(f"SELECT kind, id FROM broadcasts b WHERE status IN ({_TERMINAL}) AND state_changed_at "
                              "< ? AND EXISTS (SELECT 1 FROM history h WHERE h.kind = b.kind AND h.id = b.id) LIMIT ?",
                              (time_to_text(before), limit)).fetchall()
            db.executemany("DELETE FROM history WHERE kind = ? AND id = ?", done)
            return len(done)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock, committed on success and rolled back on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")


def _key(kind: str, entity_id: bl.EntityId) -> tuple[str, str]:
    return kind, encode_id(entity_id)


def _load(db: sqlite3.Connection, kind: str, entity_id: bl.EntityId) -> bl.BroadcastSnapshot:
    try:
        key = _key(kind, entity_id)
    except bl.InvalidArgument:  # not an id at all (a float, a bool, a list): no broadcast has it
        raise bl.BroadcastNotFound(kind, entity_id) from None
    row = db.execute(f"SELECT id, {_COLUMNS} FROM broadcasts WHERE kind = ? AND id = ?", key).fetchone()
    if row is None:
        raise bl.BroadcastNotFound(kind, entity_id)
    return _snapshot(kind, row)


def _automatic_id(db: sqlite3.Connection, kind: str) -> int:
    """The next number no broadcast of ``kind`` has (a host may have taken some explicitly)."""
    while True:
        n = db.execute("INSERT INTO automatic_ids DEFAULT VALUES").lastrowid or 0
        if not db.execute("SELECT 1 FROM broadcasts WHERE kind = ? AND id = ?", _key(kind, n)).fetchone():
            return n


def _columns(s: bl.BroadcastSnapshot) -> tuple[Any, ...]:
    return (s.customer_id, s.status.value, s.slots_requested, s.slots_filled, s.version,
            time_to_text(s.state_changed_at), time_to_text(s.created_at), time_to_text(s.expires_at))


def _snapshot(kind: str, row: tuple[Any, ...]) -> bl.BroadcastSnapshot:
    key, customer, status, requested, filled, version, changed, created, expires = row
    return bl.BroadcastSnapshot(kind, decode_id(key), customer, bl.BroadcastStatus(status), requested, filled,
                                version, time_from_text(changed), time_from_text(created), time_from_text(expires))


def _save(db: sqlite3.Connection, before: bl.BroadcastSnapshot, after: bl.BroadcastSnapshot) -> bool:
    """Write ``after`` if the row is still at ``before.version`` (the compare-and-set); False if not."""
    return db.execute(f"UPDATE broadcasts SET ({_COLUMNS}) = (?, ?, ?, ?, ?, ?, ?, ?) "
                      "WHERE kind = ? AND id = ? AND version = ?",
                      (*_columns(after), *_key(before.kind, before.id), before.version)).rowcount == 1


def _notify(db: sqlite3.Connection, key: tuple[str, str], transporters: Sequence[str], at: datetime) -> None:
    """Record ``transporters`` as notified at ``at``; those notified before keep their row."""
    db.executemany("INSERT OR IGNORE INTO recipients (kind, id, transporter_id, notified_at) VALUES (?, ?, ?, ?)",
                   [(*key, t, time_to_text(at)) for t in transporters])


def _transporters(db: sqlite3.Connection, key: tuple[str, str]) -> list[str]:
    rows = db.execute("SELECT transporter_id FROM recipients WHERE kind = ? AND id = ? "
                      "ORDER BY notified_at, transporter_id", key).fetchall()
    return [transporter for (transporter,) in rows]


def _write_records(db: sqlite3.Connection, entry: bl.HistoryEntry, events: Sequence[bl.BroadcastEvent], at: datetime,
                   outcome: stores.IdempotentOutcome | None) -> None:
    """The history row, the outbox rows and the idempotency record of one write."""
    db.execute("INSERT INTO history (kind, id, version, entry) VALUES (?, ?, ?, ?)",
               (*_key(entry.kind, entry.entity_id), entry.version, json.dumps(stores.history_to_json(entry))))
    _write_events(db, events, at)
    if outcome is not None:
        db.execute("INSERT INTO idempotency (key, outcome, created_at) VALUES (?, ?, ?)",
                   (outcome.key, json.dumps(stores.outcome_to_json(outcome)), time_to_text(at)))


def _write_events(db: sqlite3.Connection, events: Sequence[bl.BroadcastEvent], at: datetime) -> None:
    db.executemany("INSERT INTO outbox (event_id, event, created_at) VALUES (?, ?, ?)",
                   [(e.event_id, json.dumps(stores.event_to_json(e)), time_to_text(at)) for e in events])


def _recall(db: sqlite3.Connection, key: str) -> stores.IdempotentOutcome | None:
    row = db.execute("SELECT outcome FROM idempotency WHERE key = ?", (key,)).fetchone()
    return stores.outcome_from_json(json.loads(row[0])) if row else None


def _entry(row: tuple[Any, ...]) -> stores.OutboxEntry:
    event, created, attempts, error, next_attempt_at, dead_at, receivers = row
    return stores.OutboxEntry(stores.event_from_json(json.loads(event)), time_from_text(created), attempts, error,
                              time_from_text(next_attempt_at), time_from_text(dead_at), receivers=_states(receivers))


def _state_json(state: stores.ReceiverDelivery) -> dict[str, Any]:
    return {"receiver": state.receiver, "attempts": state.attempts, "last_error": state.last_error,
            **{name: time_to_text(getattr(state, name)) for name in _RECEIVER_TIMES}}


def _states(text: str | None) -> tuple[stores.ReceiverDelivery, ...]:
    return tuple(stores.ReceiverDelivery(**{**data, **{name: time_from_text(data[name]) for name in _RECEIVER_TIMES}})
                 for data in json.loads(text or "[]"))


def _no_tx(tx: object) -> None:
    if tx is not None:
        raise bl.InvalidArgument("Sqlite3Store cannot join a host transaction; pass tx=None")

