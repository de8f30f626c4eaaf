"""The PostgreSQL function the one-statement filling accept calls (``bl_everyone_json``): created by
``create_all`` only when missing or different, safely from many processes and by roles that may not
create functions, and a store that finds it gone falls back to the general path."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from postgres_server import OS_USER, PostgresServer

from broadcast_lifecycle import BroadcastLifecycle, BroadcastStatus, Topic
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

_SIGNATURE = "bl_everyone_json(text, text, text)"


@pytest.fixture
def url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh database with the library's tables (and so the function)."""
    database_url = postgres_server.create_database(f"fn_{request.node.name[5:40].lower()}")
    store = SQLAlchemyStore.from_url(database_url)
    store.create_all()
    store.close()
    return database_url


@pytest.fixture
def store(url: str) -> Iterator[SQLAlchemyStore]:
    opened = SQLAlchemyStore.from_url(url)
    yield opened
    opened.close()


def _volatility(store: SQLAlchemyStore) -> str | None:
    """``provolatile`` of the function ('v' for VOLATILE), or None when it does not exist."""
    with store.engine.connect() as conn:
        value = conn.exec_driver_sql(
            f"SELECT provolatile FROM pg_proc WHERE oid = to_regprocedure('{_SIGNATURE}')").scalar()
    return None if value is None else str(value)


def _drop_function(store: SQLAlchemyStore) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP FUNCTION {_SIGNATURE}")


def test_concurrent_create_all_creates_the_missing_function_once(url: str, store: SQLAlchemyStore) -> None:
    """Eight stores run create_all at once on a schema whose function is missing: none fails (a
    concurrent CREATE OR REPLACE would fail with "tuple concurrently updated") and it is VOLATILE."""
    _drop_function(store)
    stores = [SQLAlchemyStore.from_url(url) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def create(each: SQLAlchemyStore) -> None:
        barrier.wait()
        try:
            each.create_all()
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(each,)) for each in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for each in stores:
        each.close()
    assert errors == []
    assert _volatility(store) == "v"


def test_create_all_replaces_a_function_that_differs(store: SQLAlchemyStore) -> None:
    """A function of the same signature that is not the library's (here: STABLE, which would miss
    recipients committed while the accept waited) is replaced."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER FUNCTION {_SIGNATURE} STABLE")
    assert _volatility(store) == "s"
    store.create_all()
    assert _volatility(store) == "v"


def test_create_all_needs_no_ddl_right_once_the_function_is_current(
        url: str, store: SQLAlchemyStore, postgres_server: PostgresServer) -> None:
    """An application role with only DML grants can call create_all at start-up, as the README
    suggests, once the schema (function included) is in place."""
    with store.engine.begin() as conn:
        conn.exec_driver_sql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bl_app') "
                             "THEN CREATE ROLE bl_app LOGIN; END IF; END $$")
        conn.exec_driver_sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.exec_driver_sql("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO bl_app")
        conn.exec_driver_sql("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO bl_app")
    app = SQLAlchemyStore.from_url(url.replace(f"//{OS_USER}@", "//bl_app@"))
    try:
        app.create_all()
        lifecycle = BroadcastLifecycle(app)
        entity_id = lifecycle.kind("booking").create("c1", slots=1).id
        lifecycle.kind("booking").start_broadcast(entity_id, ["t1"])
        lifecycle.kind("booking").activate(entity_id, ttl=timedelta(hours=1))
        assert lifecycle.kind("booking").accept(entity_id, "t1").status is BroadcastStatus.FULLY_FILLED
    finally:
        app.close()


def test_a_function_dropped_after_it_was_found_falls_back(store: SQLAlchemyStore,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Every in-place accept's statement calls the function: once it is gone (a downgrade, a drop_all), the
    store notices the error, warns, and takes the accepts that follow (the fill too) the general way."""
    lifecycle = BroadcastLifecycle(store)
    recorder = EventRecorder()
    lifecycle.bus.connect(recorder)
    entity_id = lifecycle.kind("booking").create("c1", slots=3).id
    lifecycle.kind("booking").start_broadcast(entity_id, ["t1", "t2", "t3"])
    lifecycle.kind("booking").activate(entity_id, ttl=timedelta(hours=1))
    lifecycle.kind("booking").accept(entity_id, "t1")  # the store finds the function here
    _drop_function(store)
    with caplog.at_level(logging.WARNING):
        lifecycle.kind("booking").accept(entity_id, "t2")
        filled = lifecycle.kind("booking").accept(entity_id, "t3")
    assert filled.status is BroadcastStatus.FULLY_FILLED
    (event,) = [e for e in recorder.events if e.topic is Topic.FULLY_FILLED]
    assert [r.id for r in event.recipients] == ["c1", "t1", "t2", "t3"]
    assert [r.getMessage() for r in caplog.records].count(
        f"PostgreSQL function {_SIGNATURE} is missing, so accept, release and a transition announced to every "
        "notified transporter take the general path (a read, then a compare-and-set write in "
        "several round trips, which may retry). SQLAlchemyStore.create_all() creates it, or "
        "run broadcast_lifecycle.stores.schema.postgresql_functions_ddl() in a migration (docs/persistence.md); "
        "this store looks for it again after create_all() or a restart") == 1
