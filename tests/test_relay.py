"""The outbox relay on real databases: per-receiver retries with backoff, dead letters, concurrent relays,
grace; Deduplicator."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import timedelta

import pytest
from conftest import ManualClock

from broadcast_lifecycle import BroadcastEvent, BroadcastLifecycle, InMemoryStore, InvalidArgument
from broadcast_lifecycle.bus import Deduplicator
from broadcast_lifecycle.outbox import DeliveryReport, RetryPolicy
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

SECOND = timedelta(seconds=1)
POLICY = RetryPolicy(max_attempts=3, first_delay=SECOND, factor=2.0, max_delay=timedelta(minutes=1))


def _lifecycle(url: str, clock: ManualClock, *, create: bool = True) -> BroadcastLifecycle:
    store = SQLAlchemyStore.from_url(url)
    if create:
        store.create_all()
    return BroadcastLifecycle(store, clock=clock, retry=POLICY)


def _pending_ids(lc: BroadcastLifecycle) -> set[str]:
    return {entry.event.event_id for entry in lc.store.pending_events(100_000)}


class Flaky:
    """A receiver that raises on the first ``failures`` deliveries of each event, then records it."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: Counter[str] = Counter()
        self.handled: list[str] = []

    def __call__(self, event: BroadcastEvent) -> None:
        self.calls[event.event_id] += 1
        if self.calls[event.event_id] <= self.failures:
            raise RuntimeError(f"socket layer down (call {self.calls[event.event_id]})")
        self.handled.append(event.event_id)


def test_failing_receiver_gets_the_event_on_the_third_relay_pass(database_url: str, clock: ManualClock) -> None:
    """A receiver failing twice gets the event on the third pass, after each backoff; the others got it once."""
    lc = _lifecycle(database_url, clock)
    entity_id = lc.kind("booking").create("c1").id  # no receiver yet: the event stays pending
    (event_id,) = _pending_ids(lc)
    flaky, steady = Flaky(failures=2), EventRecorder()
    once = EventRecorder()
    lc.bus.connect(flaky, name="flaky")
    lc.bus.connect(steady, name="steady")
    lc.bus.connect(Deduplicator(once), name="once")
    relay = lc.relay(grace=timedelta(0))

    clock.advance(SECOND)
    assert relay.relay_once() == DeliveryReport(failed=1)
    (entry,) = lc.store.pending_events(10)
    assert (entry.attempts, entry.next_attempt_at) == (1, clock.now + SECOND)
    assert entry.last_error is not None and "flaky: RuntimeError: socket layer down (call 1)" in entry.last_error
    states = {r.receiver: r for r in entry.receivers}
    assert set(states) == {"flaky", "steady", "once"}
    assert states["steady"].delivered_at == clock.now and states["once"].delivered_at == clock.now
    assert (states["flaky"].attempts, states["flaky"].next_attempt_at, states["flaky"].delivered_at) == (
        1, clock.now + SECOND, None)
    assert relay.relay_once() == DeliveryReport(), "retried before its backoff elapsed"
    clock.advance(SECOND)
    assert relay.relay_once() == DeliveryReport(failed=1)
    (entry,) = lc.store.pending_events(10)
    assert (entry.attempts, entry.next_attempt_at) == (2, clock.now + 2 * SECOND)
    clock.advance(SECOND)
    assert relay.relay_once() == DeliveryReport(), "retried before its (doubled) backoff elapsed"
    clock.advance(SECOND)
    assert relay.relay_once() == DeliveryReport(delivered=1)

    assert flaky.handled == [event_id] and flaky.calls[event_id] == 3
    assert [e.event_id for e in steady.events] == [event_id], "the healthy receiver got it once"
    assert [e.event_id for e in once.events] == [event_id]
    assert steady.events[0].entity_id == entity_id
    assert _pending_ids(lc) == set()
    assert lc.store.dead_letters(10) == []


def test_always_failing_receiver_dead_letters_the_event(database_url: str, clock: ManualClock) -> None:
    """A receiver that always raises dead-letters the event under its name after max_attempts; the
    others got every event once."""
    lc = _lifecycle(database_url, clock)
    broken_calls: list[str] = []

    def broken(event: BroadcastEvent) -> None:
        broken_calls.append(event.event_id)
        raise ValueError("payload rejected")

    recorder = EventRecorder()
    lc.bus.connect(recorder)
    lc.bus.connect(broken, event_name="BOOKING_CANCELLED")
    entity_id = lc.kind("booking").create("c1").id
    lc.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
    lc.kind("booking").cancel(entity_id, reason="changed plans")  # attempt 1 fails in the after-commit dispatch
    (cancelled,) = [e for e in recorder.events if e.name == "BOOKING_CANCELLED"]
    relay = lc.relay(grace=timedelta(0))

    reports = []
    for _ in range(POLICY.max_attempts - 1):
        clock.advance(timedelta(minutes=1))
        reports.append(relay.relay_once())
    assert reports == [DeliveryReport(failed=1), DeliveryReport(dead=1)]

    (dead,) = lc.store.dead_letters(10)
    assert dead.event.event_id == cancelled.event_id
    assert dead.receiver == f"{__name__}.test_always_failing_receiver_dead_letters_the_event.<locals>.broken"
    assert (dead.attempts, dead.dead_at, dead.last_error) == (
        POLICY.max_attempts, clock.now, "ValueError: payload rejected")
    assert broken_calls == [cancelled.event_id] * POLICY.max_attempts
    assert _pending_ids(lc) == set(), "a dead event is no longer pending"
    assert Counter(e.name for e in recorder.events) == {
        "BROADCAST_STATE_CHANGED": 3, "BOOKING_OFFERED": 1, "BOOKING_CANCELLED": 1}
    clock.advance(timedelta(hours=1))
    assert relay.relay_once() == DeliveryReport(), "a dead event is not retried"


@pytest.mark.parametrize("relays", [4])
def test_concurrent_relays_deliver_each_event_exactly_once(database_url: str, clock: ManualClock,
                                                           relays: int) -> None:
    """Several relays started at a barrier, each with its own engine, deliver each pending event exactly once in all."""
    writer = _lifecycle(database_url, clock)
    for n in range(60):
        entity_id = writer.kind("booking").create(f"c{n}", slots=2).id
        writer.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
        writer.kind("booking").cancel(entity_id)
    expected = _pending_ids(writer)
    assert len(expected) == 60 * 5  # created, broadcasting, the offer, cancelled to the customer and to everyone
    clock.advance(SECOND)

    lock = threading.Lock()
    received: Counter[str] = Counter()
    reports: list[DeliveryReport] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(relays)

    def count(event: BroadcastEvent) -> None:
        with lock:
            received[event.event_id] += 1

    def run() -> None:
        try:
            lc = _lifecycle(database_url, clock, create=False)
            lc.bus.connect(count)
            relay = lc.relay(grace=timedelta(0), batch_size=7)
            barrier.wait()
            report = relay.relay_once()
            with lock:
                reports.append(report)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(relays)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(received) == expected
    assert set(received.values()) == {1}, "an event was delivered by two relays"
    assert sum(r.delivered for r in reports) == len(expected)
    assert _pending_ids(writer) == set()


def test_grace_keeps_the_relay_off_fresh_events(database_url: str, clock: ManualClock) -> None:
    """Events younger than the grace period are left alone (not even leased); older ones are delivered."""
    lc = _lifecycle(database_url, clock)
    lc.kind("booking").create("c1")
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    relay = lc.relay(grace=timedelta(seconds=10))

    clock.advance(timedelta(seconds=9))
    assert relay.relay_once() == DeliveryReport()
    (entry,) = lc.store.pending_events(10)
    assert entry.next_attempt_at is None and entry.attempts == 0, "a fresh event was claimed"
    assert recorder.events == []
    clock.advance(timedelta(seconds=2))
    assert relay.relay_once() == DeliveryReport(delivered=1)
    assert [e.event_id for e in recorder.events] == [entry.event.event_id]


def test_unheard_events_stay_pending_for_another_relay(database_url: str, clock: ManualClock) -> None:
    """A relay with no receiver for an event leaves it pending; once its lease ends a relay with one delivers it."""
    lc = _lifecycle(database_url, clock)
    lc.kind("booking").create("c1")
    clock.advance(SECOND)
    deaf = lc.relay(grace=timedelta(0), lease=timedelta(seconds=30))
    assert deaf.relay_once() == DeliveryReport(unheard=1)
    assert len(lc.store.pending_events(10)) == 1

    listening = _lifecycle(database_url, clock, create=False)
    recorder = EventRecorder()
    listening.bus.connect(recorder)
    relay = listening.relay(grace=timedelta(0))
    assert relay.relay_once() == DeliveryReport(), "taken while another relay's lease lasts"
    clock.advance(timedelta(seconds=30))
    assert relay.relay_once() == DeliveryReport(delivered=1)
    assert recorder.names() == ["BROADCAST_STATE_CHANGED"]


# -- Deduplicator -------------------------------------------------------------------------------

def _events(lifecycle: BroadcastLifecycle, recorder: EventRecorder, n: int) -> list[BroadcastEvent]:
    for i in range(n):
        lifecycle.kind("booking").create(f"c{i}")
    return recorder.events[-n:]


def test_deduplicator_drops_repeats(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """A repeated event_id is dropped and counted; distinct ids pass."""
    first, second = _events(lifecycle, recorder, 2)
    inner = EventRecorder()
    dedup = Deduplicator(inner)
    for event in (first, second, first, first, second):
        dedup(event)
    assert [e.event_id for e in inner.events] == [first.event_id, second.event_id]
    assert dedup.dropped == 3
    assert repr(dedup).startswith("Deduplicator(")


def test_deduplicator_forgets_a_failed_delivery(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """When the wrapped receiver raises, the error propagates and the retry reaches it."""
    (event,) = _events(lifecycle, recorder, 1)
    flaky = Flaky(failures=1)
    dedup = Deduplicator(flaky)
    with pytest.raises(RuntimeError):
        dedup(event)
    dedup(event)
    dedup(event)
    assert flaky.handled == [event.event_id]
    assert dedup.dropped == 1


def test_deduplicator_memory_is_a_bounded_lru(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """Beyond capacity the least recently seen id is forgotten; a repeat refreshes an id."""
    a, b, c = _events(lifecycle, recorder, 3)
    inner = EventRecorder()
    dedup = Deduplicator(inner, capacity=2)
    for event in (a, b, a, c, a, b):  # c evicts b (a was refreshed), then b evicts c
        dedup(event)
    assert [e.event_id for e in inner.events] == [a.event_id, b.event_id, c.event_id, b.event_id]
    with pytest.raises(InvalidArgument):
        Deduplicator(inner, capacity=0)


def test_deduplicator_uses_the_hosts_claim(lifecycle: BroadcastLifecycle, recorder: EventRecorder) -> None:
    """A persistent claim (shared by two Deduplicators, as by two processes) decides; release undoes a failed one."""
    a, b = _events(lifecycle, recorder, 2)
    claimed: set[str] = set()
    lock = threading.Lock()

    def claim(event_id: str) -> bool:
        with lock:
            if event_id in claimed:
                return False
            claimed.add(event_id)
            return True

    flaky, inner = Flaky(failures=1), EventRecorder()
    one = Deduplicator(flaky, claim=claim, release=claimed.discard)
    other = Deduplicator(inner, claim=claim, release=claimed.discard)
    with pytest.raises(RuntimeError):
        one(a)
    other(a)
    one(a)
    other(b)
    one(b)
    assert [e.event_id for e in inner.events] == [a.event_id, b.event_id]
    assert flaky.handled == []
    assert (one.dropped, other.dropped) == (2, 0)
    with pytest.raises(InvalidArgument):
        Deduplicator(inner, release=claimed.discard)


def test_deduplicator_lets_one_of_concurrent_duplicates_through(lifecycle: BroadcastLifecycle,
                                                                recorder: EventRecorder) -> None:
    """Eight threads delivering the same event at once reach the receiver once."""
    (event,) = _events(lifecycle, recorder, 1)
    inner = EventRecorder()
    dedup = Deduplicator(inner)
    barrier = threading.Barrier(8)

    def deliver() -> None:
        barrier.wait()
        dedup(event)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(inner.events) == 1 and dedup.dropped == 7


# -- regressions ----------------------------------------------------------------------------------------

def test_a_long_retry_policy_still_reaches_the_dead_letter(clock: ManualClock) -> None:
    """With max_attempts=50 (capped at one minute) an always-failing event ends dead after 50 attempts."""
    policy = RetryPolicy(max_attempts=50, first_delay=SECOND, max_delay=timedelta(minutes=1))
    lc = BroadcastLifecycle(InMemoryStore(), clock=clock, retry=policy)

    def broken(event: BroadcastEvent) -> None:
        raise RuntimeError("down")

    lc.bus.connect(broken)
    lc.kind("booking").create("c1")  # attempt 1
    relay = lc.relay(grace=timedelta(0))
    for _ in range(policy.max_attempts - 1):
        clock.advance(timedelta(minutes=5))
        relay.relay_once()
    (dead,) = lc.store.dead_letters(10)
    assert dead.attempts == policy.max_attempts


def test_a_retried_failure_is_one_log_line(clock: ManualClock, caplog: pytest.LogCaptureFixture) -> None:
    """The first failure of a receiver is logged with its traceback; the relay's retries of it log one
    warning line each (naming the receiver, the event and the error), not the traceback again."""
    lc = BroadcastLifecycle(InMemoryStore(), clock=clock, retry=RetryPolicy(max_attempts=5, first_delay=SECOND))

    def broken(event: BroadcastEvent) -> None:
        raise RuntimeError("socket layer down")

    lc.bus.connect(broken, name="sockets")
    with caplog.at_level(logging.WARNING, logger="broadcast_lifecycle"):
        event_id = lc.kind("booking").create("c1").events[0].event_id
        relay = lc.relay(grace=timedelta(0))
        for _ in range(2):
            clock.advance(timedelta(minutes=1))
            relay.relay_once()
    failures = [r for r in caplog.records if "sockets failed" in r.getMessage()]
    assert [(r.levelno, r.exc_info is not None) for r in failures] == [
        (logging.ERROR, True), (logging.WARNING, False), (logging.WARNING, False)]
    assert failures[1].getMessage() == (f"receiver sockets failed again on BROADCAST_STATE_CHANGED {event_id}: "
                                        "RuntimeError: socket layer down")


def test_relay_rejects_a_lease_that_does_not_reserve(clock: ManualClock) -> None:
    """A zero or negative lease, or a negative grace, is an InvalidArgument."""
    lc = BroadcastLifecycle(InMemoryStore(), clock=clock)
    with pytest.raises(InvalidArgument):
        lc.relay(lease=timedelta(0))
    with pytest.raises(InvalidArgument):
        lc.relay(grace=timedelta(seconds=-1))
