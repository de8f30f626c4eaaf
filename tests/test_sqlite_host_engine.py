"""SQLite on the host's engine: the store works whatever the engine did before, and leaves the
host's connections, reads and transactions as the host made them."""

from __future__ import annotations

import sqlite3
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ManualClock
from sqlalchemy import Engine, String, create_engine, event, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from broadcast_lifecycle import BroadcastLifecycle, BroadcastSnapshot, BroadcastStatus, CommandContext, Trigger
from broadcast_lifecycle.stores._sqlite_setup import SqliteSettings
from broadcast_lifecycle.stores.schema import BroadcastMixin
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder


class Base(DeclarativeBase):
    """The host's declarative base."""


class Booking(Base, BroadcastMixin):
    """The host's model."""

    __tablename__ = "bookings"
    id: Mapped[int] = mapped_column(primary_key=True)
    pickup: Mapped[str] = mapped_column(String(100), default="depot")


def _write_lock_is_free(path: Path) -> bool:
    """Whether a new connection can take the write lock at once (a busy timeout of 0: no waiting)."""
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        probe.close()


def _host(path: Path, store_first: bool = False,
          **engine_options: Any) -> tuple[Engine, SQLAlchemyStore, BroadcastLifecycle, EventRecorder]:
    """A host that creates its tables and reads through the ORM (pooling a connection) before it
    builds the store, or (``store_first``) after."""
    engine = create_engine(f"sqlite:///{path}", **engine_options)
    if store_first:
        store = SQLAlchemyStore(engine, models={"booking": Booking})
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.execute(select(Booking)).all()
    if not store_first:
        store = SQLAlchemyStore(engine, models={"booking": Booking})
    store.create_all()
    lc = BroadcastLifecycle(store, clock=ManualClock())
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    return engine, store, lc, recorder


@pytest.mark.parametrize("engine_options", [{}, {"poolclass": NullPool}])
def test_an_engine_used_before_the_store_exists(tmp_path: Path, engine_options: dict[str, Any]) -> None:
    """With the host's tables created first and a receiver connected, every command commits from any
    thread, and no statement leaves a transaction (or the write lock) behind."""
    path = tmp_path / "host.db"
    engine, store, lc, recorder = _host(path, **engine_options)
    bookings = lc.kind("booking")
    snap = bookings.create("c1", slots=2)
    assert _write_lock_is_free(path)
    bookings.start_broadcast(snap.id, ["t1", "t2"])
    bookings.activate(snap.id, ttl=timedelta(minutes=5))
    bookings.accept(snap.id, "t1")  # marks its delivered event in one statement of its own
    assert _write_lock_is_free(path)
    failures: list[BaseException] = []

    def accept_elsewhere() -> None:
        try:
            bookings.accept(snap.id, "t2")
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=accept_elsewhere)
    worker.start()
    worker.join()
    assert failures == []
    assert _write_lock_is_free(path)
    assert bookings.get(snap.id).status is BroadcastStatus.FULLY_FILLED
    assert store.pending_events(10) == []  # every event was delivered and marked so
    assert recorder.names()[-1] == "BOOKING_FULLY_FILLED"
    with Session(engine) as session:  # the host writes as before
        booking = session.get(Booking, snap.id)
        assert booking is not None
        booking.pickup = "harbour"
        session.commit()
    assert _write_lock_is_free(path)


def test_the_host_connections_keep_their_settings(tmp_path: Path) -> None:
    """After the store has run commands, the engine's connections still have sqlite3's implicit
    transactions, the host's busy timeout and foreign keys as the host left them, and a host read
    begins no IMMEDIATE transaction."""
    path = tmp_path / "settings.db"
    engine, _, lc, _ = _host(path, store_first=True, connect_args={"timeout": 2.5})
    snap = lc.kind("booking").create("c1")
    lc.kind("booking").start_broadcast(snap.id, ["t1"])
    with engine.connect() as conn:
        driver: Any = conn.connection.driver_connection
        assert driver.isolation_level == ""  # sqlite3's default, as the engine made it
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
    with Session(engine) as session:
        statements: list[str] = []
        session.connection().connection.driver_connection.set_trace_callback(statements.append)  # type: ignore[union-attr]
        assert session.execute(select(Booking.status)).scalar_one() == "broadcasting"
        session.connection().connection.driver_connection.set_trace_callback(None)  # type: ignore[union-attr]
    assert statements and not any(s.upper().startswith("BEGIN") for s in statements)


def test_a_host_read_does_not_wait_behind_a_library_writer(tmp_path: Path) -> None:
    """While a library command holds the write lock, a host Session on an engine with no busy
    timeout at all reads at once (the committed state); the command then commits."""
    path = tmp_path / "readers.db"
    engine, _, lc, _ = _host(path, store_first=True, connect_args={"timeout": 0})
    bookings = lc.kind("booking")
    snap = bookings.create("c1", slots=2)
    bookings.start_broadcast(snap.id, ["t1"])
    bookings.activate(snap.id, ttl=timedelta(minutes=5))
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock(_snap: BroadcastSnapshot, _ctx: CommandContext) -> str | None:
        holding.set()  # runs inside the command's BEGIN IMMEDIATE transaction
        assert release.wait(timeout=30)
        return None

    bookings.add_guard(Trigger.ACCEPT, hold_the_lock)
    outcome: list[object] = []
    writer = threading.Thread(target=lambda: outcome.append(bookings.accept(snap.id, "t1")))
    writer.start()
    try:
        assert holding.wait(timeout=30)
        assert not _write_lock_is_free(path)  # the library writer holds it now
        with Session(engine) as session:
            assert session.execute(select(Booking.status)).scalar_one() == "active"
            assert session.execute(text("SELECT count(*) FROM bl_transition_history")).scalar_one() == 3
        assert not _write_lock_is_free(path)  # read while the writer still held it, not after it gave up
    finally:
        release.set()
        writer.join()
    assert len(outcome) == 1 and bookings.get(snap.id).status is BroadcastStatus.PARTIALLY_FILLED


def test_a_host_begin_hook_still_works(tmp_path: Path) -> None:
    """A host that runs SQLAlchemy's recipe for SQLite transactions (no implicit BEGIN, its own
    BEGIN on every transaction) keeps it, and the store's commands and creates work beside it."""
    path = tmp_path / "recipe.db"
    engine = create_engine(f"sqlite:///{path}")
    begun: list[str] = []

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        begun.append("BEGIN")
        conn.exec_driver_sql("BEGIN")

    Base.metadata.create_all(engine)
    store = SQLAlchemyStore(engine, models={"booking": Booking})
    store.create_all()
    lc = BroadcastLifecycle(store, clock=ManualClock())
    bookings = lc.kind("booking")
    snap = bookings.create("c1", idempotency_key="first").snapshot
    bookings.start_broadcast(snap.id, ["t1"])
    with Session(engine) as session:
        session.add(Booking(customer_id="c2", status="created", state_changed_at=snap.created_at,
                            created_at=snap.created_at, version=1, slots_requested=1, slots_filled=0))
        session.commit()
    assert begun and _write_lock_is_free(path)
    assert [h.trigger for h in bookings.history(snap.id)] == ["create", "start_broadcast"]


@pytest.mark.parametrize("settings", [SqliteSettings(), SqliteSettings(synchronous="FULL", busy_timeout_ms=1234,
                                                                       wal=False)])
def test_what_the_store_changes_on_sqlite(tmp_path: Path, settings: SqliteSettings) -> None:
    """The database goes to WAL mode (unless ``wal=False``); the store's own connections get its
    busy timeout and durability, and issue no BEGIN of their own."""
    engine = create_engine(f"sqlite:///{tmp_path / 'changes.db'}")
    store = SQLAlchemyStore(engine, sqlite=settings)
    store.create_all()
    BroadcastLifecycle(store, clock=ManualClock()).kind("booking").create("c1")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == ("wal" if settings.wal else "delete")
    assert store._db.threads is not None
    own = store._db.threads.get()
    assert own.isolation_level is None
    assert own.execute("PRAGMA busy_timeout").fetchone() == (settings.busy_timeout_ms,)
    assert own.execute("PRAGMA synchronous").fetchone() == ({"NORMAL": 1, "FULL": 2}[settings.synchronous],)


def test_sqlite_settings_refuse_an_unknown_synchronous() -> None:
    """``synchronous`` is written into a PRAGMA, so only SQLite's own levels are accepted."""
    with pytest.raises(ValueError, match="synchronous must be OFF, NORMAL, FULL or EXTRA"):
        SqliteSettings(synchronous="NORMAL; DROP TABLE bookings")
