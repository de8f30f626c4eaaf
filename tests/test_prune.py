"""Retention: prune deletes delivered events, old idempotency records and (when asked) finished histories,
batch by batch, on every store; it never loses a pending, retrying or dead event, also while writers run."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta

import pytest
from conftest import ManualClock, StoreOpener
from sqlalchemy import func, select

from broadcast_lifecycle import (
    BroadcastEvent,
    BroadcastLifecycle,
    BroadcastStatus,
    BroadcastStore,
    EntityId,
    InMemoryStore,
    InvalidArgument,
)
from broadcast_lifecycle.outbox import RetryPolicy
from broadcast_lifecycle.retention import PruneReport
from broadcast_lifecycle.stores.base import PruneTarget
from broadcast_lifecycle.stores.schema import deliveries_table, history_table, outbox_table
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

WEEK = timedelta(days=7)
POLICY = RetryPolicy(max_attempts=2, first_delay=timedelta(seconds=5))


class Switch:
    """A receiver that raises for the event names in ``failing``."""

    def __init__(self) -> None:
        self.failing: set[str] = set()

    def __call__(self, event: BroadcastEvent) -> None:
        if event.name in self.failing:
            raise ConnectionError(f"down for {event.name}")


class Old:
    """What a lifecycle wrote a week and more ago: ids of broadcasts and events by what became of them."""

    def __init__(self) -> None:
        self.finished: list[EntityId] = []  # cancelled, every event delivered
        self.open: list[EntityId] = []  # still active (deadline far away)
        self.keys: list[str] = []
        self.pending: set[str] = set()  # never attempted: no receiver when written
        self.failed: set[str] = set()  # a receiver failed once, to be retried
        self.dead: set[str] = set()  # a receiver gave up


def _write_old(lc: BroadcastLifecycle, switch: Switch, clock: ManualClock, finished: int = 6) -> Old:
    """Broadcasts in every outbox state, then the clock moves eight days on."""
    old = Old()
    for n in range(finished):
        key = f"old-{n}"
        booking = lc.kind("booking").create(f"c{n}", idempotency_key=f"{key}-create").id
        lc.kind("booking").start_broadcast(booking, ["t1"], actor="ops", idempotency_key=f"{key}-start")
        lc.kind("booking").cancel(booking, actor=f"c{n}", idempotency_key=f"{key}-cancel")
        old.finished.append(booking)
        old.keys += [f"{key}-create", f"{key}-start", f"{key}-cancel"]
    # A delivered event with per-receiver rows: a receiver failed, then the relay delivered it.
    switch.failing = {"BOOKING_CANCELLED"}
    recovered = lc.kind("booking").create("c-recovered").id
    lc.kind("booking").cancel(recovered)
    switch.failing = set()
    clock.advance(timedelta(minutes=1))
    lc.relay(grace=timedelta(0)).relay_once()
    old.finished.append(recovered)
    for n in range(2):
        old.open.append(lc.kind("booking").create(f"open{n}", expires_at=clock.now + 300 * WEEK).id)
    switch.failing = {"BOOKING_CANCELLED"}
    for n in range(2):  # dead: fails after commit, then in the relay (max_attempts=2)
        booking = lc.kind("booking").create(f"dead{n}").id
        lc.kind("booking").cancel(booking)
        old.dead |= {e.event.event_id for e in lc.store.pending_events(1000) if e.event.entity_id == booking}
    clock.advance(timedelta(minutes=1))
    lc.relay(grace=timedelta(0)).relay_once()
    for n in range(2):  # failed once, retrying
        booking = lc.kind("booking").create(f"failed{n}").id
        lc.kind("booking").cancel(booking)
        old.failed |= {e.event.event_id for e in lc.store.pending_events(1000) if e.event.entity_id == booking}
    switch.failing = set()
    silent = BroadcastLifecycle(lc.store, clock=clock)  # no receivers: its events stay pending
    for n in range(2):
        silent.kind("booking").create(f"silent{n}")
    old.pending = {e.event.event_id for e in lc.store.pending_events(1000)} - old.failed
    assert len(old.pending) == 2 and len(old.failed) == 2 and len(old.dead) == 2
    assert {letter.event.event_id for letter in lc.store.dead_letters(100)} == old.dead
    clock.advance(WEEK + timedelta(days=1))
    return old


def _lifecycle(store: BroadcastStore, clock: ManualClock) -> tuple[BroadcastLifecycle, Switch]:
    lc = BroadcastLifecycle(store, clock=clock, retry=POLICY)
    switch = Switch()
    lc.bus.connect(switch, name="sockets")
    lc.bus.connect(EventRecorder(), name="analytics")
    return lc, switch


def _assert_live_events_survived(lc: BroadcastLifecycle, old: Old) -> None:
    pending = {e.event.event_id for e in lc.store.pending_events(100_000)}
    assert old.pending | old.failed <= pending, "a pending or retrying event was pruned"
    dead = {letter.event.event_id for letter in lc.store.dead_letters(100_000)}
    assert old.dead <= dead, "a dead event was pruned"


def test_prune_keeps_what_is_live_and_the_history_unless_asked(open_store: StoreOpener, clock: ManualClock) -> None:
    """prune(7 days) deletes old delivered events and keys but no pending, retrying or dead event and no
    history; with history=True it deletes exactly the histories of broadcasts finished before the cutoff."""
    lc, switch = _lifecycle(open_store(), clock)
    old = _write_old(lc, switch, clock)
    fresh = lc.kind("booking").create("fresh", idempotency_key="fresh-create").id
    lc.kind("booking").cancel(fresh)

    report = lc.prune(WEEK, batch_size=2)
    # 6 finished x (created, started + offered, changed + cancelled), the recovered one's 3, the 2 open ones' created,
    # and the events of the dead and the failed broadcasts that were delivered (created, changed) 2 x 2 each;
    # the in-memory store dropped them when they were delivered
    delivered = 0 if isinstance(lc.store, InMemoryStore) else 6 * 5 + 3 + 2 + 4 + 4
    assert report == PruneReport(before=clock.now - WEEK, outbox=delivered, idempotency=18, history=0)
    _assert_live_events_survived(lc, old)
    assert all(lc.store.recall(key) is None for key in old.keys)
    assert lc.store.recall("fresh-create") is not None
    assert len(lc.kind("booking").history(old.finished[0])) == 3, "the history stays unless asked"
    assert lc.prune(WEEK) == PruneReport(before=clock.now - WEEK)

    report = lc.prune(WEEK, history=True, batch_size=3)
    assert report == PruneReport(before=clock.now - WEEK, history=len(old.finished) + 2 + 2)  # + dead, failed
    assert [lc.kind("booking").history(b) for b in old.finished] == [()] * len(old.finished)
    assert lc.kind("booking").get(old.finished[0]).status is BroadcastStatus.CANCELLED, "the broadcast row stays"
    assert [len(lc.kind("booking").history(b)) for b in old.open] == [1, 1], "an open broadcast's history stays whole"
    assert len(lc.kind("booking").history(fresh)) == 2, "a broadcast finished after the cutoff keeps its history"
    _assert_live_events_survived(lc, old)
    assert lc.prune(WEEK, history=True) == PruneReport(before=clock.now - WEEK)


@pytest.mark.parametrize(("older_than", "batch_size", "message"), [
    (timedelta(0), 1000, "older_than must be a positive timedelta"),
    (timedelta(days=-1), 1000, "older_than must be a positive timedelta"),
    (7, 1000, "older_than must be a positive timedelta"),
    (WEEK, 0, "batch_size must be a whole number from 1 to 10000"),
    (WEEK, 10_001, "batch_size must be a whole number from 1 to 10000"),
    (WEEK, True, "batch_size must be a whole number from 1 to 10000"),
])
def test_bad_prune_arguments_are_refused(open_store: StoreOpener, clock: ManualClock, older_than: timedelta,
                                         batch_size: int, message: str) -> None:
    """A cutoff that is not a positive timedelta or a batch size outside 1..10000 is an InvalidArgument on
    every store, and deletes nothing."""
    lc, _ = _lifecycle(open_store(), clock)
    lc.kind("booking").create("c1", idempotency_key="k")
    clock.advance(4 * WEEK)
    with pytest.raises(InvalidArgument, match=message):
        lc.prune(older_than, batch_size=batch_size)
    assert lc.store.recall("k") is not None


# -- concurrency: real threads ----------------------------------------------------------------------


WRITERS, BROADCASTS_PER_WRITER, PRUNERS = 4, 12, 2


class Race:
    """Writers and pruners on one database, started together at a barrier (each with its own engine)."""

    def __init__(self, url: str, clock: ManualClock) -> None:
        self.url, self.clock = url, clock
        self.barrier = threading.Barrier(WRITERS + PRUNERS)
        self.writers_done = threading.Event()
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.written: list[tuple[EntityId, str]] = []  # (broadcast, idempotency key prefix)
        self.failed: set[str] = set()  # cancellation events of the writers whose receiver fails on them
        self.reports: list[PruneReport] = []

    def run(self) -> None:
        """Start every thread, wait for the writers, then let the pruners finish a last pass."""
        writers = [threading.Thread(target=self._guarded, args=(self._write, n)) for n in range(WRITERS)]
        pruners = [threading.Thread(target=self._guarded, args=(self._prune, n)) for n in range(PRUNERS)]
        for thread in writers + pruners:
            thread.start()
        for thread in writers:
            thread.join()
        self.writers_done.set()
        for thread in pruners:
            thread.join()

    def _guarded(self, work: Callable[[int], None], n: int) -> None:
        try:
            work(n)
        except BaseException as exc:
            self.errors.append(exc)
            self.barrier.abort()

    def _write(self, n: int) -> None:
        store = SQLAlchemyStore.from_url(self.url)
        lc, switch = _lifecycle(store, self.clock)
        switch.failing = {"BOOKING_CANCELLED"} if n % 2 else set()
        failed: set[str] = set()
        self.barrier.wait()
        for i in range(BROADCASTS_PER_WRITER):
            prefix = f"w{n}-{i}"
            booking = lc.kind("booking").create(f"c{prefix}", slots=2, idempotency_key=f"{prefix}-create").id
            lc.kind("booking").start_broadcast(booking, ["t1", "t2"], actor="ops",
                                               idempotency_key=f"{prefix}-start")
            lc.kind("booking").activate(booking, ttl=timedelta(hours=1))
            lc.kind("booking").accept(booking, "t1", idempotency_key=f"{prefix}-accept")
            cancelled = lc.kind("booking").cancel(booking, actor=f"c{prefix}", idempotency_key=f"{prefix}-cancel")
            if switch.failing:
                failed |= {e.event_id for e in cancelled.events if e.name in switch.failing}
            with self.lock:
                self.written.append((booking, prefix))
        with self.lock:
            self.failed |= failed
        store.close()

    def _prune(self, _n: int) -> None:
        store = SQLAlchemyStore.from_url(self.url)
        lc = BroadcastLifecycle(store, clock=self.clock)
        self.barrier.wait()
        while True:
            last = self.writers_done.is_set()  # one more full pass once the writers have stopped
            report = lc.prune(WEEK, history=True, batch_size=7)
            with self.lock:
                self.reports.append(report)
            if last:
                break
        store.close()


def test_pruning_under_concurrent_writers_loses_nothing_live(database_url: str, clock: ManualClock) -> None:
    """Two pruners (batches of 7) running while four writers run commands, some of whose events fail:
    every pending, retrying and dead event survives, every new command's history, outbox rows and keys
    are intact, and what was old and done is gone."""
    setup = SQLAlchemyStore.from_url(database_url)
    setup.create_all()
    lc, switch = _lifecycle(setup, clock)
    old = _write_old(lc, switch, clock, finished=60)
    race = Race(database_url, clock)
    race.run()
    assert race.errors == []

    _assert_live_events_survived(lc, old)
    assert len(race.failed) == (WRITERS // 2) * BROADCASTS_PER_WRITER
    pending_now = {e.event.event_id for e in lc.store.pending_events(100_000) if e.created_at == clock.now}
    assert pending_now == race.failed, "a new failed event was pruned (or one that was delivered is pending)"
    assert len(race.written) == WRITERS * BROADCASTS_PER_WRITER
    for booking, prefix in race.written:
        assert [h.version for h in lc.kind("booking").history(booking)] == [1, 2, 3, 4, 5]
        for command in ("create", "start", "accept", "cancel"):
            assert lc.store.recall(f"{prefix}-{command}") is not None
    assert all(lc.store.recall(key) is None for key in old.keys)
    old_ids = [str(b) for b in old.finished]
    o, h, d = outbox_table.c, history_table.c, deliveries_table.c
    with setup.engine.connect() as conn:
        events: dict[str, int] = dict(conn.execute(select(o.entity_id, func.count()).group_by(o.entity_id)
                                   .where(o.entity_id.in_([str(b) for b, _ in race.written]))).all())
        assert events == {str(b): 8 for b, _ in race.written}, "an event row of a new command is missing"
        assert conn.execute(select(func.count()).where(o.entity_id.in_(old_ids))).scalar_one() == 0
        assert conn.execute(select(func.count()).where(h.entity_id.in_(old_ids))).scalar_one() == 0
        orphans = conn.execute(select(func.count()).where(d.event_id.not_in(select(o.event_id)))).scalar_one()
        assert orphans == 0, "a pruned event left per-receiver rows behind"
    assert sum(r.outbox for r in race.reports) == 60 * 5 + 3 + 2 + 4 + 4
    assert sum(r.idempotency for r in race.reports) == 60 * 3
    assert sum(r.history for r in race.reports) == 60 + 1 + 2 + 2
    setup.close()


def test_memory_store_prunes_in_batches(clock: ManualClock) -> None:
    """On the in-memory store a batch deletes at most batch_size units and the loop takes them all;
    delivered events were dropped when delivered, so there are none to prune."""
    store = InMemoryStore()
    lc, _ = _lifecycle(store, clock)
    for n in range(5):
        lc.kind("booking").create(f"c{n}", idempotency_key=f"k{n}")
    clock.advance(2 * WEEK)
    assert store.prune(PruneTarget.IDEMPOTENCY, clock.now - WEEK, 2) == 2
    assert lc.prune(WEEK, batch_size=2) == PruneReport(before=clock.now - WEEK, outbox=0, idempotency=3)
