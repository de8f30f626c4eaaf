"""``make bench``: run the benchmark sections in one process and print their figures.

``python benchmarks/run.py`` runs every section; ``python benchmarks/run.py core`` only those whose
title contains "core". Add a section by appending ``(title, callable)`` to :data:`SECTIONS`.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Callable, Sequence

import bench_app
import bench_async
import bench_core
import bench_lifecycle
import bench_sql
import bench_sweep

import broadcast_lifecycle

Section = tuple[str, Callable[[], None]]

SECTIONS: list[Section] = [
    ("core: decide() vs dict lookup vs transitions; memory per broadcast", bench_core.main),
    ("lifecycle: whole lifecycles vs the raw driver at default durability; SQLite hot row (16 threads)",
     bench_lifecycle.main),
    ("sweep: 50,000 overdue among 100,000 on SQLite and PostgreSQL, vs the raw set-based sweep", bench_sweep.main),
    ("sql: us per transition vs raw sqlite3 and psycopg; PostgreSQL hot row (16 threads, 5 slots)", bench_sql.main),
    ("async: us per transition, async vs sync vs raw aiosqlite/psycopg/asyncpg; PostgreSQL hot row (16 tasks)",
     bench_async.main),
    ("app: the example app's accept -> customer event latency, 200 clients, one node and two with Redis, "
     "vs a bare python-socketio emit", bench_app.main),
]
"""Every section, in the order they run."""


def main(argv: Sequence[str] = ()) -> int:
    """Run the sections whose title contains one of ``argv`` (all of them when empty)."""
    chosen = [(title, run) for title, run in SECTIONS if not argv or any(word in title for word in argv)]
    if not chosen:
        print(f"no section matches {' '.join(argv)!r}; sections: {[title for title, _ in SECTIONS]}")
        return 2
    print(f"broadcast_lifecycle {broadcast_lifecycle.__version__} on Python {platform.python_version()} "
          f"({platform.python_implementation()}, {platform.machine()})")
    for title, run in chosen:
        print(f"\n== {title}")
        started = time.perf_counter()
        run()
        print(f"   [{time.perf_counter() - started:.1f} s]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
