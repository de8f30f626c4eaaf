"""SQLite: the library's writers in one process queue on an in-process lock per database file before
``BEGIN IMMEDIATE``, instead of polling in SQLite's sleeping busy handler."""

from __future__ import annotations

import os
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

from broadcast_lifecycle import BroadcastEvent, BroadcastLifecycle
from broadcast_lifecycle.stores._sqlite_setup import write_lock, write_lock_key
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

THREADS = 8
ROUNDS = 10


def test_writers_in_one_process_take_turns(tmp_path: Path) -> None:
    """8 threads accepting and releasing on one broadcast (through two stores on the same file, with a
    receiver, so mark-delivered writes too): no thread starts a write while another's is open."""
    url = f"sqlite:///{tmp_path / 'turns.db'}"
    first, second = SQLAlchemyStore.from_url(url), SQLAlchemyStore.from_url(url)
    first.create_all()
    log: list[tuple[int, str]] = []

    def trace(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.set_trace_callback(lambda sql: log.append((threading.get_ident(), sql)))

    for store in (first, second):
        event.listen(store.engine, "connect", trace)
    lifecycles = [BroadcastLifecycle(first), BroadcastLifecycle(second)]
    delivered: list[BroadcastEvent] = []
    for lifecycle in lifecycles:
        lifecycle.bus.connect(delivered.append)
    bookings = lifecycles[0].kind("booking")
    transporters = [f"t{i}" for i in range(THREADS)]
    entity_id = bookings.create("c1", slots=THREADS).id
    bookings.start_broadcast(entity_id, transporters)
    bookings.activate(entity_id, ttl=timedelta(hours=1))
    start = threading.Barrier(THREADS)
    failures: list[BaseException] = []

    def work(index: int) -> None:
        handle = lifecycles[index % 2].kind("booking")
        start.wait()
        try:
            for _ in range(ROUNDS):
                handle.accept(entity_id, transporters[index])
                handle.release(entity_id, transporters[index])
        except BaseException as exc:  # reported below
            failures.append(exc)

    log.clear()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert bookings.get(entity_id).version == 3 + 2 * THREADS * ROUNDS
    writes = [(who, sql.split()[0].upper()) for who, sql in log if sql.split()[0].upper() in _WRITES]
    open_by: int | None = None
    for who, verb in writes:
        assert open_by in (None, who), f"thread {who} began {verb} while thread {open_by}'s write was open"
        open_by = who if verb == "BEGIN" else None if verb in ("COMMIT", "ROLLBACK") else open_by
    # a transaction per transition, and per mark of two events (fully_filled); a lone UPDATE per other mark
    assert sum(1 for _, verb in writes if verb in ("BEGIN", "UPDATE")) >= 2 * 2 * THREADS * ROUNDS
    first.close()
    second.close()


_WRITES = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "UPDATE"})
"""Statement verbs that take or end the write lock outside a transaction (a lone UPDATE: mark-delivered)."""


def test_one_lock_per_database_file(tmp_path: Path) -> None:
    """Two spellings of one file share a lock; another file has its own; an in-memory database has none."""
    (tmp_path / "sub").mkdir()
    os.symlink(tmp_path / "sub", tmp_path / "link")
    key = write_lock_key(str(tmp_path / "sub" / "a.db"))
    assert key is not None
    assert write_lock_key(str(tmp_path / "link" / "a.db")) == key
    assert write_lock_key(f"file:{tmp_path / 'sub' / 'a.db'}?mode=rw") == key
    assert write_lock(key) is write_lock(key)
    other = write_lock_key(str(tmp_path / "b.db"))
    assert other is not None and write_lock(other) is not write_lock(key)
    assert [write_lock_key(m) for m in (None, "", ":memory:", "file::memory:?cache=shared")] == [None] * 4


def test_a_forked_child_does_not_inherit_a_held_lock(tmp_path: Path) -> None:
    """A lock held by the parent's thread at fork is free in the child (whose copy of that thread is gone)."""
    key = write_lock_key(str(tmp_path / "fork.db"))
    assert key is not None
    lock = write_lock(key)
    with lock:
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only if it can take the file's lock
            os._exit(0 if write_lock(key).acquire(timeout=5) else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
