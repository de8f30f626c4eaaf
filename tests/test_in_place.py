"""Accept and release in place (PostgreSQL: decided by their statement, generated from the table): refusals
decided on the row read back, and the filling accept's terminal event reaching a transporter notified while
it waited for the row lock."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from conftest import ManualClock
from sqlalchemy import text
from sqlalchemy.orm import Session

from broadcast_lifecycle import (
    BroadcastLifecycle,
    BroadcastNotFound,
    BroadcastStatus,
    InvalidTransition,
    Topic,
    TransitionRefused,
    Trigger,
    WritePath,
)
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

Command = Callable[[BroadcastLifecycle, int], object]

_REFUSALS: list[tuple[str, Command, type[Exception], str]] = [
    ("accept when full", lambda lc, i: lc.kind("booking").accept(i, "t3"), InvalidTransition,
     "not allowed from fully_filled"),
    ("accept by a stranger", lambda lc, i: lc.kind("booking").accept(i, "t9"), TransitionRefused,
     "transporter t9 was not notified"),
    ("release more than held", lambda lc, i: lc.kind("booking").release(i, "t1", slots=2), TransitionRefused,
     "holds 1"),
    ("release by a stranger", lambda lc, i: lc.kind("booking").release(i, "t9"), TransitionRefused, "t9"),
    ("accept unknown id", lambda lc, i: lc.kind("booking").accept(i + 1000, "t1"), BroadcastNotFound,
     "no booking with id"),
]


def _lifecycles(url: str) -> tuple[BroadcastLifecycle, BroadcastLifecycle, EventRecorder, ManualClock]:
    """The default lifecycle (in place where the store can) and one forced onto the general path."""
    store = SQLAlchemyStore.from_url(url)
    store.create_all()
    clock = ManualClock()
    fast, slow = BroadcastLifecycle(store, clock=clock), BroadcastLifecycle(store, clock=clock)
    for trigger in (Trigger.ACCEPT, Trigger.RELEASE):
        slow.add_guard(trigger, lambda snapshot, ctx: None)  # any host guard forces the general path
    recorder = EventRecorder()
    fast.bus.connect(recorder)
    slow.bus.connect(recorder)
    return fast, slow, recorder, clock


@pytest.mark.parametrize(("case", "command", "error", "reason"), _REFUSALS, ids=[r[0] for r in _REFUSALS])
def test_refusals_in_place_match_the_general_path_and_write_nothing(
        database_url: str, case: str, command: Command, error: type[Exception], reason: str) -> None:
    """A guard failing in the write is refused with the core's words, and changes nothing."""
    fast, slow, recorder, _ = _lifecycles(database_url)
    messages = []
    for entity_id, lifecycle in ((900_001, fast), (900_002, slow)):
        lifecycle.kind("booking").create(f"c{entity_id}", slots=2, entity_id=entity_id)
        lifecycle.kind("booking").start_broadcast(entity_id, ["t1", "t2", "t3"])
        lifecycle.kind("booking").activate(entity_id, ttl=timedelta(hours=1))
        lifecycle.kind("booking").accept(entity_id, "t1")
        if case == "accept when full":
            lifecycle.kind("booking").accept(entity_id, "t2")
        before = (lifecycle.kind("booking").get(entity_id), lifecycle.kind("booking").history(entity_id),
                  lifecycle.kind("booking").recipients(entity_id), len(recorder.events))
        with pytest.raises(error, match=reason) as info:
            command(lifecycle, entity_id)
        messages.append(re.sub(r"\b90\d{4}\b", "<id>", str(info.value)))
        assert (lifecycle.kind("booking").get(entity_id), lifecycle.kind("booking").history(entity_id),
                lifecycle.kind("booking").recipients(entity_id), len(recorder.events)) == before
    assert messages[0] == messages[1]


def test_accept_in_the_wrong_state_is_an_invalid_transition(database_url: str) -> None:
    """Before activation an accept is not allowed at all: InvalidTransition names the allowed states."""
    fast, _, _, _ = _lifecycles(database_url)
    entity_id = fast.kind("booking").create("c1", slots=2).id
    fast.kind("booking").start_broadcast(entity_id, ["t1"])
    with pytest.raises(InvalidTransition, match="broadcasting") as info:
        fast.kind("booking").accept(entity_id, "t1")
    assert info.value.from_state == "broadcasting"


def _wait_for_lock_waiter(url: str, deadline_s: float = 30.0) -> None:
    """Until another backend waits on a row lock (polled; a barrier in the database's own terms)."""
    store = SQLAlchemyStore.from_url(url)
    give_up = time.monotonic() + deadline_s
    try:
        while time.monotonic() < give_up:
            with store.engine.connect() as conn:
                waiting = conn.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()")).scalar_one()
            if waiting:
                return
        raise AssertionError("the filling accept never queued on the row lock")
    finally:
        store.close()


@pytest.mark.parametrize("function", ["with the everyone function", "without it"])
def test_filling_accept_tells_a_transporter_notified_while_it_waited(
        postgres_server: object, function: str, caplog: pytest.LogCaptureFixture) -> None:
    """notify_more holds the row lock (host transaction) while the filling accept queues on it; once
    notify_more commits, the accept fills and its fully_filled event reaches the new transporter too.
    In one statement the recipients come from a VOLATILE function; a database without it (a host
    that did not run the revision) fills on the general path, and says so."""
    from postgres_server import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    url = postgres_server.create_database(f"in_place_fill_race_{len(function)}")
    fast, _, recorder, clock = _lifecycles(url)
    store = fast.store
    assert isinstance(store, SQLAlchemyStore)
    if function == "without it":
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DROP FUNCTION bl_everyone_json(text, text, text)")
    entity_id = fast.kind("booking").create("c1", slots=2).id
    fast.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
    fast.kind("booking").activate(entity_id, ttl=timedelta(hours=1))
    fast.kind("booking").accept(entity_id, "t1")
    clock.advance(timedelta(seconds=1))  # recipients are listed by when they were notified
    outcome: list[object] = []
    with Session(store.engine) as session:
        fast.kind("booking").notify_more(entity_id, ["t-late"], tx=session)  # locks the row until commit
        accepting = threading.Thread(target=lambda: outcome.append(fast.kind("booking").accept(entity_id, "t2")))
        accepting.start()
        _wait_for_lock_waiter(url)
        session.commit()
    accepting.join()
    (filled,) = [e for e in recorder.events if e.topic is Topic.FULLY_FILLED]
    assert [r.id for r in filled.recipients] == ["c1", "t1", "t2", "t-late"]
    assert getattr(outcome[0], "status", None) is BroadcastStatus.FULLY_FILLED
    missing = [r for r in caplog.records if "bl_everyone_json(text, text, text) is missing" in r.getMessage()]
    assert len(missing) == (1 if function == "without it" else 0)


def test_the_filling_accept_is_one_statement(postgres_server: object) -> None:
    """With the function in place, the accept that takes the last slots never reaches the general
    path (load, decide, compare-and-set): it fills, and writes fully_filled, in its one statement."""
    from postgres_server import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    fast, _, recorder, _ = _lifecycles(postgres_server.create_database("in_place_fill_alone"))
    store = fast.store
    assert isinstance(store, SQLAlchemyStore)
    entity_id = fast.kind("booking").create("c1", slots=2).id
    fast.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
    fast.kind("booking").activate(entity_id, ttl=timedelta(hours=1))

    def general_path(*_: object, **__: object) -> None:
        raise AssertionError("the accept took the general path")

    store.apply = general_path  # type: ignore[method-assign]
    store.load = general_path  # type: ignore[method-assign,assignment]
    fast.kind("booking").accept(entity_id, "t1")
    filled = fast.kind("booking").accept(entity_id, "t2")
    assert (filled.status, filled.snapshot.slots_filled, filled.version) == (BroadcastStatus.FULLY_FILLED, 2, 5)
    assert recorder.names()[-3:] == ["BROADCAST_STATE_CHANGED", "BROADCAST_STATE_CHANGED", "BOOKING_FULLY_FILLED"]
    assert [r.id for r in recorder.events[-1].recipients] == ["c1", "t1", "t2"]


def test_events_sent_from_an_in_place_accept_are_the_events_stored(postgres_server: object) -> None:
    """What receivers get from an in-place accept, fill and release (built from the statement's RETURNING
    row) is what the outbox holds for the relay (written by the statement's SQL), as for a re-offering
    release (which the statement leaves to the general path)."""
    from postgres_server import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    fast, _, recorder, clock = _lifecycles(postgres_server.create_database("in_place_stored_events"))
    entity_id = fast.kind("booking").create("c1", slots=3).id
    fast.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
    fast.kind("booking").activate(entity_id, ttl=timedelta(hours=1))
    clock.advance(timedelta(seconds=1))

    def refuse(_: object) -> None:
        raise RuntimeError("keep it pending")

    fast.bus.connect(refuse)  # a failed delivery leaves the event in the outbox
    recorder_seen = len(recorder.events)
    results = [fast.kind("booking").accept(entity_id, "t1"),
               fast.kind("booking").accept(entity_id, "t2", slots=2),
               fast.kind("booking").release(entity_id, "t1"),  # from fully_filled: re-offers, on the general path
               fast.kind("booking").release(entity_id, "t2")]  # from partially_filled
    assert [r.path for r in results] == [WritePath.IN_PLACE, WritePath.IN_PLACE, WritePath.GENERAL,
                                         WritePath.IN_PLACE]
    sent = recorder.events[recorder_seen:]
    assert [e.topic for e in sent] == [Topic.STATE_CHANGED, Topic.STATE_CHANGED, Topic.FULLY_FILLED,
                                       Topic.STATE_CHANGED, Topic.OFFERED, Topic.STATE_CHANGED]
    stored = {entry.event.event_id: entry.event for entry in fast.store.pending_events(100)}
    assert [stored.get(e.event_id) for e in sent] == sent
