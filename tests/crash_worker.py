"""A process that dies on purpose, for tests/test_crash_recovery.py: ``python crash_worker.py MODE ...``;
and receivers for the CLI tests (``--receiver crash_worker:record_to_env_file``).

``transitions URL RECORD_FILE CLAIM_DIR KILL_AT``: runs transitions with a file-recording receiver
(de-duplicated across processes by a claim file per event id) and a receiver that SIGKILLs this
process at the KILL_AT-th event, after its commit and in the middle of its dispatch.

``offers URL``: opens a broadcast to t1 and t2, prints its id, then widens it to t2, t3 and t4 with
``notify_more`` and SIGKILLs itself while dispatching that offer, after its commit.

``activate URL COUNT``: activates COUNT broadcasts with a clock stuck at 2020-01-01 and a one-minute
ttl (so they are long overdue in real time), prints their ids and SIGKILLs itself.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy.orm import Session

from broadcast_lifecycle import BroadcastEvent, BroadcastLifecycle, KindConfig
from broadcast_lifecycle.bus import Deduplicator
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

EVENT_NAMES = ("BROADCAST_STATE_CHANGED", "BOOKING_OFFERED", "BOOKING_FULLY_FILLED", "BOOKING_CANCELLED",
               "BOOKING_COMPLETED", "BOOKING_EXPIRED")
PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)


class FileClaim:
    """A cross-process claim: one file per event id, created with O_EXCL (stands in for Redis SETNX)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def claim(self, event_id: str) -> bool:
        """True the first time any process claims ``event_id``."""
        try:
            os.close(os.open(self.directory / event_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    def release(self, event_id: str) -> None:
        """Undo a claim."""
        (self.directory / event_id).unlink(missing_ok=True)


@dataclass(frozen=True)
class Record:
    """One line of the record file."""

    event_id: str
    entity_id: str
    version: int
    status: str
    name: str


class FileRecorder:
    """A receiver that appends one line per event to a file (closed each time: a SIGKILL loses nothing)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, event: BroadcastEvent) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(f"{event.event_id} {event.entity_id} {event.version} {event.status.value} {event.name}\n")


def read_records(path: Path) -> list[Record]:
    """Every line recorded so far."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        event_id, entity_id, version, status, name = line.split()
        records.append(Record(event_id, entity_id, int(version), status, name))
    return records


def connect_recorder(lc: BroadcastLifecycle, record_file: Path, claim_dir: Path) -> Deduplicator:
    """Connect the de-duplicated file recorder to every booking event name (before any catch-all receiver)."""
    claim = FileClaim(claim_dir)
    dedup = Deduplicator(FileRecorder(record_file), claim=claim.claim, release=claim.release)
    for name in EVENT_NAMES:
        lc.bus.connect(dedup, name=f"recorder:{name}", event_name=name)
    return dedup


class Killer:
    """A catch-all receiver (connected last, so it runs after the recorder) that SIGKILLs this process at
    the n-th event."""

    def __init__(self, kill_at: int) -> None:
        self.kill_at = kill_at
        self.seen = 0

    def __call__(self, event: BroadcastEvent) -> None:
        self.seen += 1
        if self.seen == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def transitions(url: str, record_file: Path, claim_dir: Path, kill_at: int) -> int:
    """Roll back one host transaction, then run transitions until the killer strikes."""
    lc = BroadcastLifecycle(SQLAlchemyStore.from_url(url))
    connect_recorder(lc, record_file, claim_dir)
    lc.bus.connect(Killer(kill_at))

    rolled_back = lc.kind("booking").create("c-rollback").id
    lc.kind("booking").start_broadcast(rolled_back, ["t1", "t2"])
    store = lc.store
    assert isinstance(store, SQLAlchemyStore)
    with Session(store.engine) as session:
        lc.kind("booking").cancel(rolled_back, tx=session)
        session.rollback()
    print(json.dumps({"rolled_back": str(rolled_back)}), flush=True)

    for n in range(20):
        entity_id = lc.kind("booking").create(f"c{n}", slots=2).id
        lc.kind("booking").start_broadcast(entity_id, ["t1", "t2", "t3"])
        lc.kind("booking").activate(entity_id, ttl=timedelta(hours=1))
        lc.kind("booking").accept(entity_id, "t1")
        lc.kind("booking").accept(entity_id, "t2")
        if n % 3 == 0:
            lc.kind("booking").start_trip(entity_id)
            lc.kind("booking").complete(entity_id)
        elif n % 3 == 1:
            lc.kind("booking").cancel(entity_id)
        else:
            lc.kind("booking").release(entity_id, "t2")
    print("survived", flush=True)
    return 0


def activate(url: str, count: int) -> int:
    """Activate ``count`` broadcasts that were overdue long ago, print their ids, and die."""
    lc = BroadcastLifecycle(SQLAlchemyStore.from_url(url), clock=lambda: PAST)
    ids = []
    for n in range(count):
        entity_id = lc.kind("booking").create(f"c{n}").id
        lc.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
        lc.kind("booking").activate(entity_id, ttl=timedelta(minutes=1))
        ids.append(str(entity_id))
    print(json.dumps(ids), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    return 1


def offers(url: str) -> int:
    """Open a broadcast, then die after notify_more committed, mid-dispatch of its offer."""
    lc = BroadcastLifecycle(SQLAlchemyStore.from_url(url))
    lc.bus.connect(lambda event: None)  # a receiver, so the events before the crash are delivered
    entity_id = lc.kind("booking").create("c1").id
    lc.kind("booking").start_broadcast(entity_id, ["t1", "t2"])
    lc.kind("booking").activate(entity_id, ttl=timedelta(hours=1))
    print(json.dumps(str(entity_id)), flush=True)
    lc.bus.connect(Killer(1), event_name="BOOKING_OFFERED")
    lc.kind("booking").notify_more(entity_id, ["t2", "t3", "t4"])
    print("survived", flush=True)
    return 0


RECORD_ENV = "BL_TEST_RECORD_FILE"
"""Where :func:`record_to_env_file` writes (for ``broadcast-lifecycle --receiver crash_worker:...``)."""
URL_ENV = "BL_TEST_DATABASE_URL"
"""The database :func:`host_lifecycle` opens."""


def record_to_env_file(event: BroadcastEvent) -> None:
    """A receiver for the CLI tests: records the event in ``$BL_TEST_RECORD_FILE``."""
    FileRecorder(Path(os.environ[RECORD_ENV]))(event)


def host_lifecycle() -> BroadcastLifecycle:
    """A host's lifecycle factory for ``--lifecycle``: bookings only, a recorder already connected."""
    lc = BroadcastLifecycle(SQLAlchemyStore.from_url(os.environ[URL_ENV]), kinds=(KindConfig("booking"),))
    lc.bus.connect(record_to_env_file)
    return lc


def main(argv: list[str]) -> int:
    """Dispatch on the mode."""
    mode, url, *rest = argv
    if mode == "transitions":
        record_file, claim_dir, kill_at = rest
        return transitions(url, Path(record_file), Path(claim_dir), int(kill_at))
    if mode == "activate":
        return activate(url, int(rest[0]))
    if mode == "offers":
        return offers(url)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
