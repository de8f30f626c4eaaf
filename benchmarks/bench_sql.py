"""The cost of one persisted transition through the library against the raw driver doing the same
statements, on SQLite and PostgreSQL, and the hot-row race on PostgreSQL.

1. SQLite (a temp file; WAL, synchronous=NORMAL on both sides): us per transition, library vs raw
   ``sqlite3``. Target from the issue: library <= 1.5x raw.
2. PostgreSQL: us per transition, library vs raw psycopg in five round trips
   (BEGIN+SELECT ... FOR UPDATE | UPDATE | INSERT history | INSERT outbox | COMMIT). Target <= 0.5x.
3. PostgreSQL hot row: 16 threads accept 1 slot each on a fresh 5-slot broadcast; rounds/s, and
   exactly 5 winners in every round. Target >= 100 rounds/s.

The workload never ends the lifecycle: one broadcast of 10^6 slots, active, one notified
transporter who accepts and releases one slot alternately (active <-> partially_filled), no
receivers connected unless stated. Each section then explains the library's figure: statements or
round trips per transition, time inside the driver's execute calls against time outside them
(clocked without a profiler), and a cProfile of where the Python time goes.

Run it through ``benchmarks/run.py`` (``make bench``) or on its own: ``python benchmarks/bench_sql.py``.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import psycopg
from hot_rounds import hot_rounds
from pg import DRIVER, RawPgFive, RawPgOne, TimedPgCursor, next_state, pg_trace, round_trips
from postgres_server import SETTINGS, PostgresServer, find_binaries
from sqlalchemy import event

from broadcast_lifecycle import (
    BroadcastEvent,
    BroadcastLifecycle,
    ConcurrentUpdate,
    InvalidTransition,
    TransitionRefused,
)
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

__all__ = ["main"]

KIND = "booking"
TRANSPORTER = "transporter-1"
SLOTS = 1_000_000
REPEATS = 5
"""Timed batches per variant, interleaved; the report gives the best and the median."""
SQLITE_BATCH = 2_000
PG_BATCH = 1_000
HOT_THREADS = 16
HOT_SLOTS = 5
HOT_ROUNDS = 50
HOT_WARMUP = 3

SQLITE_PRAGMAS = ("PRAGMA busy_timeout = 30000", "PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL",
                  "PRAGMA temp_store = MEMORY", "PRAGMA cache_size = -32768")
"""What the store sets on its own connections (``SqliteSettings``' defaults); the raw connection gets the same."""

Step = Callable[[int], None]
"""Runs ``n`` transitions."""


# -- shared --------------------------------------------------------------------------------------


def _prepare(lifecycle: BroadcastLifecycle, customer: str, slots: int, transporters: list[str]) -> int:
    """A broadcast of ``slots`` slots, active for a day, with ``transporters`` notified."""
    entity_id = lifecycle.kind(KIND).create(customer, slots=slots).id
    assert isinstance(entity_id, int)
    lifecycle.kind(KIND).start_broadcast(entity_id, transporters)
    lifecycle.kind(KIND).activate(entity_id, ttl=timedelta(days=1))
    return entity_id


def _library_step(lifecycle: BroadcastLifecycle, entity_id: int) -> Step:
    def run(n: int) -> None:
        for _ in range(n // 2):
            lifecycle.kind(KIND).accept(entity_id, TRANSPORTER)
            lifecycle.kind(KIND).release(entity_id, TRANSPORTER)
    return run


def _measure(variants: dict[str, Step], batch: int) -> dict[str, tuple[float, float]]:
    """us per transition of each variant: (best, median) of REPEATS interleaved batches of ``batch``."""
    for run in variants.values():  # warm-up: page cache, prepared statements, the pool
        run(batch // 4)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(REPEATS):
        for name, run in variants.items():
            started = time.perf_counter()
            run(batch)
            samples[name].append((time.perf_counter() - started) / batch * 1e6)
    return {name: (min(values), statistics.median(values)) for name, values in samples.items()}


def _breakdown(variants: dict[str, Step], batch: int) -> None:
    """us per transition inside the driver's execute calls (timed cursors) and outside them."""
    print("   where the time goes, no profiler (driver = inside execute: binding, the database's work, the "
          "round trip; rest = Python outside it):")
    for run in variants.values():
        run(batch // 4)
    best: dict[str, tuple[float, float, float, dict[str, float]]] = {}
    for _ in range(3):
        for name, run in variants.items():
            DRIVER.reset()
            started = time.perf_counter()
            run(batch)
            total = time.perf_counter() - started
            if name not in best or total < best[name][0]:
                best[name] = (total, DRIVER.seconds, DRIVER.calls, DRIVER.by_statement)
    for name, (total, driver, calls, by_statement) in best.items():
        print(f"      {name:<34} total {total / batch * 1e6:6.1f} us = driver {driver / batch * 1e6:6.1f} us "
              f"({calls / batch:.1f} executes) + rest {(total - driver) / batch * 1e6:6.1f} us")
        print("         driver by statement: " + " | ".join(
            f"{' '.join(head.split()[:3])} {seconds / batch * 1e6:.1f}" for head, seconds in by_statement.items()))


def _line(label: str, figures: tuple[float, float]) -> None:
    best, median = figures
    print(f"   {label:<60} {best:7.1f} us  (median {median:7.1f})")


def _verdict(label: str, ratio: float, target: float) -> None:
    print(f"   {label:<60} {ratio:7.2f}x  (target <= {target}x: {'OK' if ratio <= target else 'OVER TARGET'})")


def _profile(run: Step, n: int, phases: tuple[str, ...]) -> None:
    """cProfile ``n`` transitions: own time by area and by function, and the library's phases
    (profiled figures are inflated by the profiler: compare them with each other only)."""
    profiler = cProfile.Profile()
    profiler.enable()
    run(n)
    profiler.disable()
    table: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = vars(pstats.Stats(profiler))["stats"]
    areas: dict[str, float] = {}
    for (path, _, func), (_, _, own, _, _) in table.items():
        areas[_area(path, func)] = areas.get(_area(path, func), 0.0) + own
    total = sum(areas.values())
    print(f"   cProfile of {n:,} library transitions ({total / n * 1e6:.0f} us each under the profiler), "
          "own time by area:")
    for area, own in sorted(areas.items(), key=lambda item: -item[1])[:7]:
        print(f"      {own / n * 1e6:6.1f} us {own / total:6.1%}  {area}")
    print("   top functions by own time (us per transition; calls per transition):")
    for (path, line, func), (_, calls, own, cum, _) in sorted(table.items(), key=lambda item: -item[1][2])[:12]:
        where = "built-in" if path == "~" else f"{_short(path)}:{line}"
        print(f"      {own / n * 1e6:6.1f} own {cum / n * 1e6:6.1f} cum {calls / n:4.1f}x  {func}  ({where})")
    print("   library phases (cumulative us per transition):")
    for (path, line, func), (_, calls, _, cum, _) in sorted(table.items(), key=lambda item: -item[1][3]):
        if func in phases and "broadcast_lifecycle" in path:
            print(f"      {cum / n * 1e6:6.1f} cum {calls / n:4.1f}x  {func}  ({_short(path)}:{line})")


def _area(path: str, func: str) -> str:
    if path == "~":
        if "sqlite3" in func:
            return "sqlite3 (C: execute, fetch, commit)"
        return "built-ins (" + func.split(" of ", maxsplit=1)[0].strip("<{") + ")"
    for marker, name in (("/broadcast_lifecycle/", "broadcast_lifecycle (library code)"),
                         ("/sqlalchemy/", "sqlalchemy (pool, events, type processors)"),
                         ("/psycopg/", "psycopg (incl. waiting for the server)"), ("/blinker/", "blinker")):
        if marker in path:
            return name
    return "stdlib " + Path(path).stem


def _short(path: str) -> str:
    parts = Path(path).parts
    for anchor in ("broadcast_lifecycle", "sqlalchemy", "psycopg"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor):])
    return Path(path).name


def _noop_receiver(event: BroadcastEvent) -> None:
    del event


# -- 1. SQLite -----------------------------------------------------------------------------------


class TimedSqliteCursor(sqlite3.Cursor):
    """A sqlite3 cursor that adds each execute to the driver clock."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().execute(*args, **kwargs)
        finally:
            DRIVER.add(started, args)

    def executemany(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().executemany(*args, **kwargs)
        finally:
            DRIVER.add(started, args)


class TimedSqliteConnection(sqlite3.Connection):
    """A sqlite3 connection whose cursors are :class:`TimedSqliteCursor`."""

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        if not args and "factory" not in kwargs:
            args = (TimedSqliteCursor,)
        return super().cursor(*args, **kwargs)


def _sqlite_now() -> str:
    """Now, as SQLAlchemy stores a DateTime on SQLite."""
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(" ", "microseconds")


class RawSqlite:
    """What the library does per transition, on a bare ``sqlite3`` connection."""

    LOAD = ("SELECT status, customer_id, slots_requested, slots_filled, version, expires_at, "
            "(SELECT slots_held FROM bl_recipients WHERE kind = ? AND entity_id = ? AND transporter_id = ?) "
            "FROM bl_broadcasts WHERE id = ? AND kind = ?")
    UPDATE = ("UPDATE bl_broadcasts SET status = ?, state_changed_at = ?, version = ?, "
              "slots_filled = slots_filled + ?, expires_at = ? WHERE id = ? AND kind = ? AND version = ?")
    HOLD = ("UPDATE bl_recipients SET slots_held = slots_held + ?, response = ?, responded_at = ? "
            "WHERE kind = ? AND entity_id = ? AND transporter_id = ?")
    HISTORY = ('INSERT INTO bl_transition_history (kind, entity_id, from_status, to_status, "trigger", actor, '
               "reason, meta, at, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
    OUTBOX = ("INSERT INTO bl_outbox (event_id, name, topic, kind, id_field, entity_id, status, previous_status, "
              'state_changed_at, version, slots_filled, slots_requested, expires_at, "trigger", reason, recipients, '
              "created_at, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)")
    MARK = "UPDATE bl_outbox SET delivered_at = ? WHERE event_id = ?"

    def __init__(self, path: str, entity_id: int) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, factory=TimedSqliteConnection)
        for pragma in SQLITE_PRAGMAS:
            self.conn.execute(pragma)
        self.entity_id = entity_id
        self.key = str(entity_id)

    def transition(self, accept: bool, mark: bool) -> None:
        """Accept (or release) one slot: the library's statements, in one transaction."""
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute(self.LOAD, (KIND, self.key, TRANSPORTER, self.entity_id, KIND))
            status, customer, requested, filled, version, expires_at, held = cur.fetchone()
            to, delta = next_state(status, requested, filled, held, accept)
            trigger = "accept" if accept else "release"
            now = _sqlite_now()
            cur.execute(self.UPDATE, (to, now, version + 1, delta, expires_at, self.entity_id, KIND, version))
            if cur.rowcount != 1:
                raise RuntimeError("raw compare-and-set lost")
            cur.execute(self.HOLD, (delta, trigger, now, KIND, self.key, TRANSPORTER))
            cur.execute(self.HISTORY, (KIND, self.key, status, to, trigger, TRANSPORTER, None, "{}", now, version + 1))
            event_id = str(uuid.uuid4())
            cur.execute(self.OUTBOX, (event_id, "BROADCAST_STATE_CHANGED", "state_changed", KIND, "bookingId", self.key,
                                      to, status, now, version + 1, filled + delta, requested, expires_at, trigger,
                                      None, json.dumps([["customer", customer]]), now))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        if mark:  # the after-commit dispatch's second, short transaction
            cur.execute(self.MARK, (_sqlite_now(), event_id))

    def step(self, mark: bool) -> Step:
        def run(n: int) -> None:
            for _ in range(n // 2):
                self.transition(True, mark)
                self.transition(False, mark)
        return run


def _sqlite_statements(url: str, entity_id: int) -> None:
    """The statements the library sends per accept (a traced store of its own)."""
    store = SQLAlchemyStore.from_url(url)
    statements: list[str] = []

    @event.listens_for(store.engine, "connect")
    def _trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(statements.append)

    for receivers in (False, True):
        lifecycle = BroadcastLifecycle(store)
        if receivers:
            lifecycle.bus.connect(_noop_receiver)
        _library_step(lifecycle, entity_id)(2)
        statements.clear()
        lifecycle.kind(KIND).accept(entity_id, TRANSPORTER)
        heads = [" ".join(s.split()[:2]) for s in statements]
        print(f"   library statements per accept ({'1 receiver' if receivers else 'no receivers'}): "
              f"{len(statements)}: {' | '.join(heads)}")
        lifecycle.kind(KIND).release(entity_id, TRANSPORTER)
    print("   raw statements per accept: 7: BEGIN IMMEDIATE | SELECT | UPDATE bl_broadcasts | UPDATE bl_recipients | "
          "INSERT history | INSERT outbox | COMMIT (+ UPDATE bl_outbox with the mark)")
    store.engine.dispose()


def sqlite_section() -> None:
    """Library vs raw sqlite3 on one file."""
    print(f"   settings, both sides: {', '.join(p.removeprefix('PRAGMA ') for p in SQLITE_PRAGMAS)}; "
          "writes in BEGIN IMMEDIATE")
    print(f"   workload: one booking of {SLOTS:,} slots, active, 1 notified transporter accepting and releasing 1 slot "
          f"alternately; {REPEATS} interleaved batches of {SQLITE_BATCH:,} transitions per variant")
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/bench.db"
        url = f"sqlite:///{path}"
        store = SQLAlchemyStore.from_url(url)
        store.create_all()
        lifecycle = BroadcastLifecycle(store)
        listening = BroadcastLifecycle(store)
        listening.bus.connect(_noop_receiver)
        lib_id = _prepare(lifecycle, "customer-lib", SLOTS, [TRANSPORTER])
        recv_id = _prepare(lifecycle, "customer-recv", SLOTS, [TRANSPORTER])
        raw = RawSqlite(path, _prepare(lifecycle, "customer-raw", SLOTS, [TRANSPORTER]))
        results = _measure({
            "library": _library_step(lifecycle, lib_id),
            "library+receiver": _library_step(listening, recv_id),
            "raw": raw.step(mark=False),
            "raw+mark": raw.step(mark=True),
        }, SQLITE_BATCH)
        _line("library, no receivers (no mark-delivered write)", results["library"])
        _line("library, 1 no-op receiver (+ mark-delivered statement)", results["library+receiver"])
        _line("raw sqlite3, the same statements in one transaction", results["raw"])
        _line("raw sqlite3 + the after-commit mark-delivered UPDATE", results["raw+mark"])
        _verdict("library / raw (both without the mark)", results["library"][0] / results["raw"][0], 1.5)
        _verdict("library+receiver / raw+mark (both with it)", results["library+receiver"][0] / results["raw+mark"][0],
                 1.5)
        _verdict("library (no receivers) / raw+mark", results["library"][0] / results["raw+mark"][0], 1.5)
        _sqlite_statements(url, lib_id)
        timed = SQLAlchemyStore.from_url(url, connect_args={"factory": TimedSqliteConnection})
        _breakdown({"library, no receivers": _library_step(BroadcastLifecycle(timed), lib_id),
                    "raw sqlite3": raw.step(mark=False)}, SQLITE_BATCH)
        _profile(_library_step(lifecycle, lib_id), SQLITE_BATCH,
                 ("_run", "load", "apply", "decide", "cursor", "events", "history_entry", "_committed", "_announce"))
        raw.conn.close()
        timed.engine.dispose()
        store.engine.dispose()


# -- 2. PostgreSQL -------------------------------------------------------------------------------


def _pg_round_trips(url: str, entity_id: int, five: RawPgFive, one: RawPgOne, one_id: int) -> None:
    """Round trips per accept: the library (a one-connection store, traced) and the raw versions."""
    store = SQLAlchemyStore.from_url(url, pool_size=1, max_overflow=0)
    for receivers in (False, True):
        lifecycle = BroadcastLifecycle(store)
        if receivers:
            lifecycle.bus.connect(_noop_receiver)
        _library_step(lifecycle, entity_id)(2)
        with store.engine.connect() as conn:
            dbapi = conn.connection.driver_connection
        with pg_trace(dbapi) as lines:
            lifecycle.kind(KIND).accept(entity_id, TRANSPORTER)
        trips, sent = round_trips(lines)
        print(f"   library round trips per accept ({'1 receiver' if receivers else 'no receivers'}): {trips}: "
              f"{' | '.join(sent)}")
        lifecycle.kind(KIND).release(entity_id, TRANSPORTER)
    store.engine.dispose()
    for hold in (False, True):
        with pg_trace(five.conn) as lines:
            five.transition(True, hold)
        trips, sent = round_trips(lines)
        print(f"   raw five{' + holder UPDATE' if hold else ''} round trips per accept: {trips}: {' | '.join(sent)}")
        five.transition(False, hold)
    with pg_trace(one.conn) as lines:
        one.transition(one_id, True)
    trips, sent = round_trips(lines)
    print(f"   one-statement prototype round trips per accept: {trips}: {' | '.join(sent)}")
    one.transition(one_id, False)


def _select_one(dsn: str) -> tuple[psycopg.Connection[Any], Step, Step]:
    """Two measures of one round trip: ``SELECT 1`` (simple protocol) and ``SELECT %s`` (extended
    protocol, prepared after 5 runs: how every library and raw statement here travels)."""
    conn = psycopg.connect(dsn, autocommit=True)
    cur = conn.cursor()

    def simple(n: int) -> None:
        for _ in range(n):
            cur.execute("SELECT 1")
            cur.fetchone()

    def extended(n: int) -> None:
        for _ in range(n):
            cur.execute("SELECT %s::int", (1,))
            cur.fetchone()
    return conn, simple, extended


def postgres_section(server: PostgresServer, url: str, dbname: str) -> None:
    """Library vs raw psycopg, per transition."""
    print("   server: tests/postgres_server.py (PostgreSQL, Unix socket, "
          f"{', '.join(f'{k}={v}' for k, v in SETTINGS.items() if k in ('fsync', 'synchronous_commit'))}); "
          "both sides on the same server and database")
    print(f"   workload as for SQLite; {REPEATS} interleaved batches of {PG_BATCH:,} transitions per variant "
          "(the round-trip probes are interleaved too: they vary with the machine's load)")
    dsn = server.dsn(dbname)
    store = SQLAlchemyStore.from_url(url)
    store.create_all()
    lifecycle = BroadcastLifecycle(store)
    listening = BroadcastLifecycle(store)
    listening.bus.connect(_noop_receiver)
    lib_id = _prepare(lifecycle, "customer-lib", SLOTS, [TRANSPORTER])
    recv_id = _prepare(lifecycle, "customer-recv", SLOTS, [TRANSPORTER])
    five = RawPgFive(dsn, KIND, _prepare(lifecycle, "customer-raw", SLOTS, [TRANSPORTER]), TRANSPORTER)
    one = RawPgOne(dsn, KIND, TRANSPORTER)
    one_id = _prepare(lifecycle, "customer-one", SLOTS, [TRANSPORTER])
    ping, select_simple, select_extended = _select_one(dsn)
    ping.execute("ANALYZE")  # planner statistics, as autovacuum would have them: without, the tiny table's
    # lookups by (id, kind) may take the (kind, customer_id) index and walk every dead row version
    results = _measure({
        "select1": select_simple,
        "select_param": select_extended,
        "library": _library_step(lifecycle, lib_id),
        "library+receiver": _library_step(listening, recv_id),
        "raw5": five.step(hold=False),
        "raw6": five.step(hold=True),
        "one": one.step(one_id),
    }, PG_BATCH)
    _line("one round trip: raw SELECT 1 (simple protocol)", results["select1"])
    _line("one round trip: raw SELECT %s (extended, prepared: as below)", results["select_param"])
    print("   (these probes return before the client sleeps; a statement with real server work pays the full "
          "wake-up latency, ~60-80 us more on a small VM: see 'driver by statement' below)")
    _line("library, no receivers", results["library"])
    _line("library, 1 no-op receiver (+ mark-delivered)", results["library+receiver"])
    _line("raw psycopg, the issue's five round trips", results["raw5"])
    _line("raw psycopg, five + the slot-holder UPDATE (library's work)", results["raw6"])
    _line("raw psycopg, one-statement prototype (see pg.ONE_STATEMENT)", results["one"])
    _verdict("library / raw five round trips", results["library"][0] / results["raw5"][0], 0.5)
    _verdict("library+receiver / raw five round trips", results["library+receiver"][0] / results["raw5"][0], 0.5)
    _verdict("library / raw with the same work (six round trips)", results["library"][0] / results["raw6"][0], 0.5)
    _verdict("one-statement prototype / raw five round trips", results["one"][0] / results["raw5"][0], 0.5)
    _pg_round_trips(url, lib_id, five, one, one_id)
    timed = SQLAlchemyStore.from_url(url)
    event.listen(timed.engine, "connect",
                 lambda dbapi_connection, _record: setattr(dbapi_connection, "cursor_factory", TimedPgCursor))
    _breakdown({"library, no receivers": _library_step(BroadcastLifecycle(timed), lib_id),
                "raw five round trips": five.step(hold=False),
                "one-statement prototype": one.step(one_id)}, PG_BATCH)
    _profile(_library_step(lifecycle, lib_id), PG_BATCH,
             ("_run", "load", "apply", "_apply_in_one_statement", "decide", "cursor", "events", "event_params",
              "history_entry", "to_json", "_committed", "_announce"))
    for conn in (five.conn, one.conn, ping):
        conn.close()
    timed.engine.dispose()
    store.engine.dispose()


# -- 3. PostgreSQL hot row -----------------------------------------------------------------------


def _hot_rounds(prepare: Callable[[int], int], work: Callable[[int, int], bool],
                ) -> tuple[list[float], list[int], list[BaseException]]:
    """:func:`hot_rounds.hot_rounds` with this section's thread and round counts."""
    return hot_rounds(HOT_THREADS, HOT_WARMUP, HOT_ROUNDS, prepare, work)


def _hot_report(label: str, seconds: list[float], winners: list[int], errors: list[BaseException]) -> None:
    rate = len(seconds) / sum(seconds)
    print(f"   {label:<48} {rate:6.1f} rounds/s  (median round {statistics.median(seconds) * 1e3:5.1f} ms, "
          f"slowest {max(seconds) * 1e3:5.1f} ms; target >= 100: {'OK' if rate >= 100 else 'UNDER TARGET'})")
    bad = [n for n in winners if n != HOT_SLOTS]
    if bad:
        print(f"   !!! VIOLATION: {len(bad)} of {len(winners)} rounds did not have exactly {HOT_SLOTS} winners: {bad}")
    else:
        print(f"      exactly {HOT_SLOTS} winners in each of the {len(winners)} rounds")
    if errors:
        print(f"   !!! {len(errors)} unexpected errors; the first: {type(errors[0]).__name__}: {errors[0]}")


def hot_row_section(server: PostgresServer, url: str, dbname: str) -> None:
    """16 threads race for 5 slots: the library, the one-statement prototype, one conditional UPDATE."""
    print(f"   {HOT_THREADS} threads (threading.Barrier) each accept 1 slot of a fresh {HOT_SLOTS}-slot booking "
          f"(all {HOT_THREADS} notified); {HOT_ROUNDS} timed rounds after {HOT_WARMUP} warm-up rounds; "
          f"{os.cpu_count()} CPUs; the library's pool holds {HOT_THREADS + 2} connections")
    store = SQLAlchemyStore.from_url(url, pool_size=HOT_THREADS + 2, max_overflow=0)
    lifecycle = BroadcastLifecycle(store)
    transporters = [f"hot-{i}" for i in range(HOT_THREADS)]
    lost = [0]
    apply = store.apply

    def counting_apply(*args: Any, **kwargs: Any) -> Any:
        committed = apply(*args, **kwargs)
        if committed is None:
            lost[0] += 1
        return committed

    store.apply = counting_apply  # type: ignore[method-assign]

    def notified_broadcast(number: int) -> int:
        return _prepare(lifecycle, f"hot-customer-{number}", HOT_SLOTS, transporters)

    def accept(index: int, entity_id: int) -> bool:
        try:
            lifecycle.kind(KIND).accept(entity_id, transporters[index])
        except (InvalidTransition, TransitionRefused):
            return False
        except ConcurrentUpdate as exc:
            raise RuntimeError(f"retries exhausted: {exc}") from exc
        return True

    seconds, winners, errors = _hot_rounds(notified_broadcast, accept)
    _hot_report("library accept (one statement; refusals read back)", seconds, winners, errors)
    print(f"      lost compare-and-set races: {lost[0] / (HOT_ROUNDS + HOT_WARMUP):.1f} per round "
          "(each costs a re-read and another attempt)")
    store.apply = apply  # type: ignore[method-assign]

    dsn = server.dsn(dbname)
    ones = [RawPgOne(dsn, KIND, transporter) for transporter in transporters]
    seconds, winners, errors = _hot_rounds(notified_broadcast, lambda index, entity_id: ones[index].transition(
        entity_id, True))
    _hot_report("one-statement prototype (fill guard, no read)", seconds, winners, errors)

    connections = [psycopg.connect(dsn, autocommit=True) for _ in range(HOT_THREADS)]
    update = "UPDATE bl_broadcasts SET slots_filled = slots_filled + 1 WHERE id = %s AND slots_filled < slots_requested"

    def fresh_row(number: int) -> int:
        entity_id = lifecycle.kind(KIND).create(f"raw-hot-{number}", slots=HOT_SLOTS).id
        assert isinstance(entity_id, int)
        return entity_id

    seconds, winners, errors = _hot_rounds(
        fresh_row, lambda index, entity_id: connections[index].execute(update, (entity_id,)).rowcount == 1)
    _hot_report("raw single conditional UPDATE (reference)", seconds, winners, errors)
    for conn in (*connections, *(one.conn for one in ones)):
        conn.close()
    store.engine.dispose()


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    """Print the SQLite and PostgreSQL transition costs and the hot-row race."""
    print("-- 1. SQLite: us per persisted transition")
    sqlite_section()
    if find_binaries() is None:
        print("-- PostgreSQL: skipped, no server binaries (apt-get install postgresql)")
        return
    with PostgresServer() as server:
        dbname = "bench_sql"
        url = server.create_database(dbname)
        print("-- 2. PostgreSQL: us per persisted transition")
        postgres_section(server, url, dbname)
        print(f"-- 3. PostgreSQL hot row: {HOT_THREADS} threads, {HOT_SLOTS} slots")
        hot_row_section(server, url, dbname)


if __name__ == "__main__":
    main()
