"""The operator commands `show`, `status` and `diagram`, `--json` on every command, the exit codes and the
progress line, each run as the installed `broadcast-lifecycle` console script against SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import ManualClock
from crash_worker import RECORD_ENV, read_records

from broadcast_lifecycle import (
    BroadcastEvent,
    BroadcastLifecycle,
    BroadcastStore,
    InMemoryStore,
    RetryPolicy,
    SQLAlchemyStore,
)
from broadcast_lifecycle._inspect import age, outbox_summary
from broadcast_lifecycle._progress import Progress
from broadcast_lifecycle.diagram import edges, mermaid

TESTS = Path(__file__).resolve().parent
SCRIPT = Path(sys.executable).parent / "broadcast-lifecycle"
PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)


def cli(*args: str, record: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (from the tests directory, so ``crash_worker`` imports); the
    ``crash_worker:record_to_env_file`` receiver writes to ``record``."""
    assert SCRIPT.exists(), f"the console script is not installed at {SCRIPT} (pip install -e .)"
    env = {**os.environ, RECORD_ENV: str(record or os.devnull)}
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=TESTS, env=env, timeout=60,
                          check=False)


def _failing(event: BroadcastEvent) -> None:
    raise RuntimeError(f"socket closed for {event.name}")


def _booking_with_every_delivery_state(url: str, clock: ManualClock) -> str:
    """A booking whose events are delivered (v1-v4), retrying (v5's fully-filled event: one failed attempt),
    dead (v5's state change: failed twice, out of attempts) and pending (v6, sent with nobody listening)."""
    store = SQLAlchemyStore.from_url(url)
    store.create_all()
    booking = _every_delivery_state(store, clock)
    store.close()
    return booking


def _every_delivery_state(store: BroadcastStore, clock: ManualClock) -> str:
    lc = BroadcastLifecycle(store, clock=clock, retry=RetryPolicy(max_attempts=2))
    bookings = lc.kind("booking")
    disconnect = lc.bus.connect(lambda event: None)
    booking = bookings.create("c-1", slots=2)
    bookings.start_broadcast(booking.id, ["t-1", "t-2", "t-3"])
    bookings.activate(booking.id, ttl=timedelta(minutes=5))
    bookings.accept(booking.id, "t-1")
    disconnect()
    disconnect = lc.bus.connect(_failing)
    bookings.accept(booking.id, "t-2")
    disconnect()
    lc.bus.connect(_failing, event_name="BROADCAST_STATE_CHANGED")
    clock.advance(timedelta(hours=1))
    report = lc.relay(grace=timedelta(0)).relay_once()
    assert (report.dead, report.unheard) == (1, 1)
    BroadcastLifecycle(store, clock=clock).kind("booking").start_trip(booking.id, actor="ops")
    return str(booking.id)


def test_show_prints_the_timeline_as_text_and_json(database_url: str) -> None:
    """`show KIND ID`: the broadcast, its history, its recipients, and each event with its delivery state."""
    booking = _booking_with_every_delivery_state(database_url, ManualClock())
    url = ("--database-url", database_url)

    text = cli("show", "booking", booking, *url)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert out.startswith(f"booking {booking}: in_progress, version 6, 2 of 2 slots filled, customer c-1\n")
    history = out.split("\nhistory\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split()[0] for line in history] == ["v", "1", "2", "3", "4", "5", "6"]
    assert history[-1].split()[2:7] == ["fully_filled", "->", "in_progress", "start_trip", "ops"]
    recipients = out.split("\nrecipients\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [(line.split()[0], line.split()[2]) for line in recipients[1:]] == [("t-1", "1"), ("t-2", "1"),
                                                                               ("t-3", "0")]
    events = out.split("\nevents\n", 1)[1].splitlines()
    assert len(events) == 1 + 9
    assert sum("delivered 20" in line for line in events) == 6
    assert events[2].split()[1:3] == ["BOOKING_OFFERED", "2"]
    assert events[2].split()[3:8] == ["transporter:t-1,", "transporter:t-2,", "transporter:t-3", "delivered",
                                      "2026-01-01T12:00:00+00:00"]
    assert events[4].split()[1:3] == ["BOOKING_OFFERED", "3"]  # activate's re-offer
    filled = events[7]
    assert filled.split()[1:3] == ["BOOKING_FULLY_FILLED", "5"]
    assert "retrying after 1 attempt, next " in filled and "socket closed for BOOKING_FULLY_FILLED" in filled
    assert "customer:c-1, transporter:t-1, transporter:t-2, transporter:t-3" in filled
    assert events[8].split()[1:3] == ["BROADCAST_STATE_CHANGED", "5"]
    assert "dead after 2 attempts at " in events[8] and events[8].endswith("socket closed for BROADCAST_STATE_CHANGED")
    assert events[9].split()[1:3] == ["BROADCAST_STATE_CHANGED", "6"] and events[9].endswith("pending")

    as_json = cli("show", "booking", booking, "--json", *url)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert (data["kind"], data["id"], data["broadcast"]["status"]) == ("booking", booking, "in_progress")
    assert [h["trigger"] for h in data["history"]] == ["create", "start_broadcast", "activate", "accept", "accept",
                                                       "start_trip"]
    assert {r["transporter_id"]: r["slots_held"] for r in data["recipients"]} == {"t-1": 1, "t-2": 1, "t-3": 0}
    states = [(e["name"], e["version"], e["delivery"]["state"]) for e in data["events"]]
    assert states == [("BROADCAST_STATE_CHANGED", 1, "delivered"), ("BOOKING_OFFERED", 2, "delivered"),
                      ("BROADCAST_STATE_CHANGED", 2, "delivered"), ("BOOKING_OFFERED", 3, "delivered")] + [
        ("BROADCAST_STATE_CHANGED", v, "delivered") for v in range(3, 5)] + [
        ("BOOKING_FULLY_FILLED", 5, "retrying"), ("BROADCAST_STATE_CHANGED", 5, "dead"),
        ("BROADCAST_STATE_CHANGED", 6, "pending")]
    retrying = next(e for e in data["events"] if e["delivery"]["state"] == "retrying")["delivery"]
    assert retrying["attempts"] == 1 and retrying["next_attempt_at"] and retrying["delivered_at"] is None


def test_show_exit_codes(database_url: str, tmp_path: Path) -> None:
    """`show`: 3 for an unknown id, 2 for an id of the wrong type or an unknown kind, 1 without the tables."""
    booking = _booking_with_every_delivery_state(database_url, ManualClock())
    url = ("--database-url", database_url)
    missing = cli("show", "booking", str(int(booking) + 100), *url)
    assert (missing.returncode, missing.stdout) == (3, "")
    assert missing.stderr == f"broadcast-lifecycle: no booking with id {int(booking) + 100}\n"
    wrong_type = cli("show", "booking", "abc", *url)
    assert wrong_type.returncode == 2 and "ID must be a key of booking's table (int), got 'abc'" in wrong_type.stderr
    unknown_kind = cli("show", "parcel", booking, *url)
    assert unknown_kind.returncode == 2 and "unknown kind 'parcel'; known kinds: booking, order" in unknown_kind.stderr
    no_tables = cli("show", "booking", "1", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}")
    assert no_tables.returncode == 1 and "show failed" in no_tables.stderr and "--create-tables" in no_tables.stderr
    assert "Traceback" not in missing.stderr + wrong_type.stderr + unknown_kind.stderr + no_tables.stderr


def test_status_counts_pending_retrying_and_dead_with_the_oldest_age(database_url: str) -> None:
    """`status` counts each undelivered state with its oldest entry and age; `--json` gives the same figures."""
    clock = ManualClock(PAST)
    _booking_with_every_delivery_state(database_url, clock)
    url = ("--database-url", database_url)

    text = cli("status", *url)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["outbox", "count", "oldest"]
    assert lines[1].split()[:3] == ["pending", "1", "2020-01-01T01:00:00+00:00"]
    assert lines[2].split()[:3] == ["retrying", "1", "2020-01-01T00:00:00+00:00"]
    assert lines[3].split()[:3] == ["dead", "1", "2020-01-01T00:00:00+00:00"]
    assert lines[1].endswith(" ago)") and "d " in lines[1], "the age is given in days and hours"

    data = json.loads(cli("status", "--json", *url).stdout)
    assert {state: bucket["count"] for state, bucket in data.items()} == {"pending": 1, "retrying": 1, "dead": 1}
    assert data["pending"]["oldest"] == "2020-01-01T01:00:00+00:00"
    assert data["pending"]["oldest_age_seconds"] > 5 * 365 * 86400


def test_diagram_prints_the_mermaid_source_and_its_edges() -> None:
    """`diagram` prints the generated mermaid source (no database needed); `--json` adds the edges."""
    text = cli("diagram")
    assert (text.returncode, text.stdout) == (0, mermaid())
    data = json.loads(cli("diagram", "--json").stdout)
    assert data["mermaid"] == mermaid()
    assert [(e["trigger"], e["from"], e["to"], e["label"]) for e in data["edges"]] == edges()


def _backlog(url: str, count: int) -> None:
    """``count`` bookings overdue since 2020, with nobody listening (so their events stay pending)."""
    store = SQLAlchemyStore.from_url(url)
    store.create_all()
    bookings = BroadcastLifecycle(store, clock=ManualClock(PAST)).kind("booking")
    for n in range(count):
        booking = bookings.create(f"c{n}").id
        bookings.start_broadcast(booking, ["t1"])
        bookings.activate(booking, ttl=timedelta(minutes=1))
    store.close()


def test_sweep_and_relay_print_json_lines(database_url: str, tmp_path: Path) -> None:
    """`--json` on sweep and relay prints one JSON object per pass on stdout; the log stays on stderr."""
    _backlog(database_url, 4)
    url = ("--database-url", database_url)
    sweep = cli("sweep", "--once", "--json", *url)
    assert sweep.returncode == 0, sweep.stderr
    assert [json.loads(line) for line in sweep.stdout.splitlines()] == [{"command": "sweep", "expired": 4}]
    record = tmp_path / "events.txt"
    relay = cli("relay", "--once", "--json", "--grace", "0", "--receiver", "crash_worker:record_to_env_file", *url,
                "--log-level", "WARNING", record=record)
    assert relay.returncode == 0, relay.stderr
    assert relay.stderr == ""
    assert len(read_records(record)) == 28
    assert json.loads(relay.stdout) == {"command": "relay", "delivered": 4 * 5 + 4 * 2, "failed": 0, "dead": 0,
                                        "unheard": 0}


def _on_a_terminal(*args: str) -> tuple[int, str]:
    """Run the console script with stderr on a pseudo-terminal; returns its status and what the terminal got."""
    main, secondary = pty.openpty()
    try:
        proc = subprocess.Popen([str(SCRIPT), *args], cwd=TESTS, stdout=subprocess.DEVNULL, stderr=secondary,
                                env={**os.environ, RECORD_ENV: os.devnull})
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        return proc.wait(timeout=60), b"".join(chunks).decode()
    finally:
        os.close(main)


def test_progress_is_drawn_on_a_terminal_and_not_when_piped(database_url: str) -> None:
    """A sweep and a relay draw a progress line on a terminal, ending at the final count; piped, they draw none."""
    _backlog(database_url, 30)
    url = ("--database-url", database_url, "--batch-size", "7")
    status, screen = _on_a_terminal("sweep", "--once", *url)
    assert status == 0, screen
    assert "\rsweep: expired: 30\r\n" in screen or "\rsweep: expired: 30 " in screen, screen
    status, screen = _on_a_terminal("relay", "--once", "--grace", "0", "--receiver", "crash_worker:record_to_env_file",
                                    *url)
    assert status == 0, screen
    assert "relay: handled: 210 of 210 (100%)" in screen, screen  # per broadcast: 3 changes, 2 offers, 2 expiry

    _backlog(database_url, 5)
    piped = cli("sweep", "--once", *url)
    assert piped.returncode == 0 and "sweep: expired 5" in piped.stderr
    assert "\r" not in piped.stderr and "expired:" not in piped.stderr


def test_progress_line_counts_and_stays_silent_off_a_terminal() -> None:
    """Progress draws "label: done of total (pct)" when enabled, ends the line on close, and writes nothing
    to a stream that is not a terminal."""
    screen = io.StringIO()
    with Progress("prune: removed", total=200, stream=screen, enabled=True, interval=0) as progress:
        progress.advance(50)
        progress.advance(150)
    assert screen.getvalue().split("\r")[1:] == ["prune: removed: 50 of 200 (25%)",
                                                 "prune: removed: 200 of 200 (100%)",
                                                 "prune: removed: 200 of 200 (100%)\n"]
    piped = io.StringIO()
    with Progress("sweep", stream=piped) as quiet:
        quiet.advance(10)
    assert not quiet.enabled and piped.getvalue() == "" and quiet.done == 10


def test_a_store_without_the_inspection_capability_is_summarised_the_same(tmp_path: Path) -> None:
    """outbox_summary() on the in-memory store (read from pending and dead events) equals the SQL store's
    grouped query for the same history."""
    sql = SQLAlchemyStore.from_url(f"sqlite:///{tmp_path / 'same.db'}")
    sql.create_all()
    memory = InMemoryStore()
    for store in (sql, memory):
        _every_delivery_state(store, ManualClock(PAST))
    assert outbox_summary(memory) == outbox_summary(sql)
    assert [bucket.count for bucket in outbox_summary(memory).values()] == [1, 1, 1]
    sql.close()


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (59.9, "59s"), (61, "1m 1s"), (3600, "1h"),
                                               (90061, "1d 1h"), (-5, "0s")])
def test_ages_are_given_in_their_two_largest_units(seconds: float, text: str) -> None:
    """age() keeps the two largest non-zero units and never goes negative (a clock that went back)."""
    assert age(timedelta(seconds=seconds)) == text
