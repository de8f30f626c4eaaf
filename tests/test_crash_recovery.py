"""Crashes and restarts in real processes: nothing committed is lost, nothing rolled back leaks, repeats are dropped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from crash_worker import connect_recorder, read_records
from sqlalchemy import select

from broadcast_lifecycle import BroadcastLifecycle, BroadcastStatus, Recipient
from broadcast_lifecycle.stores.schema import history_table, outbox_table
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

WORKER = Path(__file__).resolve().parent / "crash_worker.py"
KILL_AT = 36
"""The event the worker dies on: the state-changed event of broadcast #4's fill (its fully-filled event is
never dispatched by the worker). Each start_broadcast announces two events: the state change and the offer."""


def _store(url: str) -> SQLAlchemyStore:
    store = SQLAlchemyStore.from_url(url)
    store.create_all()
    return store


def _run_worker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def test_killed_mid_dispatch_then_relayed_exactly_once(database_url: str, tmp_path: Path) -> None:
    """A process SIGKILLed after a commit, mid-dispatch: a relay delivers the rest; the file holds each event once."""
    store = _store(database_url)
    record_file, claim_dir = tmp_path / "events.txt", tmp_path / "claims"
    claim_dir.mkdir()

    worker = _run_worker("transitions", database_url, str(record_file), str(claim_dir), str(KILL_AT))
    assert worker.returncode == -signal.SIGKILL, worker.stderr
    assert "survived" not in worker.stdout
    rolled_back = json.loads(worker.stdout.splitlines()[0])["rolled_back"]
    before = read_records(record_file)
    assert len(before) == KILL_AT, "the named recorder runs before the killer, so the fatal event was recorded"
    stranded = {entry.event.event_id for entry in store.pending_events(1000)}
    assert before[-1].event_id in stranded
    assert len(stranded) == 2, "both events of the interrupted transition are still pending"

    relay_side = BroadcastLifecycle(SQLAlchemyStore.from_url(database_url))
    dedup = connect_recorder(relay_side, record_file, claim_dir)
    report = relay_side.relay(grace=timedelta(0)).relay_once()
    assert (report.delivered, report.failed, report.dead) == (2, 0, 0)
    assert dedup.dropped == 1, "the event recorded before the crash was delivered again and dropped"

    records = read_records(record_file)
    assert [n for n in Counter(r.event_id for r in records).values() if n != 1] == []
    with store.engine.connect() as conn:
        outbox_ids = set(conn.execute(select(outbox_table.c.event_id)).scalars())
        history = {(row[0], row[1]) for row in conn.execute(select(history_table.c.entity_id,
                                                                   history_table.c.version))}
    assert {r.event_id for r in records} == outbox_ids, "every committed event reached the file, nothing else did"
    assert store.pending_events(1000) == [] and store.dead_letters(1000) == []
    changed = {(r.entity_id, r.version) for r in records if r.name == "BROADCAST_STATE_CHANGED"}
    assert changed == history, "each committed transition was announced"

    assert [r for r in records if r.entity_id == rolled_back and r.status == "cancelled"] == []
    checker = BroadcastLifecycle(store)
    entity_id = int(rolled_back)
    assert checker.kind("booking").get(entity_id).status is BroadcastStatus.BROADCASTING
    assert [h.trigger for h in checker.kind("booking").history(entity_id)] == ["create", "start_broadcast"]


def test_offer_of_a_process_killed_after_notify_more_is_relayed_to_the_new_transporters(database_url: str) -> None:
    """SIGKILLed after notify_more committed, mid-dispatch: the relay delivers the offer to exactly the transporters
    it added (not to one already notified), once."""
    store = _store(database_url)
    worker = _run_worker("offers", database_url)
    assert worker.returncode == -signal.SIGKILL, worker.stderr
    assert "survived" not in worker.stdout
    entity_id = int(json.loads(worker.stdout.splitlines()[0]))

    relay_side = BroadcastLifecycle(SQLAlchemyStore.from_url(database_url))
    recorder = EventRecorder()
    relay_side.bus.connect(recorder)
    report = relay_side.relay(grace=timedelta(0)).relay_once()
    assert (report.delivered, report.failed, report.dead) == (1, 0, 0)
    (offer,) = recorder.events
    assert (offer.name, offer.entity_id, offer.trigger, offer.version) == ("BOOKING_OFFERED", entity_id,
                                                                           "notify_more", 3)
    assert offer.recipients == (Recipient("transporter", "t3"), Recipient("transporter", "t4"))
    assert [a.payload["event"] for a in offer.addressed()] == ["BOOKING_OFFERED"] * 2
    assert store.pending_events(100) == []
    assert [r.transporter_id for r in relay_side.kind("booking").recipients(entity_id)] == ["t1", "t2", "t3", "t4"]


def test_deadlines_survive_a_restart_and_a_fresh_sweeper_expires_them(database_url: str) -> None:
    """Broadcasts activated by a process that then died are expired by `broadcast-lifecycle sweep --once` later."""
    store = _store(database_url)
    worker = _run_worker("activate", database_url, "5")
    assert worker.returncode == -signal.SIGKILL, worker.stderr
    ids = [int(i) for i in json.loads(worker.stdout)]
    started = datetime.now(timezone.utc)

    sweep = subprocess.run([sys.executable, "-m", "broadcast_lifecycle", "sweep", "--once",
                            "--database-url", database_url], capture_output=True, text=True, timeout=60, check=False)
    assert sweep.returncode == 0, sweep.stderr
    assert "sweep: expired 5" in sweep.stderr

    lc = BroadcastLifecycle(store)
    for entity_id in ids:
        snap = lc.kind("booking").get(entity_id)
        assert (snap.status, snap.version) == (BroadcastStatus.EXPIRED, 4)
        assert snap.state_changed_at >= started - timedelta(seconds=1)
        last = lc.kind("booking").history(entity_id)[-1]
        assert (last.from_status, last.to_status, last.trigger, last.actor) == (
            BroadcastStatus.ACTIVE, BroadcastStatus.EXPIRED, "expire", "system")
    pending = [e.event for e in store.pending_events(1000) if e.event.status is BroadcastStatus.EXPIRED]
    assert Counter(e.entity_id for e in pending) == dict.fromkeys(ids, 2)
    for event in pending:
        if event.name == "BOOKING_EXPIRED":
            assert set(event.recipients) == {Recipient("customer", f"c{ids.index(int(event.entity_id))}"),
                                             Recipient("transporter", "t1"), Recipient("transporter", "t2")}
        else:
            assert event.name == "BROADCAST_STATE_CHANGED" and len(event.recipients) == 1
