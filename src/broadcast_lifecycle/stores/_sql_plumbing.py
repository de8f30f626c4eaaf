"""How the SQL store talks to its database: cursors in the host's transaction or in one of its own,
SQLAlchemy Core connections, after-commit hand-off, and error wrapping."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..errors import BroadcastError, BroadcastNotFound, CorruptState, IdempotencyKeyReused, InvalidArgument, StoreError
from ..events import BroadcastEvent
from ..kinds import KindConfig
from ..records import BroadcastSnapshot, EntityId
from ..states import BroadcastStatus
from ._after_commit import defer_until_commit
from ._outbox_row import OUTBOX_ROW
from ._sql_errors import Violation, host_input_refused, primary_key_name, violation
from ._sql_text import EntitySql, LibrarySql
from ._sqlite_setup import Borrowed, SqliteSettings, ThreadConnections, in_transaction, use_wal, write_lock
from .base import AfterCommit, Committed, Loaded
from .schema import idempotency_table, library_metadata, open_customer_index_name

if TYPE_CHECKING:
    from .async_sqlite import LoopConnections, OwnConnection

__all__ = ["LostRace", "SqlPlumbing", "joined_connection", "session_of", "utc"]


T = TypeVar("T")
_STATUSES = [s.value for s in BroadcastStatus]
_CURSOR = "broadcast_lifecycle.cursor"
_STATUS_OF = {s.value: s for s in BroadcastStatus}


class LostRace(Exception):
    """Internal: a conditional write matched no row; roll back and report ``None``."""


class SqlPlumbing:
    """Connection handling shared by the SQL store's parts."""

    engine: Engine
    _pg: bool
    _lib: LibrarySql
    _threads: ThreadConnections | None
    """SQLite on a file: each thread's own connection, used instead of the pool (see ThreadConnections)."""
    _loop_connections: LoopConnections | None = None
    """SQLite on an asyncio engine: the store's own connections, shared by the loop's tasks."""
    _sqlite: SqliteSettings
    """SQLite: how the library's own connections, and pool connections lent to its writes, are set up."""
    _wal_checked = False
    """SQLite without per-thread connections: whether the database was put in WAL mode yet."""
    _write_key: str | None = None
    """SQLite on a file: the key of its in-process write lock (see :func:`._sqlite_setup.write_lock`)."""

    def _entity(self, kind: str) -> EntitySql:
        """The statements for ``kind``'s table (the store provides it)."""
        raise NotImplementedError

    def _entity_tables(self) -> dict[str, Table]:
        """The broadcasts tables this store writes, by name (the store provides it)."""
        raise NotImplementedError

    def _lookup_id(self, sql: EntitySql, kind: str, entity_id: EntityId) -> Any:
        """``entity_id`` as the driver takes it for ``sql``'s key; ``BroadcastNotFound`` for an id that
        column cannot hold (another type, out of range), which no row can have."""
        if not sql.holds(entity_id):
            raise BroadcastNotFound(kind, entity_id)
        return sql.id_param(entity_id)

    @staticmethod
    def _status(table: Table, entity_id: EntityId, value: Any) -> BroadcastStatus:
        """The state stored in ``table``; ``CorruptState`` if it is not one."""
        status = _STATUS_OF.get(value)
        if status is None:
            raise CorruptState(table.name, entity_id, value, _STATUSES)
        return status

    def _snapshot(self, sql: EntitySql, kind: str, entity_id: EntityId, row: Sequence[Any]) -> BroadcastSnapshot:
        """The snapshot in a row read by ``EntitySql.load``."""
        time = sql.time
        return BroadcastSnapshot(
            kind=kind, id=entity_id, customer_id=row[1], status=self._status(sql.table, entity_id, row[0]),
            slots_requested=row[2], slots_filled=row[3], version=row[4],
            state_changed_at=time.result(row[5]),  # type: ignore[arg-type]
            created_at=time.result(row[6]),  # type: ignore[arg-type]
            expires_at=time.result(row[7]),
        )

    def _read_loaded(self, cur: Any, sql: EntitySql, kind: str, entity_id: EntityId, transporter_id: str | None,
                     statement: str | None = None) -> Loaded:
        """Run ``sql.load`` (or ``statement``, a variant of it such as ``load_for_update``) on ``cur``."""
        cur.execute(statement or sql.load, {"id": self._lookup_id(sql, kind, entity_id), "kind": kind,
                                            "key": str(entity_id), "transporter": transporter_id or ""})
        return self._loaded(sql, kind, entity_id, cur.fetchone())

    def _loaded(self, sql: EntitySql, kind: str, entity_id: EntityId, row: Sequence[Any] | None) -> Loaded:
        """The broadcast and the transporter's holding in a row read by ``EntitySql.load``;
        ``BroadcastNotFound`` when there was no row."""
        if row is None:
            raise BroadcastNotFound(kind, entity_id)
        return Loaded(self._snapshot(sql, kind, entity_id, row), row[8])

    def _rebuild(self, row: Mapping[str, Any]) -> BroadcastEvent:
        """The event in an outbox row (as Core or the raw driver returned it), keyed by column name."""
        return OUTBOX_ROW.rebuild(row, self._entity_id, self._time)

    def _rebuild_tuple(self, values: Sequence[Any]) -> BroadcastEvent:
        """The event in a row of ``OUTBOX_ROW.returning`` columns."""
        return OUTBOX_ROW.rebuild_tuple(values, self._entity_id, self._time)

    def _entity_id(self, kind: str, key: str) -> EntityId:
        id_type = self._entity(kind).pk.type.python_type
        return key if id_type is str else id_type(key)

    def _time(self, value: Any) -> datetime | None:
        return utc(value) if isinstance(value, datetime) else self._lib.time.result(value)

    def _committed(self, committed: Committed, after_commit: AfterCommit, tx: object) -> Committed:
        if tx is None:
            after_commit(committed)
        else:
            defer_until_commit(session_of(tx), after_commit, committed)
        return committed

    def _cursor(self, tx: object, write: bool, single: bool = False) -> _Cursor:
        """A DBAPI cursor: in the host's transaction, or in a transaction of our own for writes.

        ``single`` marks one self-contained write statement: it runs in autocommit, which is
        atomic and saves the BEGIN and COMMIT (on PostgreSQL, two round trips).
        """
        return _Cursor(self, tx, write, single)

    def _transaction(self, tx: object, body: Callable[[Any], T]) -> T:
        """``body(cursor)`` in a write transaction: the host's (``tx``, in a savepoint) or one of ours.

        On SQLite on an asyncio engine, a transaction of ours runs whole in one hop to aiosqlite's thread
        (see :meth:`.async_sqlite.AiosqliteCursor.transaction`) instead of a hop per statement; ``body``
        then runs in that thread, so it must not touch the event loop (the decision and host guards do not).
        """
        if tx is None and self._loop_connections is not None and not self._pg:
            connections = self._loop_connections
            with self._wrap_errors("write"):
                held = connections.get()
            try:
                with self._wrap_errors("write"):
                    return held.cursor.transaction(body)  # type: ignore[no-any-return]
            finally:
                connections.put(held)  # closed instead if its transaction is still open, or it is closed
        with self._cursor(tx, write=True) as cur:
            return body(cur)

    @contextmanager
    def _core(self, tx: object, write: bool = False) -> Iterator[Any]:
        """A SQLAlchemy ``Connection``: the host's (``tx``), or one in a transaction of our own.

        On SQLite a write transaction of our own runs on a connection that issues no BEGIN of its
        own while we hold it (:class:`Borrowed`) and starts with ``BEGIN IMMEDIATE`` (unless a
        ``begin`` hook of the host's engine began it already, as the host chose), so its savepoints
        nest in it and nothing is left open. Reads run as the engine runs them.
        """
        with self._wrap_errors("write" if write else "query"):
            if tx is not None and write:
                conn = joined_connection(tx)
                with _host_savepoint(conn):
                    yield conn
            elif tx is not None:
                yield joined_connection(tx)
            elif write and not self._pg:
                with self._write_locked(), self.engine.connect() as conn:
                    driver: Any = conn.connection.dbapi_connection  # as adapted: an aiosqlite one's awaits
                    borrowed = self._borrow(driver)
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
    def _write_locked(self) -> Iterator[None]:
        """SQLite: hold this process's write lock on the file (see :func:`._sqlite_setup.write_lock`)
        for one write of ours; after the busy timeout without it, write anyway (SQLite decides)."""
        lock = self._acquire_write_lock()
        try:
            yield
        finally:
            if lock is not None:
                lock.release()

    def _acquire_write_lock(self) -> threading.RLock | None:
        if self._write_key is None:
            return None
        lock = write_lock(self._write_key)
        return lock if lock.acquire(timeout=self._sqlite.busy_timeout_ms / 1000) else None

    def _borrow(self, driver_connection: Any) -> Borrowed:
        """Lend a SQLite pool connection to one write transaction of ours (see :class:`Borrowed`)."""
        borrowed = Borrowed(driver_connection, self._sqlite)
        if not self._wal_checked:
            use_wal(driver_connection, self._sqlite)
            self._wal_checked = True
        return borrowed

    @contextmanager
    def _wrap_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            wrapped = self._wrapped(exc, what)
            if wrapped is None:
                raise
            raise wrapped from exc

    def _wrapped(self, exc: BaseException, what: str) -> BroadcastError | None:
        """The library's error for a database error (``None`` for anything else)."""
        if isinstance(exc, DBAPIError):
            return self._database_error(exc.orig, what)
        if isinstance(exc, self.engine.dialect.loaded_dbapi.Error):
            return self._database_error(exc, what)
        return None

    def _database_error(self, cause: BaseException | None, what: str, kind: str | None = None) -> BroadcastError:
        """The library's error for the driver's error ``cause``: a second use of an idempotency key
        (the key's primary key refused it), or a ``StoreError`` naming the constraint that refused
        the write, if one did (``kind``: the kind being written, see :func:`._sql_errors.violation`)."""
        broken = self._violation(cause, kind)
        sqlstate = getattr(cause, "sqlstate", None)
        if broken is None and what != "query" and isinstance(sqlstate, str) and sqlstate.startswith("22"):
            # A data exception (a value the column's type refuses: text in an integer, too long for
            # a VARCHAR). The library checks its own values first, so this is the caller's: a host
            # column's value given in columns= (or a host row at adopt), or an id too long for the key.
            first_line = str(cause).strip().splitlines()[0]
            return InvalidArgument(f"could not {what}: the database refused a value ({first_line}; "
                                   f"SQLSTATE {sqlstate}): give the columns= values and the id in the types and "
                                   "lengths of the table's columns")
        if broken is None:
            return StoreError(f"could not {what}: {cause}")
        if broken.rule == "unique" and broken.constraint == primary_key_name(idempotency_table):
            return IdempotencyKeyReused("(this command's key)", "is already recorded")
        if (refused := host_input_refused(broken, self._entity_tables())) is not None:
            return refused
        return StoreError(f"could not {what}: {broken.describe()} refused it ({cause})", constraint=broken.constraint)

    def _breaks_open_policy(self, exc: StoreError, kind: KindConfig) -> bool:
        """Whether ``exc`` is ``kind``'s one-open-broadcast-per-customer index refusing a write."""
        if not kind.one_open_per_customer:
            return False
        cause = getattr(exc.__cause__, "orig", exc.__cause__)  # a Core error wraps the driver's
        broken = self._violation(cause, kind.name)
        index = open_customer_index_name(self._entity(kind.name).table.name, kind.name)
        return broken is not None and broken.rule == "unique" and broken.constraint in (index, index[:63])

    def _violation(self, cause: BaseException | None, kind: str | None) -> Violation | None:
        """The constraint a driver error reports as broken (see :func:`._sql_errors.violation`)."""
        if cause is None:
            return None
        return violation(cause, {**library_metadata.tables, **self._entity_tables()}, kind)


class _Cursor:
    """The context manager behind :meth:`SqlPlumbing._cursor` (a class: it runs on every command)."""

    __slots__ = ("_borrowed", "_cur", "_fairy", "_held", "_joined", "_locked", "_own", "_parts", "_single", "_tx",
                 "_write")

    def __init__(self, parts: SqlPlumbing, tx: object, write: bool, single: bool) -> None:
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
                    _begin_in_host(conn)
                    cur.execute(f"SAVEPOINT {_SAVEPOINT}")
                    self._joined = True
                self._cur = cur
                return cur
            if self._write and not parts._pg:
                self._locked = parts._acquire_write_lock()
            raw: Any
            cur = None
            if parts._threads is not None:
                raw = parts._threads.get()
            elif parts._loop_connections is not None:
                self._held = parts._loop_connections.get()
                raw, cur = self._held.connection, self._held.cursor
            else:
                self._fairy = parts.engine.raw_connection()
                # The DBAPI connection as SQLAlchemy adapts it: the driver's own for a sync driver, sync-looking
                # methods that await on the loop (in a greenlet, see async_store) for an asyncio one.
                raw = self._fairy.dbapi_connection
                if self._write and not parts._pg:
                    self._borrowed = parts._borrow(raw)
            if parts._pg and self._held is None:  # the store's own connections are in autocommit already
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
                cur.execute("BEGIN" if parts._pg else "BEGIN IMMEDIATE")
                self._own = True
            self._cur = cur
            return cur
        except BaseException as exc:
            self._release(broken=True)
            wrapped = parts._wrapped(exc, "write" if self._write else "read")
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
            wrapped = parts._wrapped(exc, "write" if self._write else "read")
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
        if broken and parts._threads is not None:
            parts._threads.discard()
        held = self._held
        if held is not None:
            self._held = None
            if broken:
                parts._loop_connections.discard(held)  # type: ignore[union-attr]
            else:
                parts._loop_connections.put(held)  # type: ignore[union-attr]
        fairy = self._fairy
        if fairy is None:
            return
        self._fairy = None
        if broken:
            fairy.invalidate()  # closes it and returns its slot to the pool
            return
        try:
            if parts._pg:
                fairy.dbapi_connection.autocommit = False
            elif self._borrowed is not None:
                self._borrowed.restore()
        finally:
            fairy.close()


_SAVEPOINT = "bl_write"


def _begin_in_host(conn: Connection) -> None:
    """Make sure the host's connection is inside a transaction before a savepoint: Python's sqlite3
    begins one only before a data change, and a SAVEPOINT outside a transaction would start one of
    its own, whose release would commit the host's work behind its back."""
    dbapi: Any = conn.connection.dbapi_connection  # as adapted: an aiosqlite one's calls await on the loop
    if conn.dialect.name == "sqlite" and not in_transaction(dbapi):
        dbapi.execute("BEGIN").close()


@contextmanager
def _host_savepoint(conn: Connection) -> Iterator[None]:
    """A write of ours in the host's transaction runs in a savepoint: when it fails (a reused key, a
    refused insert) nothing of it stays in the host's transaction, which stays usable."""
    _begin_in_host(conn)
    with conn.begin_nested():
        yield


def joined_connection(tx: object) -> Connection:
    """The connection of the host's session ``tx``, after flushing its pending changes when the session
    autoflushes (as its own queries would), so the library reads what the host has written."""
    session = session_of(tx)
    if session.autoflush and (session.new or session.dirty or session.deleted):
        session.flush()
    return session.connection()


def session_of(tx: object) -> Session:
    if not isinstance(tx, Session):
        raise InvalidArgument(f"tx must be a sqlalchemy.orm.Session, got {type(tx).__name__}")
    return tx


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
