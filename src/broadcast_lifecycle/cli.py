"""``broadcast-lifecycle``: run the expiry sweeper or the outbox relay as a process, or show the outbox.

    broadcast-lifecycle sweep  --database-url URL [--interval 5] [--once] [--receiver mod:attr ...]
    broadcast-lifecycle relay  --database-url URL --receiver mod:attr [--grace 10] [--once]
    broadcast-lifecycle status --database-url URL

The database URL defaults to ``$BROADCAST_LIFECYCLE_DATABASE_URL``; ``--lifecycle mod:attr`` uses the
host's own ``BroadcastLifecycle`` (its models, kinds, retry policy and receivers) instead. Each pass
logs one line to stderr. SIGTERM or SIGINT stops the loop after the current pass (exit 0). The first
pass must succeed (exit 1 otherwise, so a supervisor sees a misconfiguration at once); a later
failing pass is logged and retried at the next interval. Usage errors exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from types import FrameType
from typing import Any, cast

from .bus import Receiver
from .service import BroadcastLifecycle

__all__ = ["ENV_DATABASE_URL", "main"]

ENV_DATABASE_URL = "BROADCAST_LIFECYCLE_DATABASE_URL"
"""The environment variable ``--database-url`` defaults to."""

PROG = "broadcast-lifecycle"

logger = logging.getLogger(__name__)


class UsageError(Exception):
    """A problem with the command line or the configuration it names (exit 2)."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    _configure_logging(args.log_level)
    try:
        lc = _lifecycle(args)
        for spec in args.receiver:
            lc.bus.connect(_receiver(spec))
        command: Callable[[BroadcastLifecycle, argparse.Namespace], int] = args.command
        return command(lc, args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2


# -- commands ------------------------------------------------------------------------------

def _sweep(lc: BroadcastLifecycle, args: argparse.Namespace) -> int:
    batch_size: int = args.batch_size or 1000
    if not lc.bus.has_receivers():
        logger.info("sweep: no receivers in this process; events of expired broadcasts stay in the outbox "
                    "for a relay")

    def one_pass() -> str:
        return f"sweep: expired {lc.expire_due(batch_size=batch_size)}"

    return _loop("sweep", one_pass, args.interval, args.once)


def _relay(lc: BroadcastLifecycle, args: argparse.Namespace) -> int:
    if not lc.bus.has_receivers():
        raise UsageError("relay has nobody to deliver to: pass --receiver module:attribute (a callable that "
                         "takes a BroadcastEvent, e.g. your socket layer's publisher); without one every event "
                         "would stay pending")
    relay = lc.relay(grace=timedelta(seconds=args.grace), lease=timedelta(seconds=args.lease),
                     batch_size=args.batch_size or 200)

    def one_pass() -> str:
        report = relay.relay_once()
        line = f"relay: delivered {report.delivered}, failed {report.failed}, dead {report.dead}"
        return f"{line}, unheard {report.unheard}" if report.unheard else line

    return _loop("relay", one_pass, args.interval, args.once)


def _status(lc: BroadcastLifecycle, args: argparse.Namespace) -> int:
    try:
        pending, dead, oldest = _outbox_counts(lc)
    except Exception as exc:
        print(f"{PROG}: error: status failed: {_describe(exc)}", file=sys.stderr)
        return 1
    print(f"pending: {pending}")
    print(f"dead: {dead}")
    print(f"oldest pending: {oldest.isoformat() if oldest else '-'}")
    return 0


def _outbox_counts(lc: BroadcastLifecycle) -> tuple[int, int, datetime | None]:
    """Pending and dead outbox entries, and when the oldest pending one was written."""
    from .stores.sql_outbox import SqlOutbox

    store = lc.store
    if isinstance(store, SqlOutbox):
        return store.outbox_counts()
    entries = store.pending_events(1_000_000_000)
    return (len(entries), len(store.dead_events(1_000_000_000)),
            min((e.created_at for e in entries), default=None))


def _loop(name: str, one_pass: Callable[[], str], interval: float, once: bool) -> int:
    """Run ``one_pass`` now and every ``interval`` seconds until SIGTERM/SIGINT (or once)."""
    stop = threading.Event()
    with _StopOnSignals(stop):
        first = True
        while True:
            try:
                line = one_pass()
            except Exception as exc:
                if first or once:
                    logger.error("%s: %s failed: %s", name, "pass" if once else "first pass", _describe(exc))
                    return 1
                logger.exception("%s: pass failed; trying again in %gs", name, interval)
            else:
                logger.info("%s", line)
            first = False
            if once or stop.wait(interval):
                break
    if stop.is_set():
        logger.info("%s: stopped", name)
    return 0


class _StopOnSignals:
    """Set ``stop`` on SIGTERM and SIGINT while inside the ``with`` (main thread only)."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if not self._stop.is_set():
            logger.info("got %s; stopping after the current pass", signal.Signals(signum).name)
        self._stop.set()

    def __enter__(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)

    def __exit__(self, *_: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


# -- configuration -------------------------------------------------------------------------

def _lifecycle(args: argparse.Namespace) -> BroadcastLifecycle:
    if args.lifecycle:
        if args.create_tables:
            raise UsageError("--create-tables works with --database-url only; with --lifecycle, create the "
                             "tables with the host's migrations")
        found = _import(args.lifecycle, "--lifecycle")
        lc = found
        if callable(found) and not isinstance(found, BroadcastLifecycle):
            try:
                lc = found()
            except Exception as exc:
                raise UsageError(f"--lifecycle {args.lifecycle}: calling it failed: {_describe(exc)}") from exc
        if not isinstance(lc, BroadcastLifecycle):
            raise UsageError(f"--lifecycle {args.lifecycle} is not a BroadcastLifecycle (nor a function "
                             f"returning one): got {type(lc).__name__}")
        return lc
    url: str | None = args.database_url or os.environ.get(ENV_DATABASE_URL)
    if not url:
        raise UsageError(f"no database: pass --database-url URL or set ${ENV_DATABASE_URL} "
                         "(e.g. sqlite:///broadcasts.db, postgresql+psycopg://user@host/db)")
    from .stores.sqlalchemy import SQLAlchemyStore

    try:
        store = SQLAlchemyStore.from_url(url)
    except Exception as exc:
        raise UsageError(f"cannot use database URL {_safe_url(url)!r}: {_describe(exc)}") from exc
    if args.create_tables:
        try:
            store.create_all()
        except Exception as exc:
            raise UsageError(f"cannot create the tables in {_safe_url(url)!r}: {_describe(exc)}") from exc
    return BroadcastLifecycle(store)


def _receiver(spec: str) -> Receiver:
    found = _import(spec, "--receiver")
    if not callable(found):
        raise UsageError(f"--receiver {spec} is not callable (got {type(found).__name__}); it must be a "
                         "function or object that takes a BroadcastEvent")
    return cast(Receiver, found)


def _import(spec: str, option: str) -> Any:
    """The object ``module:attribute`` (attribute may be dotted), importable from the current directory."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"{option} must look like module:attribute (e.g. myapp.sockets:publish), got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"{option} {spec}: cannot import {module_name}: {exc}") from exc
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise UsageError(f"{option} {spec}: {module_name} has no attribute {attribute}") from None
    return found


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    if "no such table" in text or "does not exist" in text:
        text += " (create the tables with --create-tables or migrate the database)"
    return text


def _configure_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("broadcast_lifecycle").setLevel(level)


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    source = common.add_mutually_exclusive_group()
    source.add_argument("--database-url", metavar="URL",
                        help=f"SQLAlchemy URL of the database (default: ${ENV_DATABASE_URL})")
    source.add_argument("--lifecycle", metavar="MODULE:ATTRIBUTE",
                        help="use the host's BroadcastLifecycle (or a function returning one) instead of a URL")
    common.add_argument("--create-tables", action="store_true",
                        help="create the library's tables and the standalone broadcasts table if missing")
    common.add_argument("--receiver", metavar="MODULE:ATTRIBUTE", action="append", default=[],
                        help="a host callable to connect to every event (repeatable)")
    common.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="log level (default INFO)")

    looping = argparse.ArgumentParser(add_help=False)
    looping.add_argument("--interval", type=_positive(float), default=5.0, metavar="SECONDS",
                         help="seconds between passes (default 5)")
    looping.add_argument("--once", action="store_true", help="run one pass and exit")
    looping.add_argument("--batch-size", type=_positive(int), metavar="N",
                         help="rows per transaction (default 1000 for sweep, 200 for relay)")

    parser = argparse.ArgumentParser(prog=PROG, description="Expiry sweeper and outbox relay for broadcast_lifecycle.")
    commands = parser.add_subparsers(title="commands", required=True, metavar="{sweep,relay,status}")
    sweep = commands.add_parser("sweep", parents=[common, looping], help="expire overdue broadcasts")
    sweep.set_defaults(command=_sweep)
    relay = commands.add_parser("relay", parents=[common, looping], help="deliver pending outbox events")
    relay.add_argument("--grace", type=_non_negative, default=10.0, metavar="SECONDS",
                       help="leave events younger than this to the after-commit dispatch (default 10)")
    relay.add_argument("--lease", type=_positive(float), default=120.0, metavar="SECONDS",
                       help="how long a claimed event is reserved for this relay (default 120)")
    relay.set_defaults(command=_relay)
    status = commands.add_parser("status", parents=[common], help="print pending and dead outbox counts")
    status.set_defaults(command=_status)
    return parser
