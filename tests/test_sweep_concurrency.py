"""Expiry under concurrency: sweeper processes sharing 10,000 overdue broadcasts, and terminal commands racing."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from datetime import timedelta
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import pytest
from conftest import START, ManualClock
from sqlalchemy import text

from broadcast_lifecycle import BroadcastLifecycle, BroadcastStatus, Recipient, Topic, TransitionRefused
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

OVERDUE = 10_000
SWEEPERS = 3
WITH_RECIPIENTS = 50
"""The first broadcasts also have two notified transporters each (their expired events name them)."""


def _sweeper(url: str, barrier: Barrier, results: Queue[int | str]) -> None:
    """One sweeper process: connect, wait for the others, expire what it can."""
    try:
        lc = BroadcastLifecycle(SQLAlchemyStore.from_url(url))
        lc.store.pending_events(1)  # connect before the barrier
        barrier.wait()
        results.put(lc.expire_due(batch_size=250))
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def _seed(store: SQLAlchemyStore) -> None:
    """10,000 overdue active broadcasts, plus decoys the sweep must leave alone, in a few statements."""
    columns = "kind, status, customer_id, state_changed_at, created_at, version, slots_requested, slots_filled, " \
              "expires_at"
    with store.engine.begin() as conn:
        conn.execute(text(
            f"INSERT INTO bl_broadcasts ({columns}) SELECT 'booking', 'active', 'c' || g, now() - interval '2 hours', "
            "now() - interval '2 hours', 3, 2, 0, now() - interval '1 hour' + g * interval '1 millisecond' "
            "FROM generate_series(1, :n) g"), {"n": OVERDUE})
        conn.execute(text(
            f"INSERT INTO bl_broadcasts ({columns}) SELECT 'booking', "
            "CASE WHEN g % 2 = 0 THEN 'fully_filled' ELSE 'active' END, 'd' || g, now() - interval '2 hours', "
            "now() - interval '2 hours', 5, 2, CASE WHEN g % 2 = 0 THEN 2 ELSE 0 END, "
            "CASE WHEN g % 2 = 0 THEN now() - interval '1 hour' ELSE now() + interval '1 hour' END "
            "FROM generate_series(1, 200) g"))
        conn.execute(text(
            "INSERT INTO bl_recipients (kind, entity_id, transporter_id, notified_at, slots_held) "
            "SELECT 'booking', CAST(b.id AS TEXT), 't' || t, now() - interval '2 hours', 0 "
            "FROM bl_broadcasts b, generate_series(1, 2) t WHERE b.id <= :n"), {"n": WITH_RECIPIENTS})


@pytest.mark.postgres
def test_three_sweeper_processes_expire_each_broadcast_once(postgres_server: object) -> None:
    """3 sweeper processes over 10,000 overdue broadcasts: each expired once, one history row, two outbox rows."""
    from postgres_server import PostgresServer

    assert isinstance(postgres_server, PostgresServer)
    url = postgres_server.create_database("sweep_processes")
    store = SQLAlchemyStore.from_url(url)
    store.create_all()
    _seed(store)

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(SWEEPERS)
    results: Queue[int | str] = ctx.Queue()
    workers = [ctx.Process(target=_sweeper, args=(url, barrier, results)) for _ in range(SWEEPERS)]
    for worker in workers:
        worker.start()
    counts = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert [w.exitcode for w in workers] == [0] * SWEEPERS
    assert all(isinstance(c, int) for c in counts), counts
    assert sum(c for c in counts if isinstance(c, int)) == OVERDUE

    with store.engine.connect() as conn:
        def scalar(sql: str) -> object:
            return conn.execute(text(sql)).scalar_one()

        by_status = {row[0]: row[1] for row in conn.execute(text(
            "SELECT status, count(*) FROM bl_broadcasts GROUP BY status"))}
        assert by_status == {"expired": OVERDUE, "fully_filled": 100, "active": 100}
        assert scalar("SELECT count(*) FROM bl_broadcasts WHERE status = 'expired' AND version <> 4") == 0
        assert scalar("SELECT count(*) FROM bl_broadcasts WHERE status = 'expired' AND customer_id NOT LIKE 'c%'") == 0
        assert conn.execute(text(
            "SELECT count(*), count(DISTINCT entity_id), min(version), max(version) FROM bl_transition_history "
            "WHERE trigger = 'expire' AND from_status = 'active' AND to_status = 'expired' AND actor = 'system'"
        )).one() == (OVERDUE, OVERDUE, 4, 4)
        assert scalar("SELECT count(*) FROM bl_transition_history") == OVERDUE
        assert scalar("SELECT count(*) FROM bl_outbox") == 2 * OVERDUE
        assert scalar(
            "SELECT count(*) FROM (SELECT entity_id FROM bl_outbox GROUP BY entity_id HAVING count(*) = 2 "
            "AND count(*) FILTER (WHERE topic = 'expired' AND name = 'BOOKING_EXPIRED') = 1 "
            "AND count(*) FILTER (WHERE topic = 'state_changed') = 1) s") == OVERDUE
        assert scalar("SELECT count(DISTINCT event_id) FROM bl_outbox") == 2 * OVERDUE
        named = scalar("SELECT count(*) FROM bl_outbox WHERE topic = 'expired' "
                       "AND CAST(recipients AS TEXT) LIKE '%\"t1\"%' AND CAST(recipients AS TEXT) LIKE '%\"t2\"%'")
        assert named == WITH_RECIPIENTS


# -- terminal commands racing ---------------------------------------------------------------------

ROUNDS = 200
DEADLINE = START + timedelta(minutes=1)
AFTER_DEADLINE = START + timedelta(minutes=2)
TERMINAL = {"cancel", "expire", "expire_due"}


def test_accept_expire_and_cancel_race_one_terminal_wins(database_url: str) -> None:
    """accept, cancel, expire (and a sweep) race on one broadcast, 200 rounds: one terminal transition wins each."""
    store = SQLAlchemyStore.from_url(database_url, pool_size=8)
    store.create_all()
    lc = BroadcastLifecycle(store, clock=ManualClock(START))  # commands run before the deadline...
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    late = BroadcastLifecycle(store, clock=ManualClock(AFTER_DEADLINE), bus=lc.bus)
    errors: list[BaseException] = []

    commands: dict[str, Callable[[int], bool]] = {
        "accept": lambda entity_id: bool(lc.kind("booking").accept(entity_id, "t1")),
        "cancel": lambda entity_id: bool(lc.kind("booking").cancel(entity_id, reason="customer changed plans")),
        # ...the expiry and the sweep are told it is past the deadline
        "expire": lambda entity_id: bool(late.kind("booking").expire(entity_id)),
        "expire_due": lambda entity_id: lc.expire_due(AFTER_DEADLINE) == 1,
    }
    for round_no in range(ROUNDS):
        entity_id = lc.kind("booking").create(f"c{round_no}", slots=2).id
        assert isinstance(entity_id, int)
        lc.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
        lc.kind("booking").activate(entity_id, expires_at=DEADLINE)
        # the sweep is one quick statement and wins most races it is in: leave it out of every other round
        racers = list(commands) if round_no % 2 == 0 else [name for name in commands if name != "expire_due"]
        barrier = threading.Barrier(len(racers))
        outcomes: dict[str, str] = {}

        def run(name: str, entity_id: int = entity_id, barrier: threading.Barrier = barrier,
                outcomes: dict[str, str] = outcomes) -> None:
            barrier.wait()
            try:
                outcomes[name] = "won" if commands[name](entity_id) else "lost"
            except TransitionRefused:
                outcomes[name] = "refused"
            except BaseException as exc:
                errors.append(exc)

        # the thread reaching the barrier last usually runs first: rotate who that is
        order = racers[round_no % len(racers):] + racers[:round_no % len(racers)]
        threads = [threading.Thread(target=run, args=(name,)) for name in order]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], errors[:3]
        winners = [name for name in TERMINAL if outcomes.get(name) == "won"]
        assert len(winners) == 1, outcomes
        (winner,) = winners
        assert all(outcomes[name] in ("refused", "lost") for name in TERMINAL - {winner} if name in racers), outcomes

        final = lc.kind("booking").get(entity_id)
        history = [h.trigger for h in lc.kind("booking").history(entity_id)]
        expected = BroadcastStatus.CANCELLED if winner == "cancel" else BroadcastStatus.EXPIRED
        assert final.status is expected
        assert history[:3] == ["create", "start_broadcast", "activate"]
        assert history[3:] == (["accept"] if outcomes["accept"] == "won" else []) + [
            "cancel" if winner == "cancel" else "expire"]
        for recipient in (Recipient("customer", f"c{round_no}"), Recipient("transporter", "t1"),
                          Recipient("transporter", "t2")):
            terminal = [e for e in recorder.events if e.entity_id == entity_id and recipient in e.recipients
                        and e.topic in (Topic.CANCELLED, Topic.EXPIRED)]
            assert len(terminal) == 1, (recipient, terminal)
            assert terminal[0].status is expected
        customer_changes = [e for e in recorder.events if e.entity_id == entity_id and e.topic is Topic.STATE_CHANGED
                            and e.status is expected]
        assert len(customer_changes) == 1
        recorder.clear()
    assert store.pending_events(10) == [], "every event was delivered after its commit"


@pytest.mark.postgres
def test_accept_expire_and_cancel_race_across_processes(postgres_server: object) -> None:
    """The same race with each command in a process of its own on PostgreSQL, 200 rounds: one terminal
    transition wins each round, and the outbox holds exactly one terminal event for each recipient."""
    from postgres_server import PostgresServer
    from race_workers import terminal_worker

    assert isinstance(postgres_server, PostgresServer)
    url = postgres_server.create_database("terminal_race_processes")
    store = SQLAlchemyStore.from_url(url)
    store.create_all()
    lc = BroadcastLifecycle(store, clock=ManualClock(START))  # no receivers: every event stays in the outbox
    ctx = multiprocessing.get_context("spawn")
    names = ["accept", "cancel", "expire", "expire_due"]
    barrier = ctx.Barrier(len(names))
    results: multiprocessing.Queue[tuple[str, str]] = ctx.Queue()
    queues: list[multiprocessing.Queue[tuple[int, bool] | None]] = [ctx.Queue() for _ in names]
    workers = [ctx.Process(target=terminal_worker, args=(url, name, START, AFTER_DEADLINE, jobs, results, barrier))
               for name, jobs in zip(names, queues, strict=True)]
    for worker in workers:
        worker.start()
    winners: dict[int, str] = {}
    try:
        for round_no in range(ROUNDS):
            entity_id = lc.kind("booking").create(f"c{round_no}", slots=2).id
            assert isinstance(entity_id, int)
            lc.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
            lc.kind("booking").activate(entity_id, expires_at=DEADLINE)
            for name, jobs in zip(names, queues, strict=True):
                jobs.put((entity_id, name != "expire_due" or round_no % 2 == 0))  # the sweep: every other round
            outcomes = dict(results.get(timeout=60) for _ in names)
            assert not [o for o in outcomes.values() if o.startswith("error")], outcomes
            won = [name for name in TERMINAL if outcomes[name] == "won"]
            assert len(won) == 1, outcomes
            winners[entity_id] = won[0]
            final = lc.kind("booking").get(entity_id).status
            assert final is (BroadcastStatus.CANCELLED if won[0] == "cancel" else BroadcastStatus.EXPIRED)
    finally:
        for jobs in queues:
            jobs.put(None)
        for worker in workers:
            worker.join(timeout=30)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    terminal: dict[tuple[int, Recipient], int] = {}
    for entry in store.pending_events(100_000):
        event = entry.event
        if event.topic in (Topic.CANCELLED, Topic.EXPIRED):
            for recipient in event.recipients:
                key = (int(event.entity_id), recipient)
                terminal[key] = terminal.get(key, 0) + 1
    for round_no, entity_id in enumerate(winners):
        for recipient in (Recipient("customer", f"c{round_no}"), Recipient("transporter", "t1"),
                          Recipient("transporter", "t2")):
            assert terminal.get((entity_id, recipient)) == 1, (entity_id, recipient, winners[entity_id])
    assert len(set(winners.values())) > 1, "one command won every round: the race never raced"
