"""libpq protocol tracing of a psycopg connection: the round trips a block of code makes, and what it
sent (shared by the tests and the benchmarks)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from psycopg import pq

__all__ = ["pg_trace", "round_trips"]


@contextmanager
def pg_trace(conn: Any) -> Iterator[list[str]]:
    """libpq's protocol trace of ``conn`` (a psycopg connection) while the block runs; the lines
    are filled in when it ends."""
    fd, path = tempfile.mkstemp(prefix="bl-trace-")
    lines: list[str] = []
    conn.pgconn.trace(fd)
    conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
    try:
        yield lines
    finally:
        conn.pgconn.untrace()
        os.close(fd)
        lines.extend(Path(path).read_text().splitlines())
        os.unlink(path)


def round_trips(lines: list[str]) -> tuple[int, list[str]]:
    """Round trips (one ReadyForQuery each) in a trace, and what was sent: the first words of each
    statement, or the name of the prepared statement that ran."""
    trips = sum(1 for line in lines if line.startswith("B") and "ReadyForQuery" in line)
    sent: list[str] = []
    for line in lines:
        fields = line.split("\t")
        if len(fields) < 4 or fields[0] != "F":
            continue
        text = fields[3].strip()
        if fields[2] == "Query":
            sent.append(" ".join(text.strip('"').split()[:3]))
        elif fields[2] == "Parse":
            sent.append(" ".join(text.split('" "', 1)[-1].split()[:3]))
        elif fields[2] == "Bind" and '"_pg3_' in text:
            sent.append("prepared " + text.split()[1].strip('"'))
    return trips, sent
