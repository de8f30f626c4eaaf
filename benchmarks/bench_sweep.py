"""The sweep: 50,000 overdue broadcasts among 100,000 (2 recipients each), expired set-wise with
history and outbox rows, on SQLite and on PostgreSQL, beside the raw set-based sweep written by
hand (``raw_sweep.py``) on an identical database, both at the database's default durability
(SQLite synchronous=FULL; a PostgreSQL server with fsync and synchronous_commit on).

Targets: library <= 1.2x raw on both databases (issue 11); and the absolute figures of issue 8,
SQLite <= 0.6 s and PostgreSQL <= 2.5 s, which were set without fsync.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from postgres_server import DURABLE_SETTINGS, PostgresServer, find_binaries
from raw_lifecycle import SQLITE_DURABLE
from raw_sweep import raw_sweep_pg, raw_sweep_sqlite

from broadcast_lifecycle import BroadcastLifecycle, SqliteSettings
from broadcast_lifecycle.stores.schema import broadcasts_table, recipients_table
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

TOTAL = 100_000
OVERDUE = 50_000
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
BATCH_SIZES = (1_000, 10_000)


def _populate(store: SQLAlchemyStore) -> None:
    """100,000 active bookings, every other one overdue, each with two notified transporters."""
    created = NOW - timedelta(hours=1)
    rows = [
        {"id": i, "kind": "booking", "status": "active", "customer_id": f"c{i}", "state_changed_at": created,
         "created_at": created, "version": 3, "slots_requested": 2, "slots_filled": 0,
         "expires_at": NOW - timedelta(minutes=1) if i % 2 else NOW + timedelta(hours=1)}
        for i in range(1, TOTAL + 1)
    ]
    recipients = [
        {"kind": "booking", "entity_id": str(i), "transporter_id": f"t{i % 97}-{n}", "notified_at": created,
         "slots_held": 0}
        for i in range(1, TOTAL + 1) for n in (1, 2)
    ]
    with store.engine.begin() as conn:
        conn.execute(broadcasts_table.insert(), rows)
        conn.execute(recipients_table.insert(), recipients)


def _sweep(store: SQLAlchemyStore, batch_size: int) -> float:
    lifecycle = BroadcastLifecycle(store, clock=lambda: NOW)
    started = time.perf_counter()
    expired = lifecycle.expire_due(NOW, batch_size=batch_size)
    elapsed = time.perf_counter() - started
    assert expired == OVERDUE, f"expired {expired}, expected {OVERDUE}"
    return elapsed


def _run(label: str, make_url: Callable[[str], str], raw: Callable[[str, int], int], target: float,
         store_options: dict[str, object]) -> None:
    """Each batch size: the library's sweep and the raw one, on two identical databases, alternating
    which goes first."""
    for number, batch_size in enumerate(BATCH_SIZES):
        timings: dict[str, float] = {}
        for side in (("library", "raw") if number % 2 == 0 else ("raw", "library")):
            name = f"sweep_{side}_{batch_size}"
            store = SQLAlchemyStore.from_url(make_url(name), **store_options)  # type: ignore[arg-type]
            store.create_all()
            _populate(store)
            if side == "library":
                timings[side] = _sweep(store, batch_size)
            else:
                store.close()
                started = time.perf_counter()
                expired = raw(name, batch_size)
                timings[side] = time.perf_counter() - started
                assert expired == OVERDUE, f"raw expired {expired}, expected {OVERDUE}"
            store.close()
        ratio = timings["library"] / timings["raw"]
        print(f"   {label:<10} batch {batch_size:>6}: library {timings['library']:.2f} s "
              f"({timings['library'] / OVERDUE * 1e6:.1f} us each; issue 8's target <= {target} s), "
              f"raw {timings['raw']:.2f} s; library / raw {ratio:.2f}x "
              f"(target <= 1.2x: {'OK' if ratio <= 1.2 else 'OVER TARGET'})")


def main() -> None:
    """Print the sweep timings for SQLite and PostgreSQL, library and raw."""
    print(f"   {TOTAL:,} broadcasts, {OVERDUE:,} overdue, 2 recipients each; each expiry writes the status, "
          "one history row and two outbox rows (no receivers connected); default durability on both sides")
    with tempfile.TemporaryDirectory() as tmp:
        _run("SQLite", lambda name: f"sqlite:///{tmp}/{name}.db",
             lambda name, batch: raw_sweep_sqlite(f"{tmp}/{name}.db", NOW, batch, SQLITE_DURABLE), 0.6,
             {"sqlite": SqliteSettings(synchronous="FULL")})
    if find_binaries() is None:
        print("   PostgreSQL: skipped, no server binaries (apt-get install postgresql)")
        return
    with PostgresServer(settings=DURABLE_SETTINGS) as server:
        _run("PostgreSQL", server.create_database, lambda name, batch: raw_sweep_pg(server.dsn(name), NOW, batch),
             2.5, {})


if __name__ == "__main__":
    main()
