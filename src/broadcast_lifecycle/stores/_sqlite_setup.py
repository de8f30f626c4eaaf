"""SQLite: the library's own connections and transactions, without touching the host's.

A deferred SQLite transaction that reads and then writes cannot upgrade its lock when another
writer is active and fails with "database is locked" however long the busy timeout is. The
library's own write transactions therefore start with ``BEGIN IMMEDIATE``, on connections whose
driver issues no BEGIN of its own (Python's sqlite3 would otherwise open a deferred transaction
before each write, and a lone statement would leave it open). The host's connections, reads and
transactions stay as the host set them; the one change to the database is WAL (see
docs/persistence.md, "What the library changes on your engine").
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from ..errors import StoreError

__all__ = [
    "Borrowed", "SqliteSettings", "ThreadConnections", "in_transaction", "own_connection", "use_wal", "write_lock",
    "write_lock_key",
]


@dataclass(frozen=True, slots=True)
class SqliteSettings:
    """How the library sets up its own SQLite connections (the host's are left alone).

    ``synchronous=NORMAL`` in WAL mode survives application crashes but may lose the last commits
    on power loss; pass ``"FULL"`` to fsync every commit. ``cache_kib`` is each connection's page
    cache (SQLite's default, 2 MiB, makes a sweep over 100,000 rows read pages back from the OS).
    ``busy_timeout_ms`` is how long a library writer queues for the write lock. ``wal=False`` leaves
    the database's journal mode as it is (then a host's reads wait while a library commit holds
    the lock, and a commit waits for readers).
    """

    busy_timeout_ms: int = 30_000
    synchronous: str = "NORMAL"
    cache_kib: int = 32_768
    wal: bool = True

    def __post_init__(self) -> None:
        if self.synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {self.synchronous!r}")


def use_wal(connection: Any, settings: SqliteSettings) -> None:
    """Put the database in WAL mode (a property of the database file, kept across connections):
    readers never wait for the writer, nor the writer for readers. Nothing if ``settings.wal`` is off."""
    if settings.wal:
        connection.execute("PRAGMA journal_mode = WAL").close()


def own_connection(connection: Any, settings: SqliteSettings) -> None:
    """Set up a DBAPI connection the library keeps for itself (detached from the pool): no implicit
    transactions, the busy timeout, the durability and the caches of ``settings``; and WAL."""
    connection.isolation_level = None  # the library issues BEGIN IMMEDIATE and COMMIT itself
    cursor = connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}")
        cursor.execute(f"PRAGMA synchronous = {settings.synchronous}")
        cursor.execute("PRAGMA temp_store = MEMORY")  # the sweeper's scratch table never touches disk
        cursor.execute(f"PRAGMA cache_size = -{int(settings.cache_kib)}")
    finally:
        cursor.close()
    use_wal(connection, settings)


def in_transaction(connection: Any) -> bool:
    """Whether a sqlite3 connection, or SQLAlchemy's adapter of an aiosqlite one, is inside a transaction."""
    driver = getattr(connection, "driver_connection", connection)  # the adapter's aiosqlite connection
    return bool(driver.in_transaction)


def write_lock_key(database: str | None) -> str | None:
    """The key of :func:`write_lock` for the SQLite database ``database`` (the URL's), resolved once
    per store: the file's real path; ``None`` for an in-memory database, private to its connection."""
    if not database or database == ":memory:" or database.startswith("file::memory:") or "mode=memory" in database:
        return None
    return os.path.realpath(database.removeprefix("file:").split("?", 1)[0])


def write_lock(key: str) -> threading.RLock:
    """The lock this process's library writers take before ``BEGIN IMMEDIATE`` on one SQLite file
    (``key`` from :func:`write_lock_key`), whichever store or engine writes it.

    SQLite's busy handler sleeps and polls (1 ms, 2 ms, 5 ms ... up to 100 ms between tries), so
    threads queued on the database's write lock sleep on while it is free. Threads of one process
    instead queue here and the next one starts the moment the previous one commits; writers in
    other processes still meet the busy handler. Reentrant, so a write nested in a write (a host
    guard that writes) fails in SQLite at once instead of waiting on itself.
    """
    lock = _WRITE_LOCKS.get(key)
    if lock is None:
        with _WRITE_LOCKS_GUARD:
            lock = _WRITE_LOCKS.setdefault(key, threading.RLock())
    return lock


_WRITE_LOCKS: dict[str, threading.RLock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _forget_write_locks() -> None:
    """In a child after ``fork``: the parent's threads are gone, and any lock they held with them."""
    global _WRITE_LOCKS_GUARD  # noqa: PLW0603 (a fresh guard: the parent's may have been held at the fork)
    _WRITE_LOCKS_GUARD = threading.Lock()
    _WRITE_LOCKS.clear()


os.register_at_fork(after_in_child=_forget_write_locks)


class Borrowed:
    """A pool connection lent to one library write transaction: no implicit transactions and the
    library's busy timeout while it lasts, then the host's settings back (:meth:`restore`)."""

    __slots__ = ("_busy_timeout", "_connection", "_isolation_level")

    def __init__(self, connection: Any, settings: SqliteSettings) -> None:
        if in_transaction(connection):
            # Only a connection shared with the host can be (an in-memory database's, in this thread);
            # ending the host's transaction to begin ours would commit it behind its back.
            raise StoreError("could not write: this thread's SQLite connection is inside a transaction the "
                             "library did not begin; pass tx=<the Session that began it> to write in it")
        self._connection = connection
        self._isolation_level = connection.isolation_level
        cursor = connection.execute("PRAGMA busy_timeout")
        (self._busy_timeout,) = cursor.fetchone()
        cursor.close()
        connection.isolation_level = None
        connection.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}").close()

    def restore(self) -> None:
        """Give the connection its own settings back (after the transaction ended)."""
        self._connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout)}").close()
        self._connection.isolation_level = self._isolation_level


class ThreadConnections:
    """One SQLite connection per thread for the SQL store's own statements.

    Checking a connection out of SQLAlchemy's pool and back in costs about as much as the Python
    of a whole transition (a queue, a condition, events, the reset). A SQLite connection is cheap,
    and one that sits between transactions holds no lock and no snapshot, so each thread keeps its
    own, as Django does: created by the engine (so the host's ``connect`` hooks run on it), detached
    from the pool, then set up for the library (:func:`own_connection`): whatever the engine did
    with it before, it issues no BEGIN of its own. It is closed when its thread ends, by :meth:`close`, or by
    :meth:`discard` after a failure left its state unknown. A child process after ``fork`` opens
    its own instead of using the parent's.
    """

    def __init__(self, engine: Engine, settings: SqliteSettings | None = None) -> None:
        self._engine = engine
        self._settings = settings or SqliteSettings()
        self._local = threading.local()
        self._held: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get(self) -> Any:
        """This thread's DBAPI connection (opened on first use)."""
        return self.held().connection

    def held(self) -> _Held:
        """This thread's connection and its kept cursor (opened on first use)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is not None and not held.closed:
            if held.pid == _PID[0]:
                return held
            _INHERITED.append(held)  # the parent's, after fork: never use or close it here
        fairy = self._engine.raw_connection()
        connection: Any = fairy.driver_connection
        fairy.detach()
        try:
            own_connection(connection, self._settings)
        except BaseException:
            connection.close()
            raise
        held = self._local.held = _Held(connection, _PID[0])
        with self._lock:
            self._held.add(held)
        return held

    def discard(self) -> None:
        """Close this thread's connection (the next :meth:`get` opens a new one)."""
        held: _Held | None = getattr(self._local, "held", None)
        self._local.held = None
        if held is not None and held.pid == _PID[0]:
            held.close()

    def close(self) -> None:
        """Close every thread's connection (they are opened again on use)."""
        with self._lock:
            held = list(self._held)
            self._held.clear()
        for each in held:
            if each.pid == _PID[0]:
                each.close()


_PID = [os.getpid()]
"""This process's id, kept up to date across ``fork`` (``os.getpid`` is a system call, once per command)."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))

_INHERITED: list[_Held] = []
"""Connections a forked child inherited: kept open, because closing one may act on the parent's files."""


class _Held:
    """A thread's connection; weakly tracked, so it goes when its thread's locals go.

    ``cursor`` is kept for the connection's write transactions, which end with their COMMIT or
    ROLLBACK on it, so it never holds a statement open between them (a read or a lone statement
    takes a cursor of its own: one left mid-result, or a RETURNING not yet reset, would keep its
    snapshot or its write lock).
    """

    __slots__ = ("__weakref__", "closed", "connection", "cursor", "pid")

    def __init__(self, connection: Any, pid: int) -> None:
        self.connection = connection
        self.cursor: Any = connection.cursor()
        self.pid = pid
        self.closed = False

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):  # closing a broken connection: nothing more to undo
            self.connection.close()
