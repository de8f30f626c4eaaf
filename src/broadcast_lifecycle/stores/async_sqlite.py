"""An asyncio engine (aiosqlite, psycopg's async mode): the store's own connections, shared by the tasks of a loop.

On a sync SQLite engine each thread keeps one connection of the library's own (``ThreadConnections``).
Under asyncio one thread runs every task, so instead a command takes an idle connection of the store's
own, or opens one (at most ``limit`` at once; past that it waits on the loop for one to come back), and
gives it back when its transaction has ended. Each is opened by the engine (the host's ``connect``
hooks run), detached from the pool and set up once for the library (SQLite: ``own_connection``;
PostgreSQL: autocommit, the store issuing its own BEGIN where it needs one), so a command pays neither
the pool's checkout and reset nor a borrow's settings, each a wait on the loop (for aiosqlite a hop to
its thread). All of it runs in the greenlet bridge (``await_`` waits on the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Engine, event

from ._sqlite_setup import SqliteSettings, own_connection

__all__ = ["AiosqliteCursor", "LoopConnections", "OwnConnection", "postgresql_connections", "roll_back_before_close"]

T = TypeVar("T")


class OwnConnection:
    """A connection of the store's own and the one cursor it keeps (opening and closing one are hops)."""

    __slots__ = ("connection", "cursor", "opened_at")

    def __init__(self, connection: Any, cursor: Any) -> None:
        self.connection = connection
        self.cursor = cursor
        self.opened_at = time.monotonic()


class AiosqliteCursor:
    """The cursor of an aiosqlite connection of the store's own: each statement runs, and its rows are
    fetched, in one hop to aiosqlite's thread (SQLAlchemy's adapter takes two for a query, the statement
    and then the fetch, each behind an asyncio lock). Errors are sqlite3's, raised by the statement that
    failed, as through the adapter. It sends work the way SQLAlchemy's own aiosqlite adapter does for
    what aiosqlite has no call for (its queue of ``(future, function)``, run in order in its thread).

    A write transaction runs on the loop's own thread when it cannot wait there (see :meth:`transaction`):
    the database is in WAL mode at ``synchronous`` OFF or NORMAL (a commit writes the WAL into the OS's
    file cache, with no fsync), the write lock is tried without waiting, and the WAL is checkpointed
    (which fsyncs) in aiosqlite's thread, never by a commit on the loop."""

    __slots__ = ("_aio", "_busy_ms", "_changes", "_cursor", "_rows", "description", "lastrowid", "on_loop",
                 "rowcount")

    def __init__(self, connection: Any, settings: SqliteSettings | None = None) -> None:
        self._aio: Any = connection.driver_connection  # the aiosqlite.Connection
        self._cursor: sqlite3.Cursor | None = None  # one sqlite3 cursor, used by one thread at a time
        self._rows: deque[Any] = deque()
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._busy_ms = int((settings or SqliteSettings()).busy_timeout_ms)
        self._changes = 0  # the connection's total_changes at its last checkpoint
        self.on_loop = settings is not None and self._usable_here() and self._hop(self._can_write_on_loop)
        """Whether write transactions run on the loop's thread (when the write lock is free)."""

    def execute(self, statement: str, parameters: Any = ()) -> None:
        """Run ``statement``; its rows wait in this cursor for the fetches. A task cancelled meanwhile gets
        ``CancelledError`` once the statement has ended (it was queued, so it runs: a write is then done)."""
        self._take(self._statement(False, statement, parameters))

    def executemany(self, statement: str, parameters: Sequence[Any]) -> None:
        """Run ``statement`` once per item of ``parameters`` (cancelled: as :meth:`execute`)."""
        self._take(self._statement(True, statement, parameters))

    def fetchone(self) -> Any:
        """The next row of the last statement, or ``None``."""
        return self._rows.popleft() if self._rows else None

    def fetchall(self) -> list[Any]:
        """The remaining rows of the last statement."""
        rows, self._rows = list(self._rows), deque()
        return rows

    def transaction(self, body: Callable[[Any], T]) -> T:
        """``body(cursor)`` on sqlite3's own cursor between ``BEGIN IMMEDIATE`` and ``COMMIT`` (``ROLLBACK``
        if it raises), with no thread hop when it cannot wait on the loop's thread, else in one hop to
        aiosqlite's thread. ``body`` must not touch the event loop.

        On the loop's thread (:attr:`on_loop`) the write lock is tried with a busy timeout of 0: held by
        another connection, the transaction goes to aiosqlite's thread, which waits for it there. The
        connection's auto-checkpoint (which fsyncs) is off: once it has changed ``CHECKPOINT_AFTER`` rows
        since its last checkpoint, its next transaction goes to aiosqlite's thread too and checkpoints the
        WAL there after its commit (as SQLite's auto-checkpoint would have, in the committing command).
        What stays on the loop is SQLite's work in memory and in the OS's file cache.

        A task cancelled during the hop waits for the hop to end (the next statement on this connection
        would queue behind it anyway) and gets ``CancelledError``; the transaction rolls back unless it
        had reached its ``COMMIT``."""
        checkpoint = False
        if self.on_loop:
            checkpoint = self._checkpoint_due()
            if not checkpoint:
                done, result = self._on_loop(body)
                if done:
                    return result  # type: ignore[return-value]
        hop = _Hop()
        try:
            return self._hop(self._transaction, body, hop, checkpoint)  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            hop.cancelled = True
            self._wait_for_queue()
            raise

    def _checkpoint_due(self) -> bool:
        """Whether the connection has written enough since its last checkpoint to checkpoint now (rows
        changed stand in for WAL pages, which Python's sqlite3 does not report)."""
        connection = self._aio._connection
        return connection is not None and connection.total_changes - self._changes >= CHECKPOINT_AFTER

    def _on_loop(self, body: Callable[[Any], T]) -> tuple[bool, T | None]:
        """``(True, body's result)`` for a transaction run on the loop's thread; ``(False, None)`` if the
        write lock was taken (nothing ran)."""
        connection = self._aio._connection
        if connection is None:
            raise sqlite3.OperationalError("no active connection")
        cursor = self._cursor
        if cursor is None:
            cursor = self._cursor = connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 0")
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != _SQLITE_BUSY:  # type: ignore[attr-defined]
                raise
            return False, None  # another connection writes: wait for it in aiosqlite's thread
        finally:
            cursor.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        try:
            result = body(cursor)
            cursor.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:  # still open after a failed ROLLBACK: put() closes the connection
                cursor.execute("ROLLBACK")
            raise
        return True, result

    def close(self) -> None:
        """Close the sqlite3 cursor (in aiosqlite's thread; nothing to do once the connection is closed)."""
        if self._cursor is not None and self._aio._connection is not None:
            self._hop(self._close)

    def _statement(self, many: bool, statement: str, parameters: Any) -> tuple[list[Any], int, int | None, Any]:
        try:
            return self._hop(self._run, many, statement, parameters)  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            # The statement still runs in aiosqlite's thread: raising now would let the caller go on (and
            # the connection go back to the idle ones) while it is yet to change the database.
            self._wait_for_queue()
            raise

    def _wait_for_queue(self) -> None:
        """Wait until what aiosqlite's thread was given so far has ended (cancellations do not stop it)."""
        while True:  # what comes after in aiosqlite's queue runs after it has ended
            try:
                self._hop(_nothing)
                return
            except asyncio.CancelledError:
                continue
            except Exception:  # the connection is gone: nothing runs on it any more
                return

    def _take(self, result: tuple[list[Any], int, int | None, Any]) -> None:
        rows, self.rowcount, self.lastrowid, self.description = result
        self._rows = deque(rows)

    def _hop(self, function: Callable[..., Any], *args: Any) -> Any:
        from sqlalchemy.util.concurrency import await_

        if self._aio._connection is None:  # as SQLAlchemy's adapter reports aiosqlite's "no active connection"
            raise sqlite3.OperationalError("no active connection")
        future = asyncio.get_running_loop().create_future()
        self._aio._tx.put_nowait((future, partial(function, *args)))
        return await_(future)

    def _run(self, many: bool, statement: str, parameters: Any) -> tuple[list[Any], int, int | None, Any]:
        # in aiosqlite's thread
        cursor = self._cursor
        if cursor is None:
            cursor = self._cursor = self._aio._conn.cursor()
        if many:
            cursor.executemany(statement, parameters)
        else:
            cursor.execute(statement, parameters)
        rows = cursor.fetchall() if cursor.description is not None else []
        return rows, cursor.rowcount, cursor.lastrowid, cursor.description

    def _transaction(self, body: Callable[[Any], T], hop: _Hop, checkpoint: bool) -> T:
        # in aiosqlite's thread
        cursor = self._cursor
        if cursor is None:
            cursor = self._cursor = self._aio._conn.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            result = body(cursor)
            if hop.cancelled:  # nobody waits for the outcome any more: the command did not happen
                raise asyncio.CancelledError
            cursor.execute("COMMIT")
        except BaseException:
            if self._aio._conn.in_transaction:  # still open after a failed ROLLBACK: put() closes the connection
                cursor.execute("ROLLBACK")
            raise
        if checkpoint:  # PASSIVE, as SQLite's auto-checkpoint: it waits for nobody; committed, so it may not fail
            with contextlib.suppress(sqlite3.Error):
                cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self._changes = self._aio._conn.total_changes
        return result

    def _usable_here(self) -> bool:
        """Whether this thread may use the sqlite3 connection (SQLAlchemy opens a file database's with
        ``check_same_thread=False``; a host's ``connect_args`` may say otherwise)."""
        try:
            self._aio._conn.cursor().close()
        except sqlite3.ProgrammingError:  # "objects created in a thread can only be used in that same thread"
            return False
        return True

    def _can_write_on_loop(self) -> bool:
        # in aiosqlite's thread: WAL at synchronous OFF or NORMAL (a COMMIT does not fsync); then the
        # connection's own auto-checkpoint (which fsyncs) is turned off: transaction() checkpoints here
        connection = self._aio._conn
        (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
        (synchronous,) = connection.execute("PRAGMA synchronous").fetchone()
        if str(mode).lower() != "wal" or synchronous > 1:
            return False
        connection.execute("PRAGMA wal_autocheckpoint = 0").close()
        return True

    def _close(self) -> None:
        # in aiosqlite's thread
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None


class _Hop:
    """Whether the task waiting for a hop was cancelled (set on the loop, read in aiosqlite's thread)."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False


def _nothing() -> None:
    pass


CHECKPOINT_AFTER = 500
"""Rows a connection writing on the loop's thread changes between two checkpoints of the WAL (SQLite's
own auto-checkpoint, at 1,000 pages, comes after about 100 of the library's transactions of 4 to 5 rows)."""

_SQLITE_BUSY = 5


class LoopConnections:
    """The store's own aiosqlite connections (see the module's docstring)."""

    def __init__(self, engine: Engine, settings: SqliteSettings, limit: int,
                 prepare: Callable[[Any], None] | None = None, cursor: Callable[[Any], Any] | None = None) -> None:
        self._engine = engine
        self._prepare: Callable[[Any], None] = prepare or (lambda connection: own_connection(connection, settings))
        self._cursor = cursor or (lambda connection: AiosqliteCursor(connection, settings))
        self._limit = limit
        self._idle: list[OwnConnection] = []
        self._open = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        # The engine's pool settings the host chose, honoured for these connections too (they bypass the pool):
        # a connection older than pool_recycle seconds is replaced, and with pool_pre_ping one is tested before
        # use, so a server restart or an idle disconnect costs a reconnect rather than a failed command.
        self._recycle: float = getattr(engine.pool, "_recycle", -1)
        self._pre_ping: bool = bool(getattr(engine.pool, "_pre_ping", False))

    def get(self) -> OwnConnection:
        """An idle connection, a new one, or (``limit`` open) the next one given back."""
        from sqlalchemy.util.concurrency import await_

        while not self._idle and self._open >= self._limit:
            turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiting.append(turn)
            try:
                await_(turn)
            except BaseException:
                if turn.done() and not turn.cancelled():
                    self._wake()  # woken and cancelled at once: pass the turn on
                else:
                    self._waiting.remove(turn)
                raise
        while self._idle:
            held = self._idle.pop()
            if self._usable(held):
                return held
        self._open += 1
        try:
            return self._new()
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    def _usable(self, held: OwnConnection) -> bool:
        """Whether an idle connection may serve a command; one that may not is closed (and uncounted)."""
        try:
            if 0 <= self._recycle < time.monotonic() - held.opened_at:
                usable = False
            elif self._pre_ping:
                try:
                    usable = bool(self._engine.dialect.do_ping(held.connection))
                except Exception:  # the pool reconnects on a failed ping, whatever the error: so do we
                    usable = False
            else:
                return True
        except BaseException:  # cancelled while pinging: the connection's state is unknown
            self.discard(held)
            raise
        if not usable:  # its slot passes to the connection get() opens next: nobody to wake
            self._open -= 1
            _close(held)
        return usable

    def put(self, held: OwnConnection) -> None:
        """Take back a connection whose transaction has ended (one a cancellation or a failure left inside
        a transaction or statement, or closed, is closed instead)."""
        driver = held.connection.driver_connection
        info = getattr(driver, "info", None)  # psycopg's; aiosqlite has none
        if (info.transaction_status != _PG_IDLE if info is not None
                else driver._connection is None or driver._connection.in_transaction):
            self.discard(held)
            return
        self._idle.append(held)
        self._wake()

    def discard(self, held: OwnConnection) -> None:
        """Close a connection a failure or a cancellation left in an unknown state."""
        self._open -= 1
        self._wake()
        _close(held)

    def close(self) -> None:
        """Close the idle connections (the store opens new ones when used again)."""
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for held in idle:
            _close(held)

    def _new(self) -> OwnConnection:
        fairy = self._engine.raw_connection()
        connection: Any = fairy.dbapi_connection
        fairy.detach()
        try:
            self._prepare(connection)
            return OwnConnection(connection, self._cursor(connection))
        except BaseException:
            with contextlib.suppress(Exception):
                connection.close()
            raise

    def _wake(self) -> None:
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return


_PG_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE


def postgresql_connections(engine: Engine, limit: int) -> LoopConnections:
    """The store's own connections on a PostgreSQL asyncio engine: in autocommit (a single statement is
    its own transaction; the store sends BEGIN and COMMIT around several), with the adapter's cursor."""
    def autocommit(connection: Any) -> None:
        connection.autocommit = True

    return LoopConnections(engine, SqliteSettings(), limit, autocommit, lambda connection: connection.cursor())


def _close(held: OwnConnection) -> None:
    # End a transaction an interrupted statement kept open and close its cursor before the connection
    # (see roll_back_before_close); a broken connection fails some of these: closing is all that is left.
    for step in (held.connection.rollback, held.cursor.close, held.connection.close):
        with contextlib.suppress(Exception):
            step()


def roll_back_before_close(engine: Engine) -> None:
    """On an aiosqlite engine, roll back a connection SQLAlchemy is about to close because a task was
    cancelled (once per engine).

    SQLAlchemy closes such a connection without closing the cursor of the interrupted statement;
    sqlite3 then keeps that statement, so the closed connection lingers with its transaction, and the
    database's write lock, until garbage collection, and every other writer waits out its busy
    timeout. Ending the transaction first releases the lock at once.
    """
    if not event.contains(engine, "invalidate", _end_transaction):
        event.listen(engine, "invalidate", _end_transaction)


def _end_transaction(_dbapi_connection: Any, record: Any, _exc: BaseException | None) -> None:
    from sqlalchemy.util.concurrency import await_, in_greenlet

    driver = record.driver_connection
    if driver is None or not in_greenlet():
        return
    with contextlib.suppress(Exception):  # a broken connection: closing it is all that is left to do
        await_(asyncio.shield(driver.rollback()))
