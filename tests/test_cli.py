"""The command line, run as a real process (sweep, relay, status, prune; clean stop on signals; clear errors),
and the in-process runners (threads, asyncio)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import ManualClock
from crash_worker import RECORD_ENV, URL_ENV, read_records

from broadcast_lifecycle import BroadcastEvent, BroadcastLifecycle, InvalidArgument
from broadcast_lifecycle.bus import Receiver
from broadcast_lifecycle.cli import ENV_DATABASE_URL, main
from broadcast_lifecycle.runners import (
    BackgroundRunner,
    run_periodically,
    start_relay_thread,
    start_sweeper_thread,
    sweeper_task,
)
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

TESTS = Path(__file__).resolve().parent
SCRIPT = Path(sys.executable).parent / "broadcast-lifecycle"
PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)


def _cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``broadcast-lifecycle ARGS`` from the tests directory (so ``crash_worker`` is importable)."""
    assert SCRIPT.exists(), f"the console script is not installed at {SCRIPT} (pip install -e .)"
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=TESTS, env={**os.environ, **(env or {})}, timeout=60, check=False)


def _overdue_lifecycle(url: str) -> BroadcastLifecycle:
    """Three broadcasts overdue since 2020 and one due in 2040; no receivers, so 20 events are pending (each
    broadcast's three state changes and its two offers)."""
    store = SQLAlchemyStore.from_url(url)
    store.create_all()
    lc = BroadcastLifecycle(store, clock=ManualClock(PAST))
    for n, ttl in enumerate([timedelta(minutes=1)] * 3 + [timedelta(days=20 * 365)]):
        entity_id = lc.kind("booking").create(f"c{n}").id
        lc.kind("booking").start_broadcast(entity_id, ["t1"])
        lc.kind("booking").activate(entity_id, ttl=ttl)
    return lc


def test_sweep_relay_and_status_once(database_url: str, tmp_path: Path) -> None:
    """`status`, `sweep --once` (twice) and `relay --once --receiver` do their pass, log one line and exit 0."""
    _overdue_lifecycle(database_url)
    record = tmp_path / "events.txt"
    url = ("--database-url", database_url)

    status = _cli("status", env={ENV_DATABASE_URL: database_url})
    assert status.returncode == 0, status.stderr
    assert [line.split()[:3] for line in status.stdout.splitlines()] == [
        ["outbox", "count", "oldest"], ["pending", "20", "2020-01-01T00:00:00+00:00"], ["retrying", "0", "-"],
        ["dead", "0", "-"]]

    first, second = _cli("sweep", "--once", *url), _cli("sweep", "--once", "--batch-size", "1", *url)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert "sweep: expired 3" in first.stderr and "sweep: expired 0" in second.stderr
    assert "stay in the outbox" in first.stderr, "a sweeper without receivers says where the events go"

    relay = _cli("relay", "--once", "--grace", "0", "--receiver", "crash_worker:record_to_env_file", *url,
                 env={RECORD_ENV: str(record)})
    assert relay.returncode == 0, relay.stderr
    assert [line.split(" INFO ", 1)[1] for line in relay.stderr.splitlines()] == [
        "relay: delivered 26, failed 0, dead 0"]
    records = read_records(record)
    assert len({r.event_id for r in records}) == len(records) == 26
    assert sorted(r.name for r in records if r.status == "expired") == ["BOOKING_EXPIRED"] * 3 + [
        "BROADCAST_STATE_CHANGED"] * 3

    assert [line.split()[1] for line in _cli("status", *url).stdout.splitlines()[1:]] == ["0", "0", "0"]


def test_relay_with_the_hosts_lifecycle(tmp_path: Path) -> None:
    """`--lifecycle module:factory` uses the host's lifecycle and the receivers it connected."""
    url = f"sqlite:///{tmp_path / 'host.db'}"
    _overdue_lifecycle(url)
    record = tmp_path / "events.txt"
    relay = _cli("relay", "--once", "--grace", "0", "--lifecycle", "crash_worker:host_lifecycle",
                 env={RECORD_ENV: str(record), URL_ENV: url})
    assert relay.returncode == 0, relay.stderr
    assert "relay: delivered 20, failed 0, dead 0" in relay.stderr
    assert len(read_records(record)) == 20


def test_prune_deletes_old_delivered_events_and_keys(database_url: str) -> None:
    """`prune --older-than 7d` deletes what was delivered in 2020 and its keys, keeps pending events and
    the history; `--history` then deletes the histories of the broadcasts that ended."""
    lc = _overdue_lifecycle(database_url)  # 20 pending events: no receivers
    lc.bus.connect(EventRecorder())
    for n in range(2):
        booking = lc.kind("booking").create(f"k{n}", idempotency_key=f"create-{n}").id
        lc.kind("booking").cancel(booking, actor=f"k{n}", idempotency_key=f"cancel-{n}")  # 3 events, delivered
    url = ("--database-url", database_url)

    pruned = _cli("prune", "--older-than", "7d", *url)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("prune: before ") and pruned.stdout.endswith(
        ": deleted 6 delivered events, 4 idempotency records\n")
    status = json.loads(_cli("status", "--json", *url).stdout)
    assert (status["pending"]["count"], status["retrying"]["count"], status["dead"]["count"]) == (20, 0, 0)
    assert len(lc.kind("booking").history(booking)) == 2

    history = _cli("prune", "--older-than", "2w", "--history", "--batch-size", "1", *url)
    assert history.returncode == 0, history.stderr
    assert history.stdout.endswith(": deleted 0 delivered events, 0 idempotency records, "
                                   "the history of 2 finished broadcasts\n")
    assert lc.kind("booking").history(booking) == ()
    assert lc.store.recall("create-0") is None and len(lc.store.pending_events(100)) == 20


@pytest.mark.usefixtures("quiet_logging")
@pytest.mark.parametrize(("duration", "message"), [
    ("7x", "expected a duration such as 7d, 12h or 30m (units s, m, h, d, w), got '7x'"),
    ("7", "expected a duration such as 7d"),
    ("d", "expected a duration such as 7d"),
    ("1.5d", "expected a duration such as 7d"),
    ("-1d", "expected a duration such as 7d"),
    ("0h", "must be longer than zero, got '0h'"),
])
def test_prune_refuses_a_bad_duration(duration: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """An --older-than that is not a positive number of s, m, h, d or w exits 2 saying what is expected."""
    with pytest.raises(SystemExit) as exc_info:
        main(["prune", f"--older-than={duration}", "--database-url", "sqlite://"])
    assert exc_info.value.code == 2
    assert f"argument --older-than: {message}" in capsys.readouterr().err


@pytest.mark.usefixtures("quiet_logging")
def test_prune_needs_a_cutoff_and_a_usable_batch_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --older-than the parser refuses (exit 2); a batch size above 10000 is a usage error (exit 2);
    durations may combine units (1d12h)."""
    with pytest.raises(SystemExit) as exc_info:
        main(["prune", "--database-url", "sqlite://"])
    assert exc_info.value.code == 2 and "--older-than" in capsys.readouterr().err
    url = f"sqlite:///{tmp_path / 'p.db'}"
    assert main(["prune", "--older-than", "1d12h", "--create-tables", "--database-url", url]) == 0
    assert "deleted 0 delivered events" in capsys.readouterr().out
    assert main(["prune", "--older-than", "7d", "--batch-size", "20000", "--database-url", url]) == 2
    assert "batch_size must be a whole number from 1 to 10000, got 20000" in capsys.readouterr().err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_long_running_sweep_stops_cleanly_on_signal(tmp_path: Path, signum: signal.Signals) -> None:
    """A looping sweeper signalled after its first pass finishes that pass, logs "stopped" and exits 0."""
    url = f"sqlite:///{tmp_path / 'loop.db'}"
    _overdue_lifecycle(url)
    proc = subprocess.Popen([str(SCRIPT), "sweep", "--interval", "0.05",
                             "--database-url", url], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(30, proc.kill)  # a hung process fails the test instead of hanging it
    watchdog.start()
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "sweep: expired" in line:
                break
        assert "sweep: expired 3" in seen[-1], seen
        proc.send_signal(signum)
        rest = proc.stderr.read()
        assert proc.wait() == 0, rest
    finally:
        watchdog.cancel()
        proc.kill()
    assert "sweep: stopped" in rest
    assert f"got {signum.name}" in rest
    assert "Traceback" not in rest


def test_missing_tables_fail_the_first_pass_with_a_hint(tmp_path: Path) -> None:
    """A database without the tables: exit 1 at once, naming the cause and --create-tables."""
    result = _cli("sweep", "--database-url", f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.returncode == 1
    assert "no such table" in result.stderr and "--create-tables" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_fails_with_exit_1(tmp_path: Path) -> None:
    """A PostgreSQL URL nobody answers on: exit 1 with the connection error, no traceback."""
    result = _cli("relay", "--once", "--receiver", "crash_worker:record_to_env_file", "--database-url",
                  f"postgresql+psycopg://nobody@/nowhere?host={tmp_path}&port=1")
    assert result.returncode == 1
    assert "relay: pass failed: StoreError" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def quiet_logging() -> Iterator[None]:
    """Restore the package logger's level after an in-process main()."""
    package = logging.getLogger("broadcast_lifecycle")
    level = package.level
    yield
    package.setLevel(level)


@pytest.mark.usefixtures("quiet_logging")
@pytest.mark.parametrize(("args", "message"), [
    (["sweep", "--once", "--database-url", "not a url"], "cannot use database URL 'not a url'"),
    (["sweep", "--once"], f"no database: pass --database-url URL or set ${ENV_DATABASE_URL}"),
    (["relay", "--once", "--database-url", "sqlite://"], "relay has nobody to deliver to: pass --receiver"),
    (["relay", "--database-url", "sqlite://", "--receiver", "no_such_module_xyz:publish"],
     "cannot import no_such_module_xyz"),
    (["relay", "--database-url", "sqlite://", "--receiver", "json"], "must look like module:attribute"),
    (["relay", "--database-url", "sqlite://", "--receiver", "json:nope"], "json has no attribute nope"),
    (["relay", "--database-url", "sqlite://", "--receiver", "json:__name__"], "is not callable"),
    (["status", "--lifecycle", "json:__name__"], "is not a BroadcastLifecycle"),
    (["status", "--lifecycle", "json:dumps"], "json:dumps: calling it failed: TypeError"),
    (["status", "--lifecycle", "crash_worker:host_lifecycle", "--create-tables"], "works with --database-url only"),
    (["relay", "--database-url", "sqlite://", "--receiver", "crash_worker:record_to_env_file", "--receiver",
      "crash_worker:record_to_env_file"], "'crash_worker.record_to_env_file' is already connected"),
])
def test_usage_errors_exit_2_with_a_clear_message(args: list[str], message: str, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Bad URLs, a missing database, a missing or unimportable receiver: one clear line on stderr, exit 2."""
    monkeypatch.delenv(ENV_DATABASE_URL, raising=False)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("broadcast-lifecycle: error: ") and message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("args", [["sweep", "--interval", "0"], ["relay", "--batch-size", "-1"],
                                  ["relay", "--grace", "-5"], ["frobnicate"], []])
def test_bad_options_are_rejected_by_the_parser(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Non-positive intervals and batch sizes, negative grace, unknown or missing commands: exit 2."""
    with pytest.raises(SystemExit) as exc_info:
        main(args)
    assert exc_info.value.code == 2
    assert "usage: broadcast-lifecycle" in capsys.readouterr().err


def test_python_dash_m_runs_the_same_command_line(tmp_path: Path) -> None:
    """`python -m broadcast_lifecycle` is the console script's main() too."""
    result = subprocess.run([sys.executable, "-m", "broadcast_lifecycle", "status", "--json", "--create-tables",
                             "--database-url", f"sqlite:///{tmp_path / 'x.db'}"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert {state: bucket["count"] for state, bucket in json.loads(result.stdout).items()} == {
        "pending": 0, "retrying": 0, "dead": 0}


# -- in-process runners ------------------------------------------------------------------------------

def _signal_on(name: str, count: int) -> tuple[EventRecorder, threading.Event, Receiver]:
    """A recorder and an event set once ``count`` events named ``name`` arrived."""
    recorder, done = EventRecorder(), threading.Event()

    def receive(event: BroadcastEvent) -> None:
        recorder(event)
        if recorder.names().count(name) >= count:
            done.set()

    return recorder, done, receive


def test_sweeper_thread_expires_and_stops_promptly(tmp_path: Path) -> None:
    """The sweeper thread expires at once; stop() returns long before the hour-long interval."""
    lc = BroadcastLifecycle(_overdue_lifecycle(f"sqlite:///{tmp_path / 'thread.db'}").store)  # the real clock
    _, done, receive = _signal_on("BOOKING_EXPIRED", 3)
    lc.bus.connect(receive)
    with start_sweeper_thread(lc, timedelta(hours=1), batch_size=2) as runner:
        assert done.wait(30)
        assert runner.running
    assert runner.stop(timeout=0) and not runner.running
    assert runner.passes == 1


def test_relay_thread_delivers_pending_events(tmp_path: Path) -> None:
    """The relay thread delivers what is pending; stop() ends it."""
    url = f"sqlite:///{tmp_path / 'relay.db'}"
    _overdue_lifecycle(url)
    lc = BroadcastLifecycle(SQLAlchemyStore.from_url(url))
    recorder, done, receive = _signal_on("BROADCAST_STATE_CHANGED", 12)
    lc.bus.connect(receive)
    runner = start_relay_thread(lc.relay(grace=timedelta(0)), 3600.0)
    assert done.wait(30)
    assert runner.stop(timeout=30)
    assert len(recorder.events) == 20  # the 12 state changes and the 8 offers


def test_a_failing_pass_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """A pass that raises is logged with its traceback; the next pass runs at the next interval."""
    calls: list[int] = []
    second = threading.Event()

    def job() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("database restarting")
        second.set()

    with caplog.at_level(logging.ERROR, logger="broadcast_lifecycle.runners"), \
            BackgroundRunner(job, 0.01, name="flaky").start() as runner:
        assert second.wait(30)
    assert runner.stop(timeout=30)
    assert "flaky: pass failed" in caplog.text and "database restarting" in caplog.text
    with pytest.raises(InvalidArgument):
        BackgroundRunner(job, timedelta(0))


def test_asyncio_sweeper_task_runs_until_stopped(tmp_path: Path) -> None:
    """sweeper_task expires in a worker thread, and setting its stop event ends it after the current pass."""
    lc = BroadcastLifecycle(_overdue_lifecycle(f"sqlite:///{tmp_path / 'async.db'}").store)
    recorder, done, receive = _signal_on("BOOKING_EXPIRED", 3)
    lc.bus.connect(receive)

    async def scenario() -> None:
        stop = asyncio.Event()
        task = sweeper_task(lc, timedelta(hours=1), stop=stop)
        assert await asyncio.to_thread(done.wait, 30)
        stop.set()
        await asyncio.wait_for(task, 30)
        failing: list[int] = []

        def job() -> None:
            failing.append(1)
            if len(failing) == 2:
                stop.set()
            raise RuntimeError("boom")

        stop.clear()
        await asyncio.wait_for(run_periodically(job, 0.01, stop), 30)
        assert failing == [1, 1]

    asyncio.run(scenario())
    assert len(recorder.events) == 6
