"""Threads racing for the last slots never overfill a broadcast and never lose an update."""

from __future__ import annotations

import sys
import threading
from datetime import timedelta

from conftest import ManualClock

from broadcast_lifecycle import (
    BroadcastLifecycle,
    BroadcastStatus,
    InMemoryStore,
    InvalidTransition,
    TransitionRefused,
)
from broadcast_lifecycle.stores import AfterCommit, Change, Committed
from broadcast_lifecycle.testing import EventRecorder

THREADS = 16
SLOTS = 5
ROUNDS = 200
TRANSPORTERS = [f"t{i}" for i in range(THREADS)]


class CountingStore(InMemoryStore):
    """The in-memory store, counting the writes that lost a compare-and-set race."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0
        self._count_lock = threading.Lock()

    def apply(self, change: Change, after_commit: AfterCommit, tx: object = None) -> Committed | None:
        committed = super().apply(change, after_commit, tx)
        if committed is None:
            with self._count_lock:
                self.lost += 1
        return committed


def race_once(lc: BroadcastLifecycle, entity_id: int) -> tuple[list[str], list[BaseException]]:
    """Let THREADS transporters accept one slot each at the same moment; return winners and errors."""
    barrier = threading.Barrier(THREADS)
    winners: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def accept(transporter: str) -> None:
        barrier.wait()
        try:
            lc.kind("booking").accept(entity_id, transporter)
        except BaseException as exc:  # every outcome is recorded and checked below
            with lock:
                errors.append(exc)
        else:
            with lock:
                winners.append(transporter)

    threads = [threading.Thread(target=accept, args=(t,)) for t in TRANSPORTERS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "a racing thread hung"
    return winners, errors


def test_sixteen_threads_race_for_five_slots() -> None:
    """Over many rounds exactly 5 of 16 racing accepts win, the rest are refused, and the record agrees."""
    # A command on the in-memory store releases the GIL nowhere, so threads would rarely switch between
    # a read and its write at the default 5 ms interval: switch often, so that the races are real.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        _race_rounds()
    finally:
        sys.setswitchinterval(interval)


def _race_rounds() -> None:
    clock = ManualClock()
    store = CountingStore()
    lc = BroadcastLifecycle(store, clock=clock)
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    for _ in range(ROUNDS):
        created = lc.kind("booking").create("c1", slots=SLOTS)
        entity_id = created.id
        assert isinstance(entity_id, int)
        lc.kind("booking").start_broadcast(entity_id, TRANSPORTERS)
        lc.kind("booking").activate(entity_id, ttl=timedelta(hours=1))
        recorder.clear()

        winners, errors = race_once(lc, entity_id)

        assert len(winners) == SLOTS
        assert len(errors) == THREADS - SLOTS
        assert all(isinstance(e, TransitionRefused) for e in errors), [repr(e) for e in errors]
        # a loser saw either the full broadcast (invalid from fully_filled) or the last slot gone
        for error in errors:
            assert isinstance(error, InvalidTransition) or "slots" in str(error), error
        snap = lc.kind("booking").get(entity_id)
        assert (snap.status, snap.slots_filled, snap.version) == (BroadcastStatus.FULLY_FILLED, SLOTS, 3 + SLOTS)
        history = lc.kind("booking").history(entity_id)
        accepts = [h for h in history if h.trigger == "accept"]
        assert len(accepts) == SLOTS
        assert sorted(h.actor or "" for h in accepts) == sorted(winners)
        assert [h.version for h in history] == list(range(1, 4 + SLOTS))
        holdings = {r.transporter_id: r.slots_held for r in lc.kind("booking").recipients(entity_id)}
        assert {t for t, held in holdings.items() if held} == set(winners)
        assert sum(holdings.values()) == SLOTS
        # racing threads dispatch after their own commits, so arrival order may differ from version
        # order (clients order by version); each version must arrive exactly once
        assert sorted(e.version for e in recorder.events if e.name == "BROADCAST_STATE_CHANGED") == list(
            range(4, 4 + SLOTS)
        )
        assert recorder.names().count("BOOKING_FULLY_FILLED") == 1
    # the threads really raced: some writes lost the compare-and-set and were re-decided
    assert store.lost > 0
