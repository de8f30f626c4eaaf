"""Delivering outbox events: the after-commit dispatch and the relay share this, so a failure is
recorded the same way wherever it happens.

Guarantee: an event whose transition committed is delivered to the receivers at least once. An
event is marked delivered only when every matching receiver handled it; a failing receiver gets
it again later with backoff (and every other receiver may get it again too: de-duplicate on
``event_id``, e.g. with :class:`~broadcast_lifecycle.bus.Deduplicator`). An event no receiver
in this process listens to stays pending for a relay in a process that has receivers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .bus import SignalBus
from .clock import Clock
from .errors import InvalidArgument
from .events import BroadcastEvent
from .stores.base import BroadcastStore

__all__ = ["DeliveryReport", "OutboxRelay", "RetryPolicy", "deliver"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff between delivery attempts, then the dead-letter parking lot."""

    max_attempts: int = 8
    first_delay: timedelta = timedelta(seconds=5)
    factor: float = 2.0
    max_delay: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.factor < 1 or self.first_delay <= timedelta(0):
            raise InvalidArgument("RetryPolicy needs max_attempts >= 1, factor >= 1 and a positive first_delay")

    def retry_at(self, attempts: int, now: datetime) -> datetime | None:
        """When to try again after ``attempts`` failed attempts; ``None`` once they are used up."""
        if attempts >= self.max_attempts:
            return None
        try:
            delay = min(self.first_delay * self.factor ** (attempts - 1), self.max_delay)
        except OverflowError:  # a long policy: the growth passed what timedelta can hold, long after the cap
            delay = self.max_delay
        return now + delay


@dataclass
class DeliveryReport:
    """What one delivery pass did."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0
    unheard: int = 0

    def __iadd__(self, other: DeliveryReport) -> DeliveryReport:
        self.delivered += other.delivered
        self.failed += other.failed
        self.dead += other.dead
        self.unheard += other.unheard
        return self


def deliver(store: BroadcastStore, bus: SignalBus, events: Iterable[tuple[BroadcastEvent, int]],
            policy: RetryPolicy, now: Callable[[], datetime]) -> DeliveryReport:
    """Send each event (with the attempts it already had) and record the outcome in the outbox."""
    report = DeliveryReport()
    delivered: list[str] = []
    for event, attempts in events:
        delivery = bus.send(event)
        if delivery.receivers == 0:
            report.unheard += 1
        elif delivery.ok:
            delivered.append(event.event_id)
        else:
            at = now()
            retry_at = policy.retry_at(attempts + 1, at)
            error = "; ".join(f.describe() for f in delivery.failures)
            store.record_failure(event.event_id, error, at, retry_at)
            if retry_at is None:
                report.dead += 1
                logger.error("event %s %s is dead after %d attempts: %s", event.name, event.event_id,
                             attempts + 1, error)
            else:
                report.failed += 1
    if delivered:
        store.mark_delivered(delivered, now())
        report.delivered = len(delivered)
    return report


class OutboxRelay:
    """Delivers what after-commit dispatch did not: events of crashed processes, failed receivers.

    Safe to run in several processes at once: each pass claims its events with a lease. Only
    events older than ``grace`` are taken, so the relay does not race the normal dispatch.
    """

    def __init__(self, store: BroadcastStore, bus: SignalBus, clock: Clock, *,
                 policy: RetryPolicy | None = None, grace: timedelta = timedelta(seconds=10),
                 lease: timedelta = timedelta(minutes=2), batch_size: int = 200) -> None:
        if batch_size < 1:
            raise InvalidArgument(f"batch_size must be at least 1, got {batch_size}")
        if lease <= timedelta(0):
            raise InvalidArgument(f"lease must be positive (it keeps other relays off a claimed event), got {lease}")
        if grace < timedelta(0):
            raise InvalidArgument(f"grace must not be negative, got {grace}")
        self.store = store
        self.bus = bus
        self.policy = policy or RetryPolicy()
        self._clock = clock
        self._grace = grace
        self._lease = lease
        self._batch_size = batch_size

    def relay_once(self, *, on_batch: Callable[[int], None] | None = None) -> DeliveryReport:
        """Claim and deliver every due event, batch by batch; returns what happened.

        ``on_batch`` is called with the number of events each batch handled (e.g. a progress line's
        ``advance``).
        """
        report = DeliveryReport()
        while True:
            now = self._clock()
            batch = self.store.claim_events(now, self._batch_size, now - self._grace, now + self._lease)
            if not batch:
                return report
            report += deliver(self.store, self.bus, ((e.event, e.attempts) for e in batch), self.policy,
                              self._clock)
            if on_batch is not None:
                on_batch(len(batch))
            if len(batch) < self._batch_size:
                return report
