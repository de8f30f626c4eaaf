"""``broadcast-lifecycle``: the operator's command line.

    broadcast-lifecycle sweep  --database-url URL [--interval 5] [--once] [--receiver mod:attr ...]
    broadcast-lifecycle relay  --database-url URL --receiver mod:attr [--grace 10] [--once]
    broadcast-lifecycle status --database-url URL          pending, retrying and dead events
    broadcast-lifecycle show KIND ID --database-url URL    one broadcast's timeline
    broadcast-lifecycle prune --older-than 7d --database-url URL [--history]   delete what is done
    broadcast-lifecycle diagram                            the state diagram (mermaid)

The database URL defaults to ``$BROADCAST_LIFECYCLE_DATABASE_URL``; ``--lifecycle mod:attr`` uses the
host's own ``BroadcastLifecycle`` (its models, kinds, retry policy and receivers) instead. ``--json``
prints JSON on stdout instead of text (one object per pass for ``sweep`` and ``relay``). Each pass of
``sweep`` and ``relay`` logs one line to stderr and, on a terminal, shows its progress there (nothing
when stderr is piped). SIGTERM or SIGINT stops the loop after the current pass.

Exit status: 0 success; 1 the operation failed (the database, or the first pass of a loop: a
supervisor sees a misconfiguration at once; a later failing pass is logged and retried at the next
interval); 2 a usage error (bad options, an unusable URL or ``module:attr``); 3 ``show`` found no
such broadcast.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from types import FrameType
from typing import Any

from . import __version__
from ._cli_setup import ENV_DATABASE_URL, UsageError, describe, duration, entity_id, lifecycle_from, receiver
from ._inspect import Timeline, outbox_summary, summary_json, summary_text, timeline_json, timeline_text
from ._progress import Progress
from .clock import utc_now
from .errors import BroadcastNotFound, InvalidArgument
from .service import BroadcastLifecycle
from .stores.base import InspectsOutbox

__all__ = ["ENV_DATABASE_URL", "EXIT_FAILED", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
"""The command did what it was asked."""
EXIT_FAILED = 1
"""The operation failed (the database, or the first pass of a loop)."""
EXIT_USAGE = 2
"""Bad options or configuration (also argparse's own status for bad options)."""
EXIT_NOT_FOUND = 3
"""``show``: no broadcast of that kind and id."""

PROG = "broadcast-lifecycle"

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = _parser().parse_args(argv)
    command: Callable[[BroadcastLifecycle | None, argparse.Namespace], int] = args.command
    if command is _diagram:
        return _diagram(None, args)
    _configure_logging(args.log_level)
    try:
        lc = lifecycle_from(args)
        for spec in args.receiver:
            try:
                lc.bus.connect(receiver(spec))
            except InvalidArgument as exc:  # the name is taken (the same receiver twice, or by --lifecycle's)
                raise UsageError(f"--receiver {spec}: {exc}") from exc
        return command(lc, args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


# -- commands ------------------------------------------------------------------------------

def _sweep(lc: BroadcastLifecycle | None, args: argparse.Namespace) -> int:
    assert lc is not None
    batch_size: int = args.batch_size or 1000
    if not lc.bus.has_receivers():
        logger.info("sweep: no receivers in this process; events of expired broadcasts stay in the outbox "
                    "for a relay")

    def one_pass() -> dict[str, int]:
        with Progress("sweep: expired") as progress:
            return {"expired": lc.expire_due(batch_size=batch_size, on_batch=progress.advance)}

    return _loop("sweep", one_pass, args)


def _relay(lc: BroadcastLifecycle | None, args: argparse.Namespace) -> int:
    assert lc is not None
    if not lc.bus.has_receivers():
        raise UsageError("relay has nobody to deliver to: pass --receiver module:attribute (a callable that "
                         "takes a BroadcastEvent, e.g. your socket layer's publisher); without one every event "
                         "would stay pending")
    relay = lc.relay(grace=timedelta(seconds=args.grace), lease=timedelta(seconds=args.lease),
                     batch_size=args.batch_size or 200)

    def one_pass() -> dict[str, int]:
        with Progress("relay: handled") as progress:
            if progress.enabled:
                summary = outbox_summary(lc.store)
                progress.total = summary["pending"].count + summary["retrying"].count
            report = relay.relay_once(on_batch=progress.advance)
        return {"delivered": report.delivered, "failed": report.failed, "dead": report.dead,
                "unheard": report.unheard}

    return _loop("relay", one_pass, args)


def _status(lc: BroadcastLifecycle | None, args: argparse.Namespace) -> int:
    assert lc is not None
    try:
        summary = outbox_summary(lc.store)
    except Exception as exc:
        print(f"{PROG}: error: status failed: {describe(exc)}", file=sys.stderr)
        return EXIT_FAILED
    now = utc_now()
    _print(summary_json(summary, now) if args.json else summary_text(summary, now), args.json)
    return EXIT_OK


def _show(lc: BroadcastLifecycle | None, args: argparse.Namespace) -> int:
    assert lc is not None
    try:
        handle = lc.kind(args.kind)
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from exc
    key = entity_id(lc, args.kind, args.id)
    try:
        timeline = Timeline(
            snapshot=handle.get(key), history=handle.history(key), recipients=handle.recipients(key),
            events=tuple(lc.store.outbox_of(args.kind, key)) if isinstance(lc.store, InspectsOutbox) else None)
    except BroadcastNotFound as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except Exception as exc:
        print(f"{PROG}: error: show failed: {describe(exc)}", file=sys.stderr)
        return EXIT_FAILED
    _print(timeline_json(timeline) if args.json else timeline_text(timeline), args.json)
    return EXIT_OK


def _prune(lc: BroadcastLifecycle | None, args: argparse.Namespace) -> int:
    assert lc is not None
    try:
        report = lc.prune(args.older_than, history=args.history, batch_size=args.batch_size or 1000)
    except InvalidArgument as exc:
        raise UsageError(str(exc)) from exc
    except Exception as exc:
        print(f"{PROG}: error: prune failed: {describe(exc)}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        _print({"command": "prune", "before": report.before.isoformat(), "outbox": report.outbox,
                "idempotency": report.idempotency, "history": report.history}, True)
        return EXIT_OK
    line = (f"prune: before {report.before.isoformat()}: deleted {report.outbox} delivered events, "
            f"{report.idempotency} idempotency records")
    print(f"{line}, the history of {report.history} finished broadcasts" if args.history else line)
    return EXIT_OK


def _diagram(_lc: BroadcastLifecycle | None, args: argparse.Namespace) -> int:
    from .diagram import edges, mermaid

    if args.json:
        _print({"mermaid": mermaid(), "edges": [{"trigger": t, "from": f, "to": d, "label": label}
                                                for t, f, d, label in edges()]}, True)
    else:
        sys.stdout.write(mermaid())
    return EXIT_OK


def _print(output: str | dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(output, indent=2))
    else:
        sys.stdout.write(str(output))


def _loop(name: str, one_pass: Callable[[], dict[str, int]], args: argparse.Namespace) -> int:
    """Run ``one_pass`` now and every ``--interval`` seconds until SIGTERM/SIGINT (or ``--once``); log each
    pass's counts (and print them as a JSON line with ``--json``)."""
    interval: float = args.interval
    once: bool = args.once
    stop = threading.Event()
    with _StopOnSignals(stop):
        first = True
        while True:
            try:
                counts = one_pass()
            except Exception as exc:
                if first or once:
                    logger.error("%s: %s failed: %s", name, "pass" if once else "first pass", describe(exc))
                    return EXIT_FAILED
                logger.exception("%s: pass failed; trying again in %gs", name, interval)
            else:
                logger.info("%s", _pass_line(name, counts))
                if args.json:
                    print(json.dumps({"command": name, **counts}), flush=True)
            first = False
            if once or stop.wait(interval):
                break
    if stop.is_set():
        logger.info("%s: stopped", name)
    return EXIT_OK


def _pass_line(name: str, counts: dict[str, int]) -> str:
    """``sweep: expired 3`` / ``relay: delivered 18, failed 0, dead 0`` (``unheard`` only when some were)."""
    shown = [f"{key} {value}" for key, value in counts.items() if value or key != "unheard"]
    return f"{name}: {', '.join(shown)}"


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
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print JSON on stdout instead of text")

    common = argparse.ArgumentParser(add_help=False, parents=[output])
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

    parser = argparse.ArgumentParser(prog=PROG, description="Operate broadcast_lifecycle: expiry sweeper, outbox "
                                     "relay, outbox status, a broadcast's timeline, the state diagram, retention.",
                                     epilog="exit status: 0 ok, 1 the operation failed, 2 usage error, 3 no such "
                                     "broadcast (show)")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(title="commands", required=True,
                                     metavar="{sweep,relay,status,show,diagram,prune}")
    sweep = commands.add_parser("sweep", parents=[common, looping], help="expire overdue broadcasts")
    sweep.set_defaults(command=_sweep)
    relay = commands.add_parser("relay", parents=[common, looping], help="deliver pending outbox events")
    relay.add_argument("--grace", type=_non_negative, default=10.0, metavar="SECONDS",
                       help="leave events younger than this to the after-commit dispatch (default 10)")
    relay.add_argument("--lease", type=_positive(float), default=120.0, metavar="SECONDS",
                       help="how long a claimed event is reserved for this relay (default 120)")
    relay.set_defaults(command=_relay)
    status = commands.add_parser("status", parents=[common],
                                 help="count pending, retrying and dead outbox events, with the oldest's age")
    status.set_defaults(command=_status)
    show = commands.add_parser("show", parents=[common],
                               help="print a broadcast's timeline: history, recipients, events and their delivery")
    show.add_argument("kind", metavar="KIND", help="the broadcast's kind (e.g. booking)")
    show.add_argument("id", metavar="ID", help="the broadcast's id")
    show.set_defaults(command=_show)
    diagram = commands.add_parser("diagram", parents=[output],
                                  help="print the state diagram (mermaid stateDiagram-v2)")
    diagram.set_defaults(command=_diagram)
    prune = commands.add_parser("prune", parents=[common],
                                help="delete delivered events and old idempotency records (and, if asked, history)")
    prune.add_argument("--older-than", type=duration, required=True, metavar="DURATION",
                       help="delete what is older than this: 7d, 12h, 30m, 2w ...")
    prune.add_argument("--history", action="store_true",
                       help="also delete the history of broadcasts that ended (completed, cancelled, expired) "
                            "before then")
    prune.add_argument("--batch-size", type=_positive(int), metavar="N",
                       help="rows per transaction (default 1000, at most 10000)")
    prune.set_defaults(command=_prune)
    return parser
