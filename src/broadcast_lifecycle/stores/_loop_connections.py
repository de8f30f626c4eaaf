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
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, event

from ._sqlite_setup import SqliteSettings, own_connection
from .async_sqlite import AiosqliteCursor

__all__ = ["LoopConnections", "OwnConnection", "postgresql_connections", "roll_back_before_close"]


class OwnConnection:
    """A connection of the store's own and the one cursor it keeps (opening and closing one are hops)."""

    __slots__ = ("connection", "cursor", "opened_at")

    def __init__(self, connection: Any, cursor: Any) -> None:
        self.connection = connection
        self.cursor = cursor
        self.opened_at = time.monotonic()


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
        self._closed = False  # set by close(): no connection is kept idle any more
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
                elif turn in self._waiting:  # (a _wake() since its cancellation has dropped it already)
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
        if self._closed or (info.transaction_status != _PG_IDLE if info is not None
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
        """Close the idle connections, and from now on each one as it is given back: a command still running,
        or one sent after this, opens a connection and closes it when done, so none outlives its use."""
        self._closed = True
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
