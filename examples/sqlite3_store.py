"""A complete store on the standard library's ``sqlite3``, without SQLAlchemy: the worked example of
docs/adapters.md, held to the whole contract suite by tests/test_example_store.py.

One connection behind one lock; every write is one ``BEGIN IMMEDIATE`` transaction, which takes
SQLite's write lock at once, so writers never interleave (in this process or another). Values are
stored as the core's codecs write them (ids of every type as ``encode_id`` text, times as sortable
``time_to_text``) in columns named after the record's fields, so ``record_from_json(cls, dict(row))``
reads a row back; history rows, events, idempotency records and receivers' states are JSON.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import broadcast_lifecycle as bl
from broadcast_lifecycle import stores
from broadcast_lifecycle.stores import encode_id, record_from_json, record_to_json, time_to_text

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

# A broadcast row is snapshot_to_json(snapshot), written through named parameters (:kind, :id, ...).
_COLUMNS = ("kind, id, customer_id, status, slots_requested, slots_filled, version, state_changed_at, created_at, "
            "expires_at")
_VALUES = ", ".join(f":{column}" for column in _COLUMNS.split(", "))
_EXPIRABLE, _CLOSED, _TERMINAL = (", ".join(f"'{status.value}'" for status in group)  # as SQL: 'created', ...
                                  for group in (stores.EXPIRABLE, stores.CLOSED, bl.TERMINAL))


class Sqlite3Store:
    """A :class:`~broadcast_lifecycle.stores.BroadcastStore` in one SQLite file that cannot join a host
    transaction (``tx`` must be ``None``); docs/adapters.md says what each method must do."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row  # rows by column name: dict(row) is what record_from_json reads
        self._lock = threading.RLock()  # reentrant: a write calls the queries below inside its transaction
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- commands --------------------------------------------------------------------------

    def insert(self, new: stores.NewBroadcast, after_commit: stores.AfterCommit, tx: object = None) -> stores.Committed:
        _no_tx(tx)
        kind = new.kind.name
        with self._write() as db:
            entity_id = new.entity_id if new.entity_id is not None else _automatic_id(db, kind)
            if new.idempotency_key is not None and self.recall(new.idempotency_key):
                raise bl.IdempotencyKeyReused(new.idempotency_key, "is already recorded")
            if db.execute("SELECT 1 FROM broadcasts WHERE kind = ? AND id = ?", _key(kind, entity_id)).fetchone():
                raise bl.DuplicateBroadcast(kind, entity_id)
            if new.kind.one_open_per_customer and db.execute(
                    f"SELECT 1 FROM broadcasts WHERE kind = ? AND customer_id = ? AND status NOT IN ({_CLOSED})",
                    (kind, new.customer_id)).fetchone():
                raise bl.OpenBroadcastExists(kind, new.customer_id)
            snapshot = new.snapshot(entity_id)
            db.execute(f"INSERT INTO broadcasts ({_COLUMNS}) VALUES ({_VALUES})", stores.snapshot_to_json(snapshot))
            events = new.events(snapshot)
            _write_records(db, new.history_entry(entity_id), events, new.at, new.outcome(snapshot))
        committed = stores.Committed(snapshot, events)
        after_commit(committed)  # once committed, outside the lock: receivers may call the store
        return committed

    def apply(self, change: stores.Change, after_commit: stores.AfterCommit,
              tx: object = None) -> stores.Committed | None:
        """The UPDATE in ``_save`` is the compare-and-set on ``version``."""
        _no_tx(tx)
        before, decision, after = change.before, change.decision, change.after()
        key = _key(before.kind, before.id)
        with self._write() as db:
            if not _save(db, before, after):
                return None  # another writer got there first: nothing is written
            if change.idempotency_key is not None and self.recall(change.idempotency_key):
                raise bl.IdempotencyKeyReused(change.idempotency_key, "is already recorded")  # rolls back
            _notify(db, key, change.recipients, change.at)
            if change.transporter_id is not None and decision.fill_delta:
                db.execute("UPDATE recipients SET slots_held = slots_held + ?, response = ? "
                           "WHERE kind = ? AND id = ? AND transporter_id = ?",
                           (decision.fill_delta, decision.trigger.value, *key, change.transporter_id))
            notified = self.recipients(before.kind, before.id) if change.needs_recipients else ()  # a re-offer
            events = change.events(after, [r.transporter_id for r in notified],  # skips those holding a slot
                                   {r.transporter_id for r in notified if r.slots_held})
            _write_records(db, change.history_entry(), events, change.at, change.outcome(after))
        committed = stores.Committed(after, events)
        after_commit(committed)
        return committed

    def add_recipients(self, new: stores.NewRecipients, after_commit: stores.AfterCommit,
                       tx: object = None) -> stores.Committed:
        """Checked and written in one write transaction, so a terminal transition either lists these
        recipients or makes this call see the broadcast closed."""
        _no_tx(tx)
        key, events = _key(new.kind.name, new.entity_id), tuple[bl.BroadcastEvent, ...]()
        with self._write() as db:
            snapshot = self.load(new.kind.name, new.entity_id).snapshot
            if snapshot.status in new.open_states:
                added = _notify(db, key, new.transporters, new.at)
                events = new.events(snapshot, added)  # the offer to those added, if any
                _write_records(db, None, events, new.at)
        committed = stores.Committed(snapshot, events)
        if events:
            after_commit(committed)
        return committed

    def expire_overdue(self, kind: bl.KindConfig, now: datetime, limit: int, actor: str,
                       with_events: bool = True) -> stores.ExpiredBatch:
        """Selects what ``is_due`` takes; writes what ``Expiry`` computes."""
        events: list[bl.BroadcastEvent] = []
        with self._write() as db:
            rows = db.execute(f"SELECT * FROM broadcasts WHERE kind = ? AND status IN ({_EXPIRABLE}) "
                              "AND expires_at <= ? AND state_changed_at <= ? ORDER BY expires_at LIMIT ?",
                              (kind.name, time_to_text(now), time_to_text(now), limit)).fetchall()
            for row in rows:
                expiry = stores.Expiry(kind=kind, before=stores.snapshot_from_json(dict(row)), at=now, actor=actor)
                _save(db, expiry.before, expiry.after())
                expired = expiry.events([r.transporter_id for r in self.recipients(kind.name, expiry.before.id)])
                _write_records(db, expiry.history_entry(), expired, now)
                events += expired
        return stores.ExpiredBatch(len(rows), lambda: events)

    # -- queries ---------------------------------------------------------------------------

    def recall(self, key: str, tx: object = None) -> stores.IdempotentOutcome | None:
        _no_tx(tx)
        with self._lock:
            row = self._db.execute("SELECT outcome FROM idempotency WHERE key = ?", (key,)).fetchone()
        return stores.outcome_from_json(json.loads(row["outcome"])) if row else None

    def load(self, kind: str, entity_id: bl.EntityId, transporter_id: str | None = None,
             tx: object = None) -> stores.Loaded:
        _no_tx(tx)
        try:
            key = _key(kind, entity_id)
        except bl.InvalidArgument:  # not an id at all (a float, a bool, a list): no broadcast has it
            raise bl.BroadcastNotFound(kind, entity_id) from None
        with self._lock:
            row = self._db.execute("SELECT * FROM broadcasts WHERE kind = ? AND id = ?", key).fetchone()
            held = self._db.execute("SELECT slots_held FROM recipients WHERE kind = ? AND id = ? "
                                    "AND transporter_id = ?", (*key, transporter_id)).fetchone()
        if row is None:
            raise bl.BroadcastNotFound(kind, entity_id)
        return stores.Loaded(stores.snapshot_from_json(dict(row)), held["slots_held"] if held else None)

    def recipients(self, kind: str, entity_id: bl.EntityId, tx: object = None) -> tuple[bl.RecipientRecord, ...]:
        """In notification order, ties by transporter id: the order terminal events list them in."""
        with self._lock:
            self.load(kind, entity_id, tx=tx)  # refuses a tx; BroadcastNotFound for an unknown id
            rows = self._db.execute("SELECT * FROM recipients WHERE kind = ? AND id = ? "
                                    "ORDER BY notified_at, transporter_id", _key(kind, entity_id)).fetchall()
        return tuple(record_from_json(bl.RecipientRecord, dict(row)) for row in rows)

    def history(self, kind: str, entity_id: bl.EntityId, tx: object = None) -> tuple[bl.HistoryEntry, ...]:
        with self._lock:
            self.load(kind, entity_id, tx=tx)  # refuses a tx; BroadcastNotFound for an unknown id
            rows = self._db.execute("SELECT entry FROM history WHERE kind = ? AND id = ? ORDER BY version",
                                    _key(kind, entity_id)).fetchall()
        return tuple(stores.history_from_json(json.loads(row["entry"])) for row in rows)

    # -- the outbox ------------------------------------------------------------------------

    def pending_events(self, limit: int, created_before: datetime | None = None) -> Sequence[stores.OutboxEntry]:
        before = time_to_text(created_before) or "~"  # no bound: "~" sorts after any time
        with self._lock:
            rows = self._db.execute("SELECT * FROM outbox WHERE dead_at IS NULL AND created_at < ? "
                                    "ORDER BY created_at, rowid LIMIT ?", (before, limit)).fetchall()
        return [_entry(row) for row in rows]

    def claim_events(self, now: datetime, limit: int, created_before: datetime,
                     lease_until: datetime) -> Sequence[stores.OutboxEntry]:
        """Chosen and leased in one write transaction: a second relay waits, then finds them leased."""
        with self._write() as db:
            rows = db.execute("SELECT * FROM outbox WHERE dead_at IS NULL AND created_at < ? AND (next_attempt_at "
                              "IS NULL OR next_attempt_at <= ?) ORDER BY created_at, rowid LIMIT ?",
                              (time_to_text(created_before), time_to_text(now), limit)).fetchall()
            db.executemany("UPDATE outbox SET next_attempt_at = ? WHERE event_id = ?",
                           [(time_to_text(lease_until), row["event_id"]) for row in rows])
        return [_entry(row) for row in rows]

    def mark_delivered(self, event_ids: Sequence[str], at: datetime) -> None:
        """A delivered event is deleted."""
        with self._write() as db:
            db.executemany("DELETE FROM outbox WHERE event_id = ?", [(event_id,) for event_id in event_ids])

    def record_attempt(self, attempt: stores.DeliveryAttempt) -> None:
        """The attempt's receiver states replace those recorded under the same names (the others are
        kept) in the row's JSON; a delivered event is deleted, as ``mark_delivered`` does."""
        with self._write() as db:
            row = db.execute("SELECT * FROM outbox WHERE event_id = ?", (attempt.event_id,)).fetchone()
            if row is None or attempt.outcome == "delivered":  # (deleting an unknown id deletes nothing)
                db.execute("DELETE FROM outbox WHERE event_id = ?", (attempt.event_id,))
                return
            states = {state.receiver: state for state in (*_entry(row).receivers, *attempt.receivers)}
            db.execute("UPDATE outbox SET attempts = attempts + ?, last_error = coalesce(?, last_error), "
                       "next_attempt_at = ?, dead_at = ?, receivers = ? WHERE event_id = ?",
                       (int(attempt.failed), attempt.error, time_to_text(attempt.next_attempt_at),
                        time_to_text(attempt.at) if attempt.outcome == "dead" else None,
                        json.dumps([record_to_json(state) for state in states.values()]), attempt.event_id))

    def dead_letters(self, limit: int) -> Sequence[stores.DeadLetter]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM outbox WHERE receivers IS NOT NULL").fetchall()
        letters = [stores.DeadLetter(event=entry.event, receiver=state.receiver, attempts=state.attempts,
                                     last_error=state.last_error, dead_at=state.dead_at, created_at=entry.created_at)
                   for entry in map(_entry, rows) for state in entry.receivers if state.dead_at is not None]
        return sorted(letters, key=lambda letter: letter.dead_at, reverse=True)[:limit]

    def prune(self, target: stores.PruneTarget, before: datetime, limit: int) -> int:
        """Delivered events are deleted at once: there are none to prune."""
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


def _automatic_id(db: sqlite3.Connection, kind: str) -> int:
    """The next number no broadcast of ``kind`` has (a host may have taken some explicitly)."""
    while True:
        n = db.execute("INSERT INTO automatic_ids DEFAULT VALUES").lastrowid or 0
        if not db.execute("SELECT 1 FROM broadcasts WHERE kind = ? AND id = ?", _key(kind, n)).fetchone():
            return n


def _save(db: sqlite3.Connection, before: bl.BroadcastSnapshot, after: bl.BroadcastSnapshot) -> bool:
    """Write ``after`` (same kind and id) if the row is still at ``before.version``, the compare-and-set."""
    return db.execute(f"UPDATE broadcasts SET ({_COLUMNS}) = ({_VALUES}) "
                      "WHERE kind = :kind AND id = :id AND version = :before_version",
                      {**stores.snapshot_to_json(after), "before_version": before.version}).rowcount == 1


def _notify(db: sqlite3.Connection, key: tuple[str, str], transporters: Sequence[str], at: datetime) -> list[str]:
    """Record ``transporters`` as notified at ``at``; return those added (the others keep their row)."""
    insert = "INSERT OR IGNORE INTO recipients (kind, id, transporter_id, notified_at) VALUES (?, ?, ?, ?)"
    return [t for t in transporters if db.execute(insert, (*key, t, time_to_text(at))).rowcount == 1]


def _write_records(db: sqlite3.Connection, entry: bl.HistoryEntry | None, events: Sequence[bl.BroadcastEvent],
                   at: datetime, outcome: stores.IdempotentOutcome | None = None) -> None:
    """The history row (``notify_more`` writes none), the outbox rows and the idempotency record of one write."""
    if entry is not None:
        db.execute("INSERT INTO history (kind, id, version, entry) VALUES (?, ?, ?, ?)",
                   (*_key(entry.kind, entry.entity_id), entry.version, json.dumps(stores.history_to_json(entry))))
    db.executemany("INSERT INTO outbox (event_id, event, created_at) VALUES (?, ?, ?)",
                   [(e.event_id, json.dumps(stores.event_to_json(e)), time_to_text(at)) for e in events])
    if outcome is not None:
        db.execute("INSERT INTO idempotency (key, outcome, created_at) VALUES (?, ?, ?)",
                   (outcome.key, json.dumps(stores.outcome_to_json(outcome)), time_to_text(at)))


def _entry(row: sqlite3.Row) -> stores.OutboxEntry:
    """Columns named as the entry's fields; the event and the receivers' states (none until one failed) as JSON."""
    return record_from_json(stores.OutboxEntry, dict(row, event=json.loads(row["event"]),
                                                     receivers=json.loads(row["receivers"] or "[]")))


def _no_tx(tx: object) -> None:
    if tx is not None:
        raise bl.InvalidArgument("Sqlite3Store cannot join a host transaction; pass tx=None")
