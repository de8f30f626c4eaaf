"""The whole lifecycle through the library against a raw driver doing the same work per transition
(``raw_lifecycle.py``), both at their database's default durability: every commit flushed to disk.

1. SQLite (WAL, synchronous=FULL on both sides): the fill scenario (create, start_broadcast to 3
   transporters, activate, 3 accepts to full, start_trip, complete) and the cancel scenario
   (create, start_broadcast, activate, cancel). Target: library <= 1.25x raw on both.
2. SQLite hot row: 16 threads each accept 1 slot of a fresh 5-slot booking; rounds/s against raw
   sqlite3 threads (a connection each, BEGIN IMMEDIATE, the same statements), and no "database is
   locked". Target: library >= 1.0x raw's rounds/s.
3. PostgreSQL (fsync, synchronous_commit and full_page_writes on; its own server, not the test
   suite's): the two scenarios. Target: library <= 0.9x raw on both.

The sides alternate lifecycle by lifecycle and the ratios are of the medians (the machine and its
disk are shared: compare ratios from one run, not absolute times across runs). Then, where the time goes: us per
command for each side and, on PostgreSQL, the round trips each library command makes.

Run it through ``benchmarks/run.py`` (``make bench``) or alone: ``python benchmarks/bench_lifecycle.py``.
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from hot_rounds import hot_rounds
from pg_trace import pg_trace, round_trips
from postgres_server import DURABLE_SETTINGS, PostgresServer, find_binaries
from raw_lifecycle import SQLITE_DURABLE, RawLifecycle

from broadcast_lifecycle import (
    BroadcastLifecycle,
    InvalidTransition,
    KindHandle,
    SqliteSettings,
    StoreError,
    TransitionRefused,
)
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

__all__ = ["main"]

KIND = "booking"
TRANSPORTERS = ("t1", "t2", "t3")
DAY = timedelta(days=1)
LIFECYCLES = 100
"""Timed lifecycles per scenario and side."""
WARMUP = 5
HOT_THREADS = 16
HOT_SLOTS = 5
HOT_ROUNDS = 40
HOT_WARMUP = 3
DURABLE = SqliteSettings(synchronous="FULL")


class Steps:
    """Seconds spent per command, summed over every lifecycle a variant ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def timed(self, label: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            self.seconds[label] += time.perf_counter() - started
            self.calls[label] += 1


Scenario = Callable[[Steps], None]


def library_scenarios(bookings: KindHandle) -> dict[str, Scenario]:
    """The fill and cancel scenarios through the library."""
    def fill(steps: Steps) -> None:
        entity_id = steps.timed("create", bookings.create, "customer", slots=len(TRANSPORTERS)).id
        steps.timed("start_broadcast", bookings.start_broadcast, entity_id, TRANSPORTERS)
        steps.timed("activate", bookings.activate, entity_id, ttl=DAY)
        for transporter in TRANSPORTERS[:-1]:
            steps.timed("accept", bookings.accept, entity_id, transporter)
        steps.timed("accept (fills)", bookings.accept, entity_id, TRANSPORTERS[-1])
        steps.timed("start_trip", bookings.start_trip, entity_id)
        steps.timed("complete", bookings.complete, entity_id)

    def cancel(steps: Steps) -> None:
        entity_id = steps.timed("create", bookings.create, "customer", slots=len(TRANSPORTERS)).id
        steps.timed("start_broadcast", bookings.start_broadcast, entity_id, TRANSPORTERS)
        steps.timed("activate", bookings.activate, entity_id, ttl=DAY)
        steps.timed("cancel", bookings.cancel, entity_id)

    return {"fill": fill, "cancel": cancel}


def raw_scenarios(raw: RawLifecycle) -> dict[str, Scenario]:
    """The same two scenarios on the raw driver."""
    def fill(steps: Steps) -> None:
        entity_id = steps.timed("create", raw.create, "customer", len(TRANSPORTERS))
        steps.timed("start_broadcast", raw.command, entity_id, "start_broadcast", "customer", notify=TRANSPORTERS)
        steps.timed("activate", raw.command, entity_id, "activate", "customer", ttl=DAY)
        for transporter in TRANSPORTERS[:-1]:
            steps.timed("accept", raw.command, entity_id, "accept", transporter, transporter)
        steps.timed("accept (fills)", raw.command, entity_id, "accept", TRANSPORTERS[-1], TRANSPORTERS[-1])
        steps.timed("start_trip", raw.command, entity_id, "start_trip", "customer")
        steps.timed("complete", raw.command, entity_id, "complete", "customer")

    def cancel(steps: Steps) -> None:
        entity_id = steps.timed("create", raw.create, "customer", len(TRANSPORTERS))
        steps.timed("start_broadcast", raw.command, entity_id, "start_broadcast", "customer", notify=TRANSPORTERS)
        steps.timed("activate", raw.command, entity_id, "activate", "customer", ttl=DAY)
        steps.timed("cancel", raw.command, entity_id, "cancel", "customer")

    return {"fill": fill, "cancel": cancel}


def compare(bookings: KindHandle, raw: RawLifecycle, target: float) -> dict[str, float]:
    """Run both scenarios on both sides, one lifecycle at a time, alternating sides (so a slow
    moment of the shared disk falls on both); print the median ms per lifecycle, the ratios of the
    medians, and the median us per command; return the ratios by scenario."""
    sides = {"library": library_scenarios(bookings), "raw": raw_scenarios(raw)}
    for scenarios in sides.values():  # warm-up: caches, prepared statements, the pool
        for run in scenarios.values():
            for _ in range(WARMUP):
                run(Steps())
    samples: dict[tuple[str, str], list[float]] = defaultdict(list)
    per_command: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    order = list(sides)
    for _ in range(LIFECYCLES):
        order.reverse()
        for name in ("fill", "cancel"):
            for side in order:
                steps = Steps()
                started = time.perf_counter()
                sides[side][name](steps)
                samples[(side, name)].append((time.perf_counter() - started) * 1e3)
                for label, seconds in steps.seconds.items():
                    per_command[(side, name)][label].append(seconds / steps.calls[label] * 1e6)
    ratios = {}
    for name in ("fill", "cancel"):
        lib, base = statistics.median(samples[("library", name)]), statistics.median(samples[("raw", name)])
        ratios[name] = lib / base
        verdict = "OK" if ratios[name] <= target else "OVER TARGET"
        print(f"   {name:<7} library {lib:7.2f} ms  raw {base:7.2f} ms  library / raw {ratios[name]:5.2f}x  "
              f"(target <= {target}x: {verdict})")
    print("   median us per command, library | raw | library / raw:")
    for name in ("fill", "cancel"):
        cells = []
        for label, values in per_command[("library", name)].items():
            lib_us, raw_us = statistics.median(values), statistics.median(per_command[("raw", name)][label])
            cells.append(f"{label} {lib_us:.0f} | {raw_us:.0f} | {lib_us / raw_us:.2f}x")
        print(f"      {name}: " + "; ".join(cells))
    return ratios


# -- SQLite --------------------------------------------------------------------------------------


def sqlite_section(scenarios: bool = True, hot: bool = True) -> None:
    """Both scenarios on one SQLite file; the library with ``SqliteSettings(synchronous="FULL")``."""
    print(f"   both sides: {', '.join(p.removeprefix('PRAGMA ') for p in SQLITE_DURABLE)}; writes in BEGIN IMMEDIATE; "
          f"{LIFECYCLES} lifecycles per scenario and side, alternating")
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/lifecycle.db"
        store = SQLAlchemyStore.from_url(f"sqlite:///{path}", sqlite=DURABLE)
        store.create_all()
        if scenarios:
            raw = RawLifecycle(path, pg=False)
            compare(BroadcastLifecycle(store).kind(KIND), raw, 1.25)
            raw.close()
        if hot:
            hot_row_section(store, path)
        store.close()


def hot_row_section(store: SQLAlchemyStore, path: str) -> None:
    """16 threads race for 5 slots on SQLite: the library against raw sqlite3 threads."""
    print(f"-- 2. SQLite hot row: {HOT_THREADS} threads each accept 1 slot of a fresh {HOT_SLOTS}-slot booking; "
          f"{HOT_ROUNDS} timed rounds after {HOT_WARMUP} warm-up rounds, interleaved library / raw")
    lifecycle = BroadcastLifecycle(store)
    bookings = lifecycle.kind(KIND)
    transporters = [f"hot-{i}" for i in range(HOT_THREADS)]
    locked = {"library": 0, "raw": 0}
    lock = threading.Lock()

    def prepare() -> int:
        entity_id = bookings.create("hot-customer", slots=HOT_SLOTS).id
        assert isinstance(entity_id, int)
        bookings.start_broadcast(entity_id, transporters)
        bookings.activate(entity_id, ttl=DAY)
        return entity_id

    def library(index: int, entity_id: int) -> bool:
        try:
            bookings.accept(entity_id, transporters[index])
        except (InvalidTransition, TransitionRefused):
            return False
        except StoreError as exc:
            with lock:
                locked["library"] += "locked" in str(exc)
            return False
        return True

    raws = [RawLifecycle(path, pg=False) for _ in range(HOT_THREADS)]

    def raw(index: int, entity_id: int) -> bool:
        try:
            raws[index].command(entity_id, "accept", transporters[index], transporters[index])
        except RuntimeError:
            return False
        except sqlite3.OperationalError as exc:
            with lock:
                locked["raw"] += "locked" in str(exc)
            return False
        return True

    results: dict[str, tuple[list[float], list[int]]] = {"library": ([], []), "raw": ([], [])}
    for _ in range(2):  # two interleaved halves, so a noisy minute does not fall on one side only
        for name, work in (("library", library), ("raw", raw)):
            seconds, winners, errors = hot_rounds(HOT_THREADS, HOT_WARMUP, HOT_ROUNDS, lambda _: prepare(), work)
            if errors:
                raise RuntimeError(f"{name}: {len(errors)} accepts raised, the first: {errors[0]!r}")
            results[name][0].extend(seconds)
            results[name][1].extend(winners)
    rates = {name: len(seconds) / sum(seconds) for name, (seconds, _) in results.items()}
    for name, (seconds, winners) in results.items():
        bad = sum(1 for n in winners if n != HOT_SLOTS)
        print(f"   {name:<8} {rates[name]:6.1f} rounds/s (median round {statistics.median(seconds) * 1e3:6.1f} ms, "
              f"slowest {max(seconds) * 1e3:6.1f} ms); rounds without exactly {HOT_SLOTS} winners: {bad}; "
              f"'database is locked': {locked[name]}")
    ratio = rates["library"] / rates["raw"]
    print(f"   library / raw rounds/s {ratio:5.2f}x  (target >= 1.0x: {'OK' if ratio >= 1.0 else 'UNDER TARGET'})")
    for each in raws:
        each.close()


# -- PostgreSQL ----------------------------------------------------------------------------------


def postgres_section(server: PostgresServer) -> None:
    """Both scenarios on a durable PostgreSQL server; then the library's round trips per command."""
    durability = ("fsync", "synchronous_commit", "full_page_writes")
    print("   server: tests/postgres_server.py started with "
          f"{', '.join(f'{k}={v}' for k, v in DURABLE_SETTINGS.items() if k in durability)}"
          f" (PostgreSQL's defaults); Unix socket; {LIFECYCLES} lifecycles per scenario and side, alternating")
    url = server.create_database("bench_lifecycle")
    store = SQLAlchemyStore.from_url(url)
    store.create_all()
    raw = RawLifecycle(server.dsn("bench_lifecycle"), pg=True)
    compare(BroadcastLifecycle(store).kind(KIND), raw, 0.9)
    raw.close()
    _pg_round_trips(url)
    store.close()


def _pg_round_trips(url: str) -> None:
    """Round trips of each library command of the fill scenario (a one-connection store, traced)."""
    store = SQLAlchemyStore.from_url(url, pool_size=1, max_overflow=0)
    bookings = BroadcastLifecycle(store).kind(KIND)
    with store.engine.connect() as conn:
        dbapi = conn.connection.driver_connection
    for _ in range(6):  # warm-up: the function lookup; psycopg prepares a statement on its 5th use (a trip)
        library_scenarios(bookings)["fill"](Steps())
    traced: list[str] = []

    def trace(label: str, call: Callable[[], Any]) -> Any:
        with pg_trace(dbapi) as lines:
            result = call()
        trips, sent = round_trips(lines)
        traced.append(f"{label} {trips} ({' | '.join(sent)})")
        return result

    entity_id = trace("create", lambda: bookings.create("customer", slots=len(TRANSPORTERS))).id
    trace("start_broadcast", lambda: bookings.start_broadcast(entity_id, TRANSPORTERS))
    trace("activate", lambda: bookings.activate(entity_id, ttl=DAY))
    for transporter in TRANSPORTERS:
        trace("accept", lambda t=transporter: bookings.accept(entity_id, t))  # type: ignore[misc]
    trace("start_trip", lambda: bookings.start_trip(entity_id))
    trace("complete", lambda: bookings.complete(entity_id))
    print("   library round trips per command of the fill scenario:")
    for line in traced:
        print(f"      {line}")
    store.close()


def main(only: tuple[str, ...] = ()) -> None:
    """Print both scenarios on SQLite and PostgreSQL, and the SQLite hot row (``only`` some of
    ``sqlite``, ``hot``, ``pg``: those parts)."""
    if not only or "sqlite" in only or "hot" in only:
        print("-- 1. SQLite: ms per lifecycle at synchronous=FULL")
        sqlite_section(scenarios=not only or "sqlite" in only, hot=not only or "hot" in only)
    if only and "pg" not in only:
        return
    if find_binaries() is None:
        print("-- PostgreSQL: skipped, no server binaries (apt-get install postgresql)")
        return
    print("-- 3. PostgreSQL: ms per lifecycle, durable server")
    with PostgresServer(settings=DURABLE_SETTINGS) as server:
        postgres_section(server)


if __name__ == "__main__":
    main(tuple(sys.argv[1:]))
