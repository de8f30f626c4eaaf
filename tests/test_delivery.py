"""Delivery per named receiver: a failing receiver is retried and dead-lettered alone, the healthy ones
get each event once, also from a relay in another process; names, connection order, and the usual
path that writes nothing per receiver."""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import ManualClock, StoreOpener
from sqlalchemy import func, select

from broadcast_lifecycle import BroadcastEvent, BroadcastLifecycle, InMemoryStore, InvalidArgument
from broadcast_lifecycle.bus import Deduplicator, SignalBus, receiver_name
from broadcast_lifecycle.cli import main
from broadcast_lifecycle.outbox import DeliveryReport, RetryPolicy
from broadcast_lifecycle.stores.schema import deliveries_table
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

MINUTE = timedelta(minutes=1)
POLICY = RetryPolicy(max_attempts=3, first_delay=timedelta(seconds=5), max_delay=MINUTE)

class Socket:
    """A receiver that records each event id it gets, and raises on every call while ``down``."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.calls: Counter[str] = Counter()

    def __call__(self, event: BroadcastEvent) -> None:
        self.calls[event.event_id] += 1
        if self.down:
            raise ConnectionError(f"socket server unreachable for {event.name}")


def _run_commands(lc: BroadcastLifecycle) -> None:
    booking = lc.kind("booking").create("c1", slots=2).id
    lc.kind("booking").start_broadcast(booking, ["t1", "t2"])
    lc.kind("booking").activate(booking, ttl=timedelta(hours=1))
    lc.kind("booking").accept(booking, "t1")
    lc.kind("booking").cancel(booking, reason="changed plans")


def test_healthy_receiver_gets_each_event_once_while_another_dead_letters(open_store: StoreOpener,
                                                                           clock: ManualClock) -> None:
    """A receiver failing three times (once after commit, twice in a relay of another process) dead-letters
    each event under its name with its error; the healthy receiver got each event exactly once."""
    writer = BroadcastLifecycle(open_store(), clock=clock, retry=POLICY)
    healthy, broken = Socket(), Socket(down=True)
    writer.bus.connect(healthy, name="analytics")
    writer.bus.connect(broken, name="sockets")
    _run_commands(writer)
    events = set(healthy.calls)
    assert len(events) == 8 and set(healthy.calls.values()) == {1}
    assert broken.calls == healthy.calls, "the failing receiver was tried once per event after commit"
    pending = writer.store.pending_events(100)
    assert {p.event.event_id for p in pending} == events
    for entry in pending:
        states = {r.receiver: r for r in entry.receivers}
        assert states["analytics"].delivered_at is not None and states["analytics"].attempts == 0
        assert (states["sockets"].attempts, states["sockets"].delivered_at) == (1, None)

    # A relay in another process, with its own receivers under the same names.
    relay_side = BroadcastLifecycle(open_store(), clock=clock, retry=POLICY)
    healthy_there, broken_there = Socket(), Socket(down=True)
    relay_side.bus.connect(healthy_there, name="analytics")
    relay_side.bus.connect(broken_there, name="sockets")
    relay = relay_side.relay(grace=timedelta(0))
    reports = []
    for _ in range(POLICY.max_attempts - 1):
        clock.advance(MINUTE)
        reports.append(relay.relay_once())
    assert reports == [DeliveryReport(failed=8), DeliveryReport(dead=8)]
    clock.advance(timedelta(hours=1))
    assert relay.relay_once() == DeliveryReport(), "nothing is left to retry"

    assert healthy_there.calls == Counter(), "the healthy receiver was never called again"
    assert set(healthy.calls.values()) == {1}
    assert broken_there.calls == Counter({event_id: 2 for event_id in events})
    letters = writer.store.dead_letters(100)
    assert {letter.event.event_id for letter in letters} == events
    for letter in letters:
        assert (letter.receiver, letter.attempts, letter.dead_at) == ("sockets", 3, clock.now - timedelta(hours=1))
        assert letter.last_error == f"ConnectionError: socket server unreachable for {letter.event.name}"
    assert writer.store.pending_events(100) == []


def test_a_receiver_that_recovers_is_retried_alone(open_store: StoreOpener, clock: ManualClock) -> None:
    """A receiver down at commit time gets the event from the relay once it is back; the others are not
    called again, and the event ends delivered with nothing dead."""
    lc = BroadcastLifecycle(open_store(), clock=clock, retry=POLICY)
    first, flaky, last = Socket(), Socket(down=True), Socket()
    lc.bus.connect(first, name="first")
    lc.bus.connect(flaky, name="flaky")
    lc.bus.connect(last, name="last")
    lc.kind("booking").create("c1")
    (event_id,) = first.calls
    flaky.down = False
    clock.advance(MINUTE)
    assert lc.relay(grace=timedelta(0)).relay_once() == DeliveryReport(delivered=1)
    assert (first.calls, flaky.calls, last.calls) == ({event_id: 1}, {event_id: 2}, {event_id: 1})
    assert lc.store.pending_events(10) == [] and lc.store.dead_letters(10) == []


def test_a_relay_calls_each_receiver_on_its_own_backoff(clock: ManualClock) -> None:
    """Two receivers that failed a different number of times are each retried when their own backoff ends."""
    lc = BroadcastLifecycle(InMemoryStore(), clock=clock,
                            retry=RetryPolicy(max_attempts=5, first_delay=timedelta(seconds=10), factor=3.0))
    early, late = Socket(down=True), Socket()
    lc.bus.connect(early, name="early")
    lc.bus.connect(late, name="late")
    relay = lc.relay(grace=timedelta(0))
    lc.kind("booking").create("c1")  # early fails (retry in 10 s), late handles it
    (event_id,) = early.calls
    clock.advance(timedelta(seconds=10))
    late.down = True
    early.down = False
    assert relay.relay_once() == DeliveryReport(delivered=1), "late had handled it: not called again"
    lc.kind("booking").create("c2")  # early handles it, late fails (retry in 10 s)
    second = next(e for e in early.calls if e != event_id)
    early.down = True
    clock.advance(timedelta(seconds=10))
    assert relay.relay_once() == DeliveryReport(failed=1)  # late fails again: retry in 30 s
    assert (early.calls[second], late.calls[second]) == (1, 2)
    clock.advance(timedelta(seconds=29))
    assert relay.relay_once() == DeliveryReport(), "late's second backoff (30 s) has not ended"
    late.down = False
    clock.advance(timedelta(seconds=1))
    assert relay.relay_once() == DeliveryReport(delivered=1)
    assert (early.calls[second], late.calls[second]) == (1, 3)


def test_every_receiver_succeeding_writes_nothing_per_receiver(tmp_path: Path) -> None:
    """With three receivers that all succeed, a cancel's statements are those with one receiver: its
    transaction, then one UPDATE per event marking it delivered; bl_deliveries stays empty."""
    store = SQLAlchemyStore.from_url(f"sqlite:///{tmp_path / 'quiet.db'}")
    store.create_all()
    lc = BroadcastLifecycle(store, clock=ManualClock())
    for name in ("a", "b", "c"):
        lc.bus.connect(EventRecorder(), name=name)
    booking = lc.kind("booking").create("c1").id
    lc.kind("booking").start_broadcast(booking, ["t1"])
    connection = store._db.threads.get() if store._db.threads is not None else None
    assert isinstance(connection, sqlite3.Connection)
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    try:
        lc.kind("booking").cancel(booking)
    finally:
        connection.set_trace_callback(None)
    after_commit = statements[statements.index("COMMIT") + 1:]
    assert [" ".join(s.split()[:2]) for s in after_commit] == [
        "BEGIN IMMEDIATE", "UPDATE bl_outbox", "UPDATE bl_outbox", "COMMIT"]  # two events: changed, cancelled
    assert "bl_deliveries" not in " ".join(statements)
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deliveries_table)).scalar_one() == 0
    assert lc.store.pending_events(10) == []


# -- names and order -----------------------------------------------------------------------------------


def test_receivers_run_in_connection_order_across_filters(lifecycle: BroadcastLifecycle) -> None:
    """Receivers filtered by event name or kind and catch-all ones run in the order they were connected."""
    calls: list[str] = []

    def make(label: str) -> Callable[[BroadcastEvent], None]:
        return lambda event: calls.append(label) if event.name == "BOOKING_CANCELLED" else None

    expected = []
    for i in range(24):
        label = f"r{i}"
        event_name = "BOOKING_CANCELLED" if i % 3 == 0 else None
        kind = "booking" if i % 3 == 1 else None
        lifecycle.bus.connect(make(label), name=label, event_name=event_name, kind=kind)
        expected.append(label)
    lifecycle.bus.connect(make("order-only"), name="order-only", kind="order")
    booking = lifecycle.kind("booking").create("c1").id
    lifecycle.kind("booking").cancel(booking)
    assert calls == expected
    assert lifecycle.bus.names()[-25:] == (*expected, "order-only")


def test_default_names_are_module_qualified(lifecycle: BroadcastLifecycle) -> None:
    """A receiver's default name is its module and qualified name; wrappers are named after what they wrap."""

    def publish(event: BroadcastEvent) -> None:
        """A host receiver."""

    local = f"{__name__}.test_default_names_are_module_qualified.<locals>.publish"
    recorder = EventRecorder()
    assert receiver_name(publish) == local
    assert receiver_name(Deduplicator(publish)) == local
    assert receiver_name(functools.partial(publish)) == local
    assert receiver_name(recorder) == "broadcast_lifecycle.testing.EventRecorder"
    assert receiver_name(recorder.clear) == "broadcast_lifecycle.testing.EventRecorder.clear"


def test_two_receivers_with_one_name_are_refused() -> None:
    """Connecting a second receiver under a taken name raises InvalidArgument asking for name=;
    disconnecting frees the name."""
    bus = SignalBus()
    first, second = EventRecorder(), EventRecorder()
    disconnect = bus.connect(first)
    taken = r"'broadcast_lifecycle.testing.EventRecorder' is already connected.*name="
    with pytest.raises(InvalidArgument, match=taken):
        bus.connect(second)
    bus.connect(second, name="second recorder")
    disconnect()
    bus.connect(Deduplicator(first))
    assert bus.names() == ("second recorder", "broadcast_lifecycle.testing.EventRecorder")


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_unusable_names_are_refused(name: str) -> None:
    """An empty name or one longer than 200 characters is an InvalidArgument naming the argument."""
    with pytest.raises(InvalidArgument, match="name must be a non-empty string of at most 200 characters"):
        SignalBus().connect(EventRecorder(), name=name)


def test_a_receiver_must_be_callable() -> None:
    """Connecting something that is not callable is an InvalidArgument."""
    with pytest.raises(InvalidArgument, match="receiver must be callable"):
        SignalBus().connect("myapp.sockets:publish", name="publish")  # type: ignore[arg-type]


def test_show_names_each_receiver_with_its_state_and_error(tmp_path: Path, clock: ManualClock,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`show --json` lists, for an event a receiver failed on, every named receiver's state, attempts and error;
    the text names them too."""
    url = f"sqlite:///{tmp_path / 'show.db'}"
    store = SQLAlchemyStore.from_url(url)
    store.create_all()
    lc = BroadcastLifecycle(store, clock=clock, retry=POLICY)
    lc.bus.connect(Socket(), name="analytics")
    lc.bus.connect(Socket(down=True), name="sockets")
    booking = lc.kind("booking").create("c1").id
    for _ in range(POLICY.max_attempts - 1):
        clock.advance(MINUTE)
        lc.relay(grace=timedelta(0)).relay_once()
    package_logger = logging.getLogger("broadcast_lifecycle")
    level = package_logger.level
    try:
        assert main(["show", "booking", str(booking), "--json", "--database-url", url]) == 0
        as_json = capsys.readouterr().out
        assert main(["show", "booking", str(booking), "--database-url", url]) == 0
        line = capsys.readouterr().out.splitlines()[-1]
    finally:
        package_logger.setLevel(level)
    (event,) = json.loads(as_json)["events"]
    delivery = event["delivery"]
    assert delivery["state"] == "dead"
    assert [(r["receiver"], r["state"], r["attempts"], r["last_error"]) for r in delivery["receivers"]] == [
        ("analytics", "delivered", 0, None),
        ("sockets", "dead", 3, f"ConnectionError: socket server unreachable for {event['name']}")]
    assert line.endswith(f"dead after 3 attempts at {clock.now.isoformat()}: analytics delivered; sockets dead "
                         f"after 3 attempts: ConnectionError: socket server unreachable for {event['name']}")
