"""Concurrent writers on real databases: no lost update, no overfill, no "database is locked"."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from datetime import timedelta

import pytest
from race_workers import accept_worker

from broadcast_lifecycle import (
    BroadcastLifecycle,
    BroadcastStatus,
    KindConfig,
    OpenBroadcastExists,
    TransitionRefused,
)
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

ACCEPTORS = [f"t{i:02d}" for i in range(16)]
SLOTS = 5


def _lifecycle(url: str) -> BroadcastLifecycle:
    store = SQLAlchemyStore.from_url(url, pool_size=len(ACCEPTORS), max_overflow=4)
    store.create_all((KindConfig("booking"), KindConfig("order", one_open_per_customer=True)))
    return BroadcastLifecycle(store, kinds=(KindConfig("booking"), KindConfig("order", one_open_per_customer=True)))


def _open_broadcast(lc: BroadcastLifecycle) -> int:
    entity_id = lc.kind("booking").create("c1", slots=SLOTS).id
    lc.kind("booking").start_broadcast(entity_id, ACCEPTORS)
    lc.kind("booking").activate(entity_id, ttl=timedelta(minutes=5))
    assert isinstance(entity_id, int)
    return entity_id


def _assert_filled_exactly(lc: BroadcastLifecycle, entity_id: int) -> None:
    snap = lc.kind("booking").get(entity_id)
    assert (snap.status, snap.slots_filled) == (BroadcastStatus.FULLY_FILLED, SLOTS)
    assert sum(r.slots_held for r in lc.kind("booking").recipients(entity_id)) == SLOTS
    assert [h.trigger for h in lc.kind("booking").history(entity_id)].count("accept") == SLOTS


@pytest.mark.parametrize("rounds", [100])
def test_sixteen_threads_race_for_five_slots(database_url: str, rounds: int) -> None:
    """16 threads accept one slot each on 5 slots: exactly 5 win, 11 are refused, every round."""
    lc = _lifecycle(database_url)
    errors: list[BaseException] = []
    for _ in range(rounds):
        entity_id = _open_broadcast(lc)
        barrier = threading.Barrier(len(ACCEPTORS))
        outcomes: list[str] = []

        def accept(name: str, entity_id: int = entity_id, barrier: threading.Barrier = barrier,
                   outcomes: list[str] = outcomes) -> None:
            barrier.wait()
            try:
                lc.kind("booking").accept(entity_id, name)
                outcomes.append("won")
            except TransitionRefused:
                outcomes.append("refused")
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=accept, args=(name,)) for name in ACCEPTORS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], f"unexpected errors (e.g. 'database is locked'): {errors[:3]}"
        assert Counter(outcomes) == {"won": SLOTS, "refused": len(ACCEPTORS) - SLOTS}
        _assert_filled_exactly(lc, entity_id)


@pytest.mark.postgres
def test_four_processes_race_for_five_slots(postgres_server: object) -> None:
    """4 processes of 4 threads accept one slot each on 5 slots on PostgreSQL: exactly 5 win, 100 rounds."""
    from postgres_server import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    url = postgres_server.create_database("race_processes")
    lc = _lifecycle(url)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(ACCEPTORS))
    results: multiprocessing.Queue[tuple[str, str]] = ctx.Queue()
    groups = [ACCEPTORS[i::4] for i in range(4)]
    queues: list[multiprocessing.Queue[int | None]] = [ctx.Queue() for _ in groups]
    workers = [ctx.Process(target=accept_worker, args=(url, names, jobs, results, barrier))
               for names, jobs in zip(groups, queues, strict=True)]
    for worker in workers:
        worker.start()
    try:
        for _ in range(100):
            entity_id = _open_broadcast(lc)
            for jobs in queues:
                jobs.put(entity_id)
            outcomes = Counter(results.get(timeout=60)[1] for _ in ACCEPTORS)
            assert outcomes == {"won": SLOTS, "refused": len(ACCEPTORS) - SLOTS}, outcomes
            _assert_filled_exactly(lc, entity_id)
    finally:
        for jobs in queues:
            jobs.put(None)
        for worker in workers:
            worker.join(timeout=30)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]


def test_concurrent_creates_give_one_open_broadcast(database_url: str) -> None:
    """Eight concurrent creates for one customer under the one-open policy: one order, seven clear errors."""
    lc = _lifecycle(database_url)
    for customer in ("c1", "c2", "c3"):
        barrier = threading.Barrier(8)
        outcomes: list[str] = []

        def create(customer: str = customer, barrier: threading.Barrier = barrier,
                   outcomes: list[str] = outcomes) -> None:
            barrier.wait()
            try:
                lc.kind("order").create(customer)
                outcomes.append("created")
            except OpenBroadcastExists as exc:
                assert customer in str(exc)
                outcomes.append("refused")

        threads = [threading.Thread(target=create) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert Counter(outcomes) == {"created": 1, "refused": 7}
