"""The SQL store's connections, one part of it: cursors in the host's transaction or in one of the
store's own, SQLAlchemy Core connections, and, on SQLite, the store's own per-thread (or per-loop)
connections and its in-process write lock."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.pool import QueuePool

from ._host_session import begin_in_host, host_savepoint, joined_connection
from ._sql_translate import ErrorTranslator
from ._sqlite_setup import (
    Borrowed,
    SqliteSettings,
    ThreadConnections,
    in_transaction,
    use_wal,
    write_lock,
    write_lock_key,
)
from .writes import AfterCommit, Committed

if TYPE_CHECKING:
    from ._loop_connections import LoopConnections, OwnConnection

__all__ = ["Committing", "LostRace", "SqlConnections"]

T = TypeVar("T")
_CURSOR = "broadcast_lifecycle.cursor"


Committing = Callable[[Committed, AfterCommit, object], Committed]
"""The store's hand-off of a committed write (``committed, after_commit, tx``): its events dispatched now,
or when the host's transaction ``tx`` commits."""


class LostRace(Exception):
    """Internal: a conditional write matched no row; roll back and report ``None``."""


class SqlConnections:
    """How the SQL store reaches its database, for every other part of it.

    On SQLite on a file the store keeps a connection per thread (:class:`ThreadConnections`) instead
    of the pool's, set up by ``sqlite`` (:class:`SqliteSettings`), and its writes take this process's
    write lock on the file before ``BEGIN IMMEDIATE``; on an asyncio engine its own connections are
    shared by the loop's tasks. Database errors come out as the library's (``errors``).
    """

    def __init__(self, engine: Engine, sqlite: SqliteSettings, errors: ErrorTranslator) -> None:
        self.engine = engine
        self.pg = engine.dialect.name == "postgresql"
        self.sqlite = sqlite
        """SQLite: how the library's own connections, and pool connections lent to its writes, are set up."""
        self.errors = errors
        # Per-thread connections only where the pool keeps connections anyway (a file database);
        # a NullPool or an in-memory database's pool has its reasons. Never for an asyncio driver: one
        # thread runs every task there (and AsyncAdaptedQueuePool is a QueuePool too).
        self.threads = (ThreadConnections(engine, sqlite) if not self.pg and not engine.dialect.is_async
                        and isinstance(engine.pool, QueuePool) else None)
        """SQLite on a file: each thread's own connection, used instead of the pool."""
        self.loop_connections: LoopConnections | None = None
        """On an asyncio engine with a pool: the store's own connections, shared by the loop's tasks."""
        if not self.pg and engine.dialect.is_async:
            from ._loop_connections import LoopConnections, roll_back_before_close

            roll_back_before_close(engine)
            if isinstance(engine.pool, QueuePool):  # the async pool of a file database (as for ThreadConnections)
                self.loop_connections = LoopConnections(engine, sqlite, engine.pool.size() + 5)
        elif engine.dialect.is_async and isinstance(engine.pool, QueuePool):  # PostgreSQL: no checkout, no flips
            from ._loop_connections import postgresql_connections

            self.loop_connections = postgresql_connections(engine, engine.pool.size() + 5)
        # The in-process write lock: for threads; one loop's tasks share its thread (they meet SQLite's busy handler).
        self._write_key = None if self.pg or engine.dialect.is_async else write_lock_key(engine.url.database)
        self._wal_checked = False

    def close(self) -> None:
        """Close the store's own connections (it opens them again if used)."""
        if self.threads is not None:
            self.threads.close()
        if self.loop_connections is not None:
            self.loop_connections.close()

    def cursor(self, tx: object, write: bool, single: bool = False) -> _Cursor:
        """A DBAPI cursor: in the host's transaction, or in a transaction of our own for writes.

        ``single`` marks one self-contained write statement: it runs in autocommit, which is
        atomic and saves the BEGIN and COMMIT (on PostgreSQL, two round trips).
        """
        return _Cursor(self, tx, write, single)

    def transaction(self, tx: object, body: Callable[[Any], T]) -> T:
        """``body(cursor)`` in a write transaction: the host's (``tx``, in a savepoint) or one of ours.

        On SQLite on an asyncio engine, a transaction of ours runs whole on the loop's thread when it cannot
        wait there, else in one hop to aiosqlite's thread (see :meth:`.async_sqlite.AiosqliteCursor.transaction`),
        never a hop per statement; ``body`` must not touch the event loop (the decision and host guards do not).
        """
        if tx is None and self.loop_connections is not None and not self.pg:
            connections = self.loop_connections
            try:
                held = connections.get()
                try:
                    return held.cursor.transaction(body)  # type: ignore[no-any-return]
                finally:
                    connections.put(held)  # closed instead if its transaction is still open, or it is closed
            except Exception as exc:  # as errors.wrap, inline: this runs on every async SQLite command
                wrapped = self.errors.wrapped(exc, "write")
                if wrapped is None:
                    raise
                raise wrapped from exc
        if tx is None and self.threads is not None:
            return self._thread_transaction(self.threads, body)
        with self.cursor(tx, write=True) as cur:
            return body(cur)

    def _thread_transaction(self, threads: ThreadConnections, body: Callable[[Any], T]) -> T:
        """:meth:`transaction` of our own on this thread's connection (SQLite on a file, from threads): as
        :class:`_Cursor` does it, written out for the path every sync SQLite command takes, on the
        connection's kept cursor."""
        lock = self.acquire_write_lock()
        try:
            try:
                cur = threads.held().cursor
                cur.execute("BEGIN IMMEDIATE")
            except BaseException:
                threads.discard()  # its state is unknown: the next command opens a new one
                raise
            try:
                result = body(cur)
            except BaseException:
                try:
                    cur.execute("ROLLBACK")
                except BaseException:
                    threads.discard()
                raise  # the body's exception, wrapped below
            try:
                cur.execute("COMMIT")
            except BaseException:
                threads.discard()
                raise
            return result
        except Exception as exc:
            wrapped = self.errors.wrapped(exc, "write")
            if wrapped is None:
                raise
            raise wrapped from exc
        finally:
            if lock is not None:
                lock.release()

    @contextmanager
    def core(self, tx: object, write: bool = False) -> Iterator[Any]:
        """A SQLAlchemy ``Connection``: the host's (``tx``), or one in a transaction of our own.

        On SQLite a write transaction of our own runs on a connection that issues no BEGIN of its
        own while we hold it (:class:`Borrowed`) and starts with ``BEGIN IMMEDIATE`` (unless a
        ``begin`` hook of the host's engine began it already, as the host chose), so its savepoints
        nest in it and nothing is left open. Reads run as the engine runs them.
        """
        with self.errors.wrap("write" if write else "query"):
            if tx is not None and write:
                conn = joined_connection(tx)
                with host_savepoint(conn):
                    yield conn
            elif tx is not None:
                yield joined_connection(tx)
            elif write and not self.pg:
                with self.write_locked(), self.engine.connect() as conn:
                    driver: Any = conn.connection.dbapi_connection  # as adapted: an aiosqlite one's awaits
                    borrowed = self.borrow(driver)
                    try:
                        with conn.begin():
                            if not in_transaction(driver):
                                driver.execute("BEGIN IMMEDIATE").close()
                            yield conn
                    finally:
                        if not conn.invalidated:  # else closed (say, by a cancellation): nothing to give back
                            borrowed.restore()
            else:
                with self.engine.begin() as conn:
                    yield conn

    @contextmanager
    def write_locked(self) -> Iterator[None]:
        """SQLite: hold this process's write lock on the file (see :func:`._sqlite_setup.write_lock`)
        for one write of ours; after the busy timeout without it, write anyway (SQLite decides)."""
        lock = self.acquire_write_lock()
        try:
            yield
        finally:
            if lock is not None:
                lock.release()

    def acquire_write_lock(self) -> threading.RLock | None:
        """SQLite on a file, from threads: this process's write lock on it, or ``None`` (none to take,
        or not free within the busy timeout)."""
        if self._write_key is None:
            return None
        lock = write_lock(self._write_key)
        # Trying first costs less than acquire(timeout=...), which sets up a timed wait even when the lock is free.
        return lock if lock.acquire(False) or lock.acquire(timeout=self.sqlite.busy_timeout_ms / 1000) else None

    def borrow(self, driver_connection: Any) -> Borrowed:
        """Lend a SQLite pool connection to one write transaction of ours (see :class:`Borrowed`)."""
        borrowed = Borrowed(driver_connection, self.sqlite)
        if not self._wal_checked:
            use_wal(driver_connection, self.sqlite)
            self._wal_checked = True
        return borrowed


class _Cursor:
    """The context manager behind :meth:`SqlConnections.cursor` (a class: it runs on every command)."""

    __slots__ = ("_borrowed", "_cur", "_fairy", "_held", "_joined", "_locked", "_own", "_parts", "_single", "_tx",
                 "_write")

    def __init__(self, parts: SqlConnections, tx: object, write: bool, single: bool) -> None:
        self._parts, self._tx, self._write, self._single = parts, tx, write, single
        self._fairy: Any = None
        self._held: OwnConnection | None = None  # SQLite on an asyncio engine: the store's own connection
        self._borrowed: Borrowed | None = None  # SQLite: a pool connection lent to this write
        self._locked: threading.RLock | None = None  # SQLite: this process's write lock on the file, held
        self._own = False  # this cursor began the transaction, so it commits or rolls back
        self._joined = False  # this cursor set a savepoint in the host's transaction, so it releases it

    def __enter__(self) -> Any:
        parts = self._parts
        try:
            if self._tx is not None:
                conn = joined_connection(self._tx)
                cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                if self._write:
                    begin_in_host(conn)
                    cur.execute(f"SAVEPOINT {_SAVEPOINT}")
                    self._joined = True
                self._cur = cur
                return cur
            if self._write and not parts.pg:
                self._locked = parts.acquire_write_lock()
            raw: Any
            cur = None
            if parts.threads is not None:
                raw = parts.threads.get()
            elif parts.loop_connections is not None:
                self._held = parts.loop_connections.get()
                raw, cur = self._held.connection, self._held.cursor
            else:
                self._fairy = parts.engine.raw_connection()
                # The DBAPI connection as SQLAlchemy adapts it: the driver's own for a sync driver, sync-looking
                # methods that await on the loop (in a greenlet, see async_store) for an asyncio one.
                raw = self._fairy.dbapi_connection
                if self._write and not parts.pg:
                    self._borrowed = parts.borrow(raw)
            if parts.pg and self._held is None:  # the store's own connections are in autocommit already
                raw.autocommit = True
            if cur is not None:
                pass
            elif self._fairy is not None and parts.engine.dialect.is_async:
                # An asyncio driver's cursor costs a wait on the loop to open and another to close (a thread
                # hop each, for aiosqlite): keep one per connection (the pool drops it with the connection).
                cur = self._fairy.info.get(_CURSOR)
                if cur is None:
                    cur = self._fairy.info[_CURSOR] = raw.cursor()
            else:
                cur = raw.cursor()
            if self._write and not self._single:
                cur.execute("BEGIN" if parts.pg else "BEGIN IMMEDIATE")
                self._own = True
            self._cur = cur
            return cur
        except BaseException as exc:
            self._release(broken=True)
            wrapped = parts.errors.wrapped(exc, "write" if self._write else "read")
            if wrapped is None:
                raise
            raise wrapped from exc

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        parts = self._parts
        broken = False
        try:
            if self._joined:
                if exc is not None:
                    self._cur.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                self._cur.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            elif self._own:
                self._cur.execute("COMMIT" if exc is None else "ROLLBACK")
        except BaseException as failure:
            exc = exc or failure
            broken = True
        finally:
            self._release(broken)
        if exc is not None:
            wrapped = parts.errors.wrapped(exc, "write" if self._write else "read")
            if wrapped is not None:
                raise wrapped from exc
            if exc_type is None:
                raise exc

    def _release(self, broken: bool = False) -> None:
        """Hand the connection back. One left in an unknown state (its BEGIN, COMMIT or ROLLBACK failed,
        or a cancellation interrupted it) is closed instead: the next command gets a clean one."""
        parts = self._parts
        locked = self._locked
        if locked is not None:
            self._locked = None
            locked.release()
        if broken and parts.threads is not None:
            parts.threads.discard()
        held = self._held
        if held is not None:
            self._held = None
            if broken:
                parts.loop_connections.discard(held)  # type: ignore[union-attr]
            else:
                parts.loop_connections.put(held)  # type: ignore[union-attr]
        fairy = self._fairy
        if fairy is None:
            return
        self._fairy = None
        if broken:
            fairy.invalidate()  # closes it and returns its slot to the pool
            return
        try:
            if parts.pg:
                fairy.dbapi_connection.autocommit = False
            elif self._borrowed is not None:
                self._borrowed.restore()
        finally:
            fairy.close()


_SAVEPOINT = "bl_write"
