"""The outbox row is described once (stores/outbox_row.py): the table, every write path and the relay's
rebuild agree with that description, checked by writing through each path and reading the rows back."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from conftest import ManualClock
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from broadcast_lifecycle import BroadcastEvent, BroadcastLifecycle, InMemoryStore, Recipient, Topic
from broadcast_lifecycle.stores._outbox_row import OUTBOX_ROW, WRITTEN_AT, recipients_json
from broadcast_lifecycle.stores.schema import outbox_table
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

Script = Callable[[BroadcastLifecycle, ManualClock], None]

_DELIVERY = {WRITTEN_AT, "delivered_at", "attempts", "next_attempt_at", "last_error", "dead_at"}
"""The outbox's delivery bookkeeping: columns that are not the event."""


def test_description_holds_every_event_field_once() -> None:
    """Each BroadcastEvent field is one described column, named after it, and nothing else is."""
    assert sorted(OUTBOX_ROW.names) == sorted(f.name for f in dataclasses.fields(BroadcastEvent))
    assert len(set(OUTBOX_ROW.names)) == len(OUTBOX_ROW.names)


def test_table_is_the_description_plus_delivery_columns() -> None:
    """bl_outbox has the described columns, with their types and nullability, then the delivery bookkeeping."""
    described = {c.name: c for c in OUTBOX_ROW.columns}
    assert set(outbox_table.c.keys()) == set(described) | _DELIVERY
    for name, column in described.items():
        table_column = outbox_table.c[name]
        assert (type(table_column.type), table_column.nullable) == (type(column.type), column.nullable), name
    assert list(outbox_table.primary_key.columns.keys()) == ["event_id"]


def test_sql_computed_rows_must_name_a_source_for_every_column() -> None:
    """A statement that computes the row in SQL (sweeps) cannot render while a described column has no source,
    nor with a source for a column the description does not have."""
    dialect = create_engine("sqlite://").dialect
    sources = {name: "NULL" for name in OUTBOX_ROW.names}
    assert OUTBOX_ROW.select_list(dialect, prefix=None, sql=sources).count("NULL") == len(OUTBOX_ROW.names)
    del sources["reason"]
    with pytest.raises(ValueError, match="no SQL source for the outbox column reason"):
        OUTBOX_ROW.select_list(dialect, prefix=None, sql=sources)
    with pytest.raises(ValueError, match="not outbox event columns: colour"):
        OUTBOX_ROW.select_list(dialect, sql={"colour": "'red'"})


def test_rebuild_reads_what_params_and_values_write() -> None:
    """An event turned into a Core row or statement parameters and read back is the same event."""
    lc = BroadcastLifecycle(clock=ManualClock())
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    entity_id = lc.kind("booking").create("c1", slots=2).id
    lc.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
    lc.kind("booking").activate(entity_id, ttl=timedelta(hours=1))
    lc.kind("booking").cancel(entity_id, reason="plans changed")
    for event in recorder.events:
        core = OUTBOX_ROW.values(event)
        params = {k.removeprefix("ev_"): v for k, v in OUTBOX_ROW.params(event, lambda t: t).items()}
        for row in (core, params):
            assert OUTBOX_ROW.rebuild(row, lambda kind, key: int(key), lambda t: t) == event


def test_positional_rows_hold_what_the_named_parameters_hold() -> None:
    """A transition's positional rows (shared columns taken once, from its first event) are, column by column,
    the values the named parameters give for each of its events, with the write time last."""
    bookings = BroadcastLifecycle(clock=ManualClock()).kind("booking")
    entity_id = bookings.create("c1", slots=1).id
    transitions = [bookings.start_broadcast(entity_id, ["t1", "t2"]),
                   bookings.activate(entity_id, ttl=timedelta(hours=1)),
                   bookings.accept(entity_id, "t1"), bookings.cancel(entity_id, reason="plans changed")]

    def bind(at: object) -> object:
        return None if at is None else f"bound {at}"

    for result in transitions:
        rows = OUTBOX_ROW.rows(result.events, bind, "now")
        assert rows == [(*OUTBOX_ROW.params(event, bind, prefix="").values(), "now") for event in result.events]
    dialect = create_engine("sqlite://").dialect
    assert OUTBOX_ROW.insert_values(dialect).count("?") == len(OUTBOX_ROW.names) + 1 == len(rows[0])


@pytest.mark.parametrize("recipients", [
    (Recipient("customer", "c1"),),
    (Recipient("customer", "ç\"1\\"), Recipient("transporter", "t 1"), Recipient("transporter", "🚚")),
    (),
    (Recipient("transporter", 7),),  # type: ignore[arg-type]  # not a str: the JSON encoder writes it
])
def test_recipients_json_is_the_compact_json_of_the_pairs(recipients: tuple[Recipient, ...]) -> None:
    """The recipients column's text is exactly compact ``json`` of the ``[role, id]`` pairs (escapes included)."""
    expected = json.dumps([[r.role, r.id] for r in recipients], separators=(",", ":"))
    assert recipients_json(recipients) == expected
    assert recipients_json(recipients) == expected  # again, from the pairs' kept text


@contextmanager
def _host_transaction(lc: BroadcastLifecycle) -> Iterator[Session | None]:
    """A host session on the SQL store, committed at the end (``None`` on the in-memory store)."""
    store = lc.store
    if not isinstance(store, SQLAlchemyStore):
        yield None
        return
    with Session(store.engine) as session:
        yield session
        session.commit()


def _sent(lc: BroadcastLifecycle, clock: ManualClock, script: Script) -> list[BroadcastEvent]:
    """The events ``script`` dispatched, with a second receiver that always fails (so they all stay pending)."""
    recorder = EventRecorder()

    def refuse(_: BroadcastEvent) -> None:
        raise RuntimeError("keep it pending")

    lc.bus.connect(recorder)
    lc.bus.connect(refuse)
    script(lc, clock)
    return recorder.events


def _stored_equals_sent(url: str, script: Script) -> list[BroadcastEvent]:
    """Run ``script`` on the SQL store at ``url`` and on the in-memory reference: each event sent equals the
    event the relay rebuilds from its row, and equals the reference's event (ids aside); returns them."""
    store = SQLAlchemyStore.from_url(url)
    store.create_all()
    try:
        clock = ManualClock()
        sent = _sent(BroadcastLifecycle(store, clock=clock), clock, script)
        stored = {entry.event.event_id: entry.event for entry in store.pending_events(1000)}
        assert len(stored) == len(sent)
        assert [stored.get(event.event_id) for event in sent] == sent
    finally:
        store.close()
    clock = ManualClock()
    reference = _sent(BroadcastLifecycle(InMemoryStore(), clock=clock), clock, script)
    assert [dataclasses.replace(e, event_id="") for e in sent] == [
        dataclasses.replace(e, event_id="") for e in reference]
    return sent


def test_every_write_path_stores_the_events_it_sends(database_url: str) -> None:
    """Create, start_broadcast (PostgreSQL: one statement with two rows), activate and its re-offer, notify_more,
    in-place accept/fill/release (PostgreSQL), a release that re-offers a full broadcast, release and cancel
    with a reason (general path), a command joined to a
    host session, and the sweep: the relay rebuilds from each row exactly the event that was dispatched, and
    that is the event the in-memory reference dispatches."""

    def script(lc: BroadcastLifecycle, clock: ManualClock) -> None:
        first = lc.kind("booking").create("c1", slots=3).id
        lc.kind("booking").start_broadcast(first, ["t1", "t2"])
        lc.kind("booking").activate(first, ttl=timedelta(hours=1))
        lc.kind("booking").notify_more(first, ["t2", "t3"])
        clock.advance(timedelta(seconds=1))
        lc.kind("booking").accept(first, "t1")
        lc.kind("booking").accept(first, "t2", slots=2)
        lc.kind("booking").release(first, "t1")  # opens the full broadcast again: a re-offer (general path)
        lc.kind("booking").release(first, "t2")  # from partially_filled: in place on PostgreSQL
        lc.kind("booking").release(first, "t2", reason="truck broke down")
        lc.kind("booking").cancel(first, reason="plans changed")
        second = lc.kind("booking").create("c2").id
        with _host_transaction(lc) as tx:
            lc.kind("booking").start_broadcast(second, ["t4"], tx=tx)
            lc.kind("booking").activate(second, ttl=timedelta(minutes=5), tx=tx)
        clock.advance(timedelta(minutes=6))
        assert lc.expire_due() == 1

    sent = _stored_equals_sent(database_url, script)
    assert [e.topic for e in sent if e.topic is not Topic.STATE_CHANGED] == [
        Topic.OFFERED, Topic.OFFERED, Topic.OFFERED, Topic.FULLY_FILLED, Topic.OFFERED, Topic.CANCELLED,
        Topic.OFFERED, Topic.OFFERED, Topic.EXPIRED]
    (reoffer,) = [e for e in sent if e.topic is Topic.OFFERED and e.trigger == "release"]
    assert reoffer.recipients == (Recipient("transporter", "t1"), Recipient("transporter", "t3"))  # t2 holds two
    assert [(e.trigger, e.reason) for e in sent if e.topic in (Topic.CANCELLED, Topic.EXPIRED)] == [
        ("cancel", "plans changed"), ("expire", "deadline passed")]
    assert all(e.expires_at is not None for e in sent if e.topic in (Topic.FULLY_FILLED, Topic.EXPIRED))


def test_the_sweep_without_receivers_stores_what_the_relay_sends(database_url: str) -> None:
    """A sweep run with nobody listening writes its rows without reading them back; the relay later
    sends exactly the events described by those rows (deadline, trigger and reason included)."""
    store = SQLAlchemyStore.from_url(database_url)
    store.create_all()
    clock = ManualClock()
    silent = BroadcastLifecycle(store, clock=clock)
    entity_id = silent.kind("booking").create("c1").id
    silent.kind("booking").start_broadcast(entity_id, ["t1"])
    deadline = silent.kind("booking").activate(entity_id, ttl=timedelta(minutes=1)).snapshot.expires_at
    clock.advance(timedelta(minutes=2))
    assert silent.expire_due() == 1
    recorder = EventRecorder()
    listening = BroadcastLifecycle(store, clock=clock)
    listening.bus.connect(recorder)
    clock.advance(timedelta(minutes=1))
    listening.relay().relay_once()
    expired = [e for e in recorder.events if e.status.value == "expired"]  # in either order: written at once
    assert sorted((e.topic.value, e.trigger, e.reason, e.expires_at, e.version) for e in expired) == [
        ("expired", "expire", "deadline passed", deadline, 4),
        ("state_changed", "expire", "deadline passed", deadline, 4),
    ]
    store.close()


def test_events_of_one_transition_differ_only_in_their_per_event_columns() -> None:
    """Every event a transition announces (state change, offer, announcement to everyone) has the shared columns
    alike, so PostgreSQL's one statement may send them once for all its rows."""
    bookings = BroadcastLifecycle(clock=ManualClock()).kind("booking")
    entity_id = bookings.create("c1", slots=1).id
    transitions = [bookings.start_broadcast(entity_id, ["t1", "t2"]),
                   bookings.activate(entity_id, ttl=timedelta(hours=1)),
                   bookings.accept(entity_id, "t1"), bookings.cancel(entity_id, reason="plans changed")]
    assert [len(result.events) for result in transitions] == [2, 2, 2, 2]
    assert {"event_id", "name", "topic", "recipients"} == set(OUTBOX_ROW.names) - set(OUTBOX_ROW.shared)
    for result in transitions:
        first, *others = result.events
        for event in others:
            assert {name: getattr(event, name) for name in OUTBOX_ROW.shared} == {
                name: getattr(first, name) for name in OUTBOX_ROW.shared}
