"""The cursor of an aiosqlite connection of the store's own (see :class:`AiosqliteCursor`): a statement
and its rows in one hop to aiosqlite's thread, a write transaction in one hop, or none when it can run
on the loop's thread without waiting there."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from ._sqlite_setup import SqliteSettings

__all__ = ["CHECKPOINT_AFTER", "AiosqliteCursor"]

T = TypeVar("T")


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
        # Python 3.10's sqlite3 errors carry no result code, and a busy lock must be told from other errors
        # by its code (never by its text): there every write goes to aiosqlite's thread.
        self.on_loop = (sys.version_info >= (3, 11) and settings is not None and self._usable_here()
                        and self._hop(self._can_write_on_loop))
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
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF != _SQLITE_BUSY:
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
        result = rows, cursor.rowcount, cursor.lastrowid, cursor.description
        if self.on_loop and not self._aio._conn.in_transaction and self._checkpoint_due():
            self._checkpoint(cursor)  # the writes outside transaction() (the relay's marks, say) count too
        return result

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
        if checkpoint:
            self._checkpoint(cursor)
        return result

    def _checkpoint(self, cursor: sqlite3.Cursor) -> None:
        # in aiosqlite's thread, outside a transaction. PASSIVE, as SQLite's auto-checkpoint: it waits for
        # nobody; what it follows is committed, so it may not fail that
        with contextlib.suppress(sqlite3.Error):
            cursor.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self._changes = self._aio._conn.total_changes

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
