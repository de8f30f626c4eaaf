"""Running the sweeper and the relay inside a host process: a daemon thread or an asyncio task.

Each runs its job at once and then every ``interval``; a pass that raises is logged and the loop
goes on (the database may come back). Stopping waits for the current pass, never interrupts it;
cancelling an asyncio task interrupts it, which is safe: the pass's transaction rolls back (an
async lifecycle's) or finishes in its thread (a sync one's). :func:`lifecycle_tasks` starts and
stops both tasks with an app (its lifespan). For a separate process, use the CLI
(``broadcast-lifecycle sweep`` / ``relay``) instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, TypeAlias

from .errors import InvalidArgument, show_value

if TYPE_CHECKING:
    from .async_service import AsyncBroadcastLifecycle, AsyncOutboxRelay
    from .outbox import OutboxRelay
    from .service import BroadcastLifecycle

__all__ = [
    "BackgroundRunner",
    "lifecycle_tasks",
    "relay_task",
    "run_periodically",
    "start_relay_thread",
    "start_sweeper_thread",
    "sweeper_task",
]

logger = logging.getLogger(__name__)

Interval: TypeAlias = "timedelta | float"
"""A period: a ``timedelta`` or a number of seconds."""


def _seconds(interval: Interval) -> float:
    seconds = interval.total_seconds() if isinstance(interval, timedelta) else float(interval)
    if not seconds > 0:
        raise InvalidArgument(f"interval must be positive, got {show_value(interval)}")
    return seconds


def _run_pass(name: str, job: Callable[[], object]) -> None:
    try:
        job()
    except Exception:
        logger.exception("%s: pass failed; trying again at the next interval", name)


class BackgroundRunner:
    """A daemon thread that calls ``job`` at once and then every ``interval`` until stopped."""

    def __init__(self, job: Callable[[], object], interval: Interval, *, name: str = "broadcast-lifecycle") -> None:
        self.job = job
        self.interval = _seconds(interval)
        self.name = name
        self.passes = 0
        """How many passes finished (failed ones included)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> BackgroundRunner:
        """Start the thread (once); returns the runner."""
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            _run_pass(self.name, self.job)
            self.passes += 1
            self._stop.wait(self.interval)

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the loop to stop after its current pass and wait for it; True once it has stopped."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        """True while the thread is alive."""
        return self._thread.is_alive()

    def __enter__(self) -> BackgroundRunner:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_sweeper_thread(lc: BroadcastLifecycle, interval: Interval, batch_size: int = 1000) -> BackgroundRunner:
    """Expire overdue broadcasts every ``interval`` in a daemon thread (``lc.expire_due``)."""
    if batch_size < 1:
        raise InvalidArgument(f"batch_size must be at least 1, got {batch_size}")
    return BackgroundRunner(lambda: lc.expire_due(batch_size=batch_size), interval,
                            name="broadcast-lifecycle-sweeper").start()


def start_relay_thread(relay: OutboxRelay, interval: Interval) -> BackgroundRunner:
    """Deliver due outbox events every ``interval`` in a daemon thread (``relay.relay_once``)."""
    return BackgroundRunner(relay.relay_once, interval, name="broadcast-lifecycle-relay").start()


async def run_periodically(job: Callable[[], object], interval: Interval, stop: asyncio.Event, *,
                           name: str = "broadcast-lifecycle") -> None:
    """Run the blocking ``job`` in a worker thread at once and then every ``interval`` until ``stop`` is set.

    Cancelling the task stops the loop too (a pass already running in its thread finishes there).
    """
    seconds = _seconds(interval)
    while not stop.is_set():
        await asyncio.to_thread(_run_pass, name, job)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


async def run_periodically_async(job: Callable[[], Awaitable[object]], interval: Interval, stop: asyncio.Event, *,
                                 name: str = "broadcast-lifecycle") -> None:
    """Await ``job()`` at once and then every ``interval`` until ``stop`` is set (or the task is cancelled)."""
    seconds = _seconds(interval)
    while not stop.is_set():
        try:
            await job()
        except Exception:
            logger.exception("%s: pass failed; trying again at the next interval", name)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)


def sweeper_task(lc: BroadcastLifecycle | AsyncBroadcastLifecycle, interval: Interval, *, batch_size: int = 1000,
                 stop: asyncio.Event | None = None) -> asyncio.Task[None]:
    """An asyncio task on the running loop expiring overdue broadcasts every ``interval``.

    Stop it by setting ``stop`` (it finishes its current pass) or by cancelling it. A sync
    lifecycle's passes run in a worker thread; an async one's on the loop.
    """
    from .async_service import AsyncBroadcastLifecycle

    if batch_size < 1:
        raise InvalidArgument(f"batch_size must be at least 1, got {batch_size}")
    name = "broadcast-lifecycle-sweeper"
    if isinstance(lc, AsyncBroadcastLifecycle):
        alc = lc
        return asyncio.create_task(run_periodically_async(lambda: alc.expire_due(batch_size=batch_size), interval,
                                                          stop or asyncio.Event(), name=name), name=name)
    sync = lc
    return asyncio.create_task(
        run_periodically(lambda: sync.expire_due(batch_size=batch_size), interval, stop or asyncio.Event(),
                         name=name),
        name=name)


def relay_task(relay: OutboxRelay | AsyncOutboxRelay, interval: Interval, *,
               stop: asyncio.Event | None = None) -> asyncio.Task[None]:
    """An asyncio task on the running loop delivering due outbox events every ``interval``."""
    from .async_service import AsyncOutboxRelay

    name = "broadcast-lifecycle-relay"
    if isinstance(relay, AsyncOutboxRelay):
        return asyncio.create_task(run_periodically_async(relay.relay_once, interval, stop or asyncio.Event(),
                                                          name=name), name=name)
    return asyncio.create_task(run_periodically(relay.relay_once, interval, stop or asyncio.Event(), name=name),
                               name=name)


@contextlib.asynccontextmanager
async def lifecycle_tasks(lc: AsyncBroadcastLifecycle, *, sweep_every: Interval = timedelta(seconds=5),
                          relay_every: Interval = timedelta(seconds=5), batch_size: int = 1000,
                          relay: AsyncOutboxRelay | None = None) -> AsyncIterator[tuple[asyncio.Task[None], ...]]:
    """Run the sweeper and the relay (``lc.relay()`` unless given) as tasks while the block runs.

    For an app's lifespan::

        @contextlib.asynccontextmanager
        async def lifespan(app):
            async with lifecycle_tasks(lifecycle):
                yield

    Leaving the block lets each task finish its current pass, then they end. Leaving it by
    cancellation cancels them at once (a pass cut short rolls back) and waits until they have ended.
    """
    for interval in (sweep_every, relay_every):
        _seconds(interval)
    stop = asyncio.Event()
    tasks = (sweeper_task(lc, sweep_every, batch_size=batch_size, stop=stop),
             relay_task(relay if relay is not None else lc.relay(), relay_every, stop=stop))
    try:
        yield tasks
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        raise
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
