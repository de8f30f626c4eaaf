"""`extend`: a customer moves the deadline of an open broadcast later, on every store and write path,
and against the sweeper on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from conftest import START, ManualClock, StoreOpener
from sqlalchemy.orm import Session

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncSQLAlchemyStore,
    BroadcastLifecycle,
    BroadcastStatus,
    EntityId,
    InMemoryStore,
    InvalidArgument,
    InvalidTransition,
    Recipient,
    Topic,
    TransitionRefused,
)
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

DEADLINE = START + timedelta(minutes=10)
LATER = START + timedelta(minutes=30)


def _partly_filled(lc: BroadcastLifecycle) -> EntityId:
    """A booking for two trucks offered to t1 and t2, open until DEADLINE, t1 holding one slot."""
    bookings = lc.kind("booking")
    entity_id = bookings.create("c1", slots=2).id
    bookings.start_broadcast(entity_id, ["t1", "t2"])
    bookings.activate(entity_id, expires_at=DEADLINE)
    bookings.accept(entity_id, "t1")
    return entity_id


def test_extend_moves_the_deadline_keeps_the_state_and_tells_everyone_notified(open_store: StoreOpener) -> None:
    """extend writes the new deadline, one version and one history row (state kept), and announces the state
    change to the customer and {KIND}_EXTENDED, carrying the new deadline, to the customer and every notified
    transporter; the outbox holds exactly the events sent."""
    clock = ManualClock(START)
    lc = BroadcastLifecycle(open_store(), clock=clock)
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    entity_id = _partly_filled(lc)
    before = lc.kind("booking").get(entity_id)
    clock.advance(timedelta(minutes=1))

    result = lc.kind("booking").extend(entity_id, expires_at=LATER, actor="c1", reason="waiting for one more")

    after = lc.kind("booking").get(entity_id)
    assert result.snapshot == after
    assert (after.status, after.expires_at, after.version, after.slots_filled) == (
        BroadcastStatus.PARTIALLY_FILLED, LATER, before.version + 1, 1)
    row = lc.kind("booking").history(entity_id)[-1]
    assert (row.from_status, row.to_status, row.trigger, row.actor, row.reason, row.version) == (
        BroadcastStatus.PARTIALLY_FILLED, BroadcastStatus.PARTIALLY_FILLED, "extend", "c1", "waiting for one more",
        after.version)
    changed, extended = result.events
    assert (changed.topic, changed.recipients) == (Topic.STATE_CHANGED, (Recipient("customer", "c1"),))
    assert (extended.name, extended.recipients) == ("BOOKING_EXTENDED", (
        Recipient("customer", "c1"), Recipient("transporter", "t1"), Recipient("transporter", "t2")))
    payload = extended.payload()
    assert (payload["expiresAt"], payload["status"], payload["previousStatus"], payload["trigger"]) == (
        LATER.isoformat(), "partially_filled", "partially_filled", "extend")
    assert recorder.events[-2:] == list(result.events)


def test_extend_keeps_the_broadcast_from_the_sweep_until_the_new_deadline(open_store: StoreOpener) -> None:
    """After extend, a sweep past the old deadline leaves the broadcast open; one past the new deadline expires it."""
    clock = ManualClock(START)
    lc = BroadcastLifecycle(open_store(), clock=clock)
    entity_id = _partly_filled(lc)
    lc.kind("booking").extend(entity_id, ttl=timedelta(minutes=30))
    assert lc.expire_due(DEADLINE + timedelta(minutes=1)) == 0
    assert lc.kind("booking").accept(entity_id, "t2").status is BroadcastStatus.FULLY_FILLED
    other = lc.kind("booking").create("c2").id
    lc.kind("booking").start_broadcast(other, ["t1"])
    lc.kind("booking").activate(other, expires_at=DEADLINE)
    lc.kind("booking").extend(other, expires_at=LATER)
    assert lc.expire_due(LATER) == 1
    assert lc.kind("booking").get(other).status is BroadcastStatus.EXPIRED


def test_extend_refusals_say_what_is_allowed(open_store: StoreOpener) -> None:
    """A deadline not later than the current one is TransitionRefused naming both; a closed broadcast, or one not
    yet offered, is InvalidTransition naming the states extend is allowed from; a broadcasting one without a
    deadline is refused; a missing or doubled deadline is InvalidArgument. Nothing is written by any of them."""
    clock = ManualClock(START)
    lc = BroadcastLifecycle(open_store(), clock=clock)
    bookings = lc.kind("booking")
    entity_id = _partly_filled(lc)
    history = bookings.history(entity_id)
    for new in (DEADLINE, DEADLINE - timedelta(minutes=1)):
        with pytest.raises(TransitionRefused) as refused:
            bookings.extend(entity_id, expires_at=new)
        assert refused.value.reason == (f"new deadline {new.isoformat()} is not later than the current one, "
                                        f"{DEADLINE.isoformat()}")
    with pytest.raises(InvalidArgument, match="extend needs the new deadline: pass expires_at= or ttl="):
        bookings.extend(entity_id)
    with pytest.raises(InvalidArgument, match="pass ttl= or expires_at=, not both"):
        bookings.extend(entity_id, ttl=timedelta(hours=1), expires_at=LATER)
    assert bookings.history(entity_id) == history

    bookings.accept(entity_id, "t2")  # fully_filled: closed
    with pytest.raises(InvalidTransition) as invalid:
        bookings.extend(entity_id, expires_at=LATER)
    assert (invalid.value.from_state, invalid.value.allowed_from) == (
        "fully_filled", ("active", "broadcasting", "partially_filled"))
    created = bookings.create("c2").id
    with pytest.raises(InvalidTransition, match="extend is not allowed from created"):
        bookings.extend(created, expires_at=LATER)
    bookings.start_broadcast(created, ["t1"])
    with pytest.raises(TransitionRefused, match="has no deadline to extend \\(activate sets one\\)"):
        bookings.extend(created, expires_at=LATER)


def test_extend_joins_a_host_session_and_leaves_nothing_on_rollback(database_url: str) -> None:
    """extend(tx=session) commits with the host's transaction and sends its events after; rolled back, the
    deadline, history and outbox stay as they were."""
    store = SQLAlchemyStore.from_url(database_url)
    store.create_all()
    lc = BroadcastLifecycle(store, clock=ManualClock(START))
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    entity_id = _partly_filled(lc)
    pending = len(store.pending_events(100))
    with Session(store.engine) as session:
        lc.kind("booking").extend(entity_id, expires_at=LATER, tx=session)
        session.rollback()
    assert lc.kind("booking").get(entity_id).expires_at == DEADLINE
    assert len(store.pending_events(100)) == pending
    with Session(store.engine) as session:
        lc.kind("booking").extend(entity_id, expires_at=LATER, tx=session)
        assert recorder.events[-1].name != "BOOKING_EXTENDED", "sent before the commit"
        session.commit()
    assert lc.kind("booking").get(entity_id).expires_at == LATER
    assert recorder.events[-1].name == "BOOKING_EXTENDED"
    store.close()


def test_extend_through_the_async_facade(async_database_url: str) -> None:
    """The async handle's extend writes and announces as the sync one (on aiosqlite and async psycopg)."""
    async def scenario() -> None:
        store = AsyncSQLAlchemyStore.from_url(async_database_url)
        await store.create_all()
        lc = AsyncBroadcastLifecycle(store, clock=ManualClock(START))
        recorder = EventRecorder()
        lc.bus.connect(recorder)
        bookings = lc.kind("booking")
        entity_id = (await bookings.create("c1")).id
        await bookings.start_broadcast(entity_id, ["t1"])
        await bookings.activate(entity_id, expires_at=DEADLINE)
        result = await bookings.extend(entity_id, expires_at=LATER)
        assert (result.status, result.snapshot.expires_at) == (BroadcastStatus.ACTIVE, LATER)
        assert [e.name for e in result.events] == ["BROADCAST_STATE_CHANGED", "BOOKING_EXTENDED"]
        assert (await bookings.get(entity_id)).expires_at == LATER
        with pytest.raises(TransitionRefused, match="is not later than the current one"):
            await bookings.extend(entity_id, expires_at=LATER)
        await store.close()

    asyncio.run(scenario())


def test_extend_on_the_in_memory_async_facade() -> None:
    """The async facade over the in-memory store extends too (no database)."""

    async def scenario() -> None:
        lc = AsyncBroadcastLifecycle(InMemoryStore(), clock=ManualClock(START))
        bookings = lc.kind("booking")
        entity_id = (await bookings.create("c1")).id
        await bookings.start_broadcast(entity_id, ["t1"])
        await bookings.activate(entity_id, expires_at=DEADLINE)
        assert (await bookings.extend(entity_id, ttl=timedelta(hours=1))).snapshot.expires_at == START + timedelta(
            hours=1)

    asyncio.run(scenario())


def _check_round(lc: BroadcastLifecycle, recorder: EventRecorder, entity_id: EntityId, customer: str, *,
                 extended: bool) -> None:
    """The round's winner is all that was written and told: state, deadline, history, one event per recipient."""
    final = lc.kind("booking").get(entity_id)
    expected = (BroadcastStatus.ACTIVE, LATER) if extended else (BroadcastStatus.EXPIRED, DEADLINE)
    assert (final.status, final.expires_at) == expected
    assert [h.trigger for h in lc.kind("booking").history(entity_id)][3:] == ["extend" if extended else "expire"]
    for recipient in (Recipient("customer", customer), Recipient("transporter", "t1"), Recipient("transporter", "t2")):
        told = [e.topic for e in recorder.events if e.entity_id == entity_id and recipient in e.recipients
                and e.topic in (Topic.EXTENDED, Topic.EXPIRED)]
        assert told == [Topic.EXTENDED if extended else Topic.EXPIRED], (recipient, told)


ROUNDS = 100
SWEEP_AT = DEADLINE + timedelta(seconds=1)
"""The sweeper's time: just past the deadline. The customer's clock is just before it, so its extend is allowed."""


@pytest.mark.postgres
def test_extend_races_the_sweeper_and_exactly_one_wins(postgres_server: object) -> None:
    """extend and a sweep of the same just-overdue broadcast start together on PostgreSQL, many rounds: each round
    exactly one wins (extended and open, or expired), each recipient gets exactly one of the extended and the
    expired event, and neither side wins every round."""
    from postgres_server import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    store = SQLAlchemyStore.from_url(postgres_server.create_database("extend_vs_sweep"), pool_size=4)
    store.create_all()
    customer_clock = ManualClock(DEADLINE - timedelta(milliseconds=1))
    lc = BroadcastLifecycle(store, clock=customer_clock)
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    setup = BroadcastLifecycle(store, clock=ManualClock(START), bus=lc.bus)
    wins = {"extend": 0, "sweep": 0}
    errors: list[BaseException] = []
    for round_no in range(ROUNDS):
        bookings = setup.kind("booking")
        entity_id = bookings.create(f"c{round_no}").id
        bookings.start_broadcast(entity_id, ["t1", "t2"])
        bookings.activate(entity_id, expires_at=DEADLINE)
        barrier = threading.Barrier(2)
        outcome: dict[str, str] = {}

        def extend(entity_id: EntityId = entity_id, barrier: threading.Barrier = barrier,
                   outcome: dict[str, str] = outcome) -> None:
            barrier.wait()
            try:
                lc.kind("booking").extend(entity_id, expires_at=LATER)
                outcome["extend"] = "won"
            except (InvalidTransition, TransitionRefused):
                outcome["extend"] = "refused"
            except BaseException as exc:
                errors.append(exc)

        def sweep(barrier: threading.Barrier = barrier, outcome: dict[str, str] = outcome) -> None:
            barrier.wait()
            try:
                outcome["sweep"] = "won" if lc.expire_due(SWEEP_AT) == 1 else "lost"
            except BaseException as exc:
                errors.append(exc)

        # the thread reaching the barrier last usually runs first: alternate who that is
        racers: list[Callable[[], None]] = [extend, sweep] if round_no % 2 == 0 else [sweep, extend]
        threads = [threading.Thread(target=racer) for racer in racers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], errors[:3]
        winners = [name for name, result in outcome.items() if result == "won"]
        assert len(winners) == 1, outcome
        wins[winners[0]] += 1
        _check_round(lc, recorder, entity_id, f"c{round_no}", extended=winners == ["extend"])
        recorder.clear()
    print(f"extend vs sweep over {ROUNDS} rounds: {wins}")
    assert wins["extend"] > 0 and wins["sweep"] > 0, f"one side won every round: {wins}"
    assert store.pending_events(10) == [], "every event was delivered after its commit"
    store.close()
