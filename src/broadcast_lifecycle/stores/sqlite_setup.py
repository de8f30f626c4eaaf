"""SQLite done right: WAL, a busy timeout, and write transactions that take the write lock up front.

A deferred SQLite transaction that reads and then writes cannot upgrade its lock when another
writer is active and fails with "database is locked" however long the busy timeout is. Every
transaction on a configured engine starts with ``BEGIN IMMEDIATE`` instead, so writers queue on the
busy timeout rather than fail.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import Any

from sqlalchemy import Engine, event

__all__ = ["ThreadConnections", "configure_sqlite"]

_CONFIGURED = "broadcast_lifecycle_sqlite_configured"


def configure_sqlite(engine: Engine, *, synchronous: str = "NORMAL", busy_timeout_ms: int = 30_000,
                     cache_kib: int = 32_768) -> None:
    """Install the connection and transaction hooks on a SQLite ``engine`` (once; later calls do nothing).

    ``synchronous=NORMAL`` in WAL mode survives application crashes but may lose the last commits
    on power loss; pass ``"FULL"`` to fsync every commit. ``cache_kib`` is each connection's page
    cache (SQLite's default, 2 MiB, makes a sweep over 100,000 rows read pages back from the OS).
    """
    if engine.dialect.name != "sqlite" or getattr(engine, _CONFIGURED, False):
        return
    setattr(engine, _CONFIGURED, True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Python's sqlite3 would otherwise BEGIN (deferred) on its own; we issue BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA temp_store = MEMORY")  # the sweeper's scratch table never touches disk
        cursor.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class ThreadConnections:
    """One SQLite connection per thread for the SQL store's own statements.

    Checking a connection out of SQLAlchemy's pool and back in costs about as much as the Python
    of a whole transition (a queue, a condition, events, the reset). A SQLite connection is cheap,
    and one that sits between transactions holds no lock and no snapshot, so each thread keeps its
    own, as Django does: created by the engine (so its ``connect`` hooks configure it) and then
    detached from the pool. It is closed when its thread ends, by :meth:`close`, or by
    :meth:`discard` after a failure left its state unknown. A child process after ``fork`` opens
    its own instead of using the parent's.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._local = threading.local()
        self._held: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get(self) -> Any:
        """This thread's DBAPI connection (opened on first use)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None and not held.closed:
            if held.pid == os.getpid():
                return held.connection
            _INHERITED.append(held)  # the parent's, after fork: never use or close it here
        fairy = self._engine.raw_connection()
        connection = fairy.driver_connection
        fairy.detach()
        held = self._local.held = _Held(connection, os.getpid())
        with self._lock:
            self._held.add(held)
        return held.connection

    def discard(self) -> None:
        """Close this thread's connection (the next :meth:`get` opens a new one)."""
        held: _Held | None = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None and held.pid == os.getpid():
            held.close()

    def close(self) -> None:
        """Close every thread's connection (they are opened again on use)."""
        with self._lock:
            held = list(self._held)
            self._held.clear()
        for each in held:
            if each.pid == os.getpid():
                each.close()


_INHERITED: list[_Held] = []
"""Connections a forked child inherited: kept open, because closing one may act on the parent's files."""


class _Held:
    """A thread's connection; weakly tracked, so it goes when its thread's locals go."""

    __slots__ = ("__weakref__", "closed", "connection", "pid")

    def __init__(self, connection: Any, pid: int) -> None:
        self.connection = connection
        self.pid = pid
        self.closed = False

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):  # closing a broken connection: nothing more to undo
            self.connection.close()
