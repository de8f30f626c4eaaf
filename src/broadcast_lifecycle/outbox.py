"""Delivering outbox events: the after-commit dispatch and the relay share this, so a failure is
recorded the same way wherever it happens.

Guarantee: an event whose transition committed is delivered to each receiver at least once.
Delivery is tracked per named receiver (:meth:`SignalBus.connect`): a receiver that raises is
retried alone, with backoff, until it handles the event or runs out of attempts (a dead letter
naming it and its error); the receivers that handled the event are not called again for it. An
event is delivered once every receiver it matches in the delivering process has handled it. An
event no receiver in this process listens to stays pending for a relay in a process that has
receivers.

Receivers of one event run in connection order. When every one of them handles the event at the
first try, the event is marked delivered and nothing is recorded per receiver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from .bus import Delivery, SignalBus
from .clock import Clock
from .errors import InvalidArgument, show_value
from .events import BroadcastEvent
from .stores.base import BroadcastStore, OutboxEntry
from .stores.outbox_state import DeliveryAttempt, ReceiverDelivery

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
    """What one delivery pass did: events now delivered to every receiver, receiver failures that
    will be retried, dead letters made (a receiver giving up on an event), and events no receiver
    in this process listens to."""

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


def deliver(store: BroadcastStore, bus: SignalBus, pending: Iterable[BroadcastEvent | OutboxEntry],
            policy: RetryPolicy, now: Callable[[], datetime],
            mark: Callable[[Sequence[str], datetime], None] | None = None) -> DeliveryReport:
    """Send each event to the receivers that still owe it and record the outcome in the outbox.

    A bare ``BroadcastEvent`` is one just committed (no receiver has seen it); an ``OutboxEntry``
    brings the per-receiver state recorded so far, so that receivers that handled the event or gave
    up on it are skipped, and a failed one is called only once its backoff has passed. Events every
    receiver handled are marked delivered with ``mark`` (default ``store.mark_delivered``).
    """
    report = DeliveryReport()
    delivered: list[str] = []
    for item in pending:
        known: dict[str, ReceiverDelivery] = {}
        if isinstance(item, OutboxEntry):
            event = item.event
            if item.receivers:
                known = {r.receiver: r for r in item.receivers}
        else:
            event = item
        if known:
            at = now()
            delivery = bus.send(event, skip={name for name, state in known.items() if state.settled or (
                state.next_attempt_at is not None and state.next_attempt_at > at)}, retry=True)
        else:
            delivery = bus.send(event)
        if not delivery.matched:
            report.unheard += 1
        elif delivery.ok and not known:
            delivered.append(event.event_id)  # the usual case: one UPDATE settles it, nothing per receiver
        else:
            attempt = _attempt(delivery, known, policy, now())
            store.record_attempt(attempt)
            if attempt.outcome == "delivered":
                report.delivered += 1
            for state in attempt.receivers:
                if state.dead_at is not None:
                    report.dead += 1
                    logger.error("receiver %s gave up on %s %s after %d attempts: %s", state.receiver,
                                 event.name, event.event_id, state.attempts, state.last_error)
                elif state.delivered_at is None:
                    report.failed += 1
    if delivered:
        (mark or store.mark_delivered)(delivered, now())
        report.delivered += len(delivered)
    return report


def _attempt(delivery: Delivery, known: Mapping[str, ReceiverDelivery], policy: RetryPolicy,
             at: datetime) -> DeliveryAttempt:
    """The record of one pass: the new state of each receiver called, and where the event stands."""
    states: list[ReceiverDelivery] = []
    for name in delivery.handled:
        prior = known.get(name)
        states.append(ReceiverDelivery(receiver=name, attempts=prior.attempts if prior else 0,
                                       last_error=prior.last_error if prior else None, delivered_at=at))
    for failure in delivery.failures:
        prior = known.get(failure.receiver)
        attempts = (prior.attempts if prior else 0) + 1
        retry_at = policy.retry_at(attempts, at)
        states.append(ReceiverDelivery(receiver=failure.receiver, attempts=attempts,
                                       last_error=failure.error_text(), next_attempt_at=retry_at,
                                       dead_at=at if retry_at is None else None))
    called = {state.receiver: state for state in states}
    due: list[datetime] = []
    dead = False
    for name in delivery.matched:  # receivers of this process; one known only elsewhere is not owed here
        state = called.get(name) or known[name]  # a matched receiver not called was skipped: it is known
        if state.dead_at is not None:
            dead = True
        elif state.delivered_at is None:
            due.append(state.next_attempt_at or at)
    error = "; ".join(f.describe() for f in delivery.failures) or None
    if due:
        return DeliveryAttempt(event_id=delivery.event.event_id, at=at, receivers=tuple(states),
                               outcome="pending", next_attempt_at=min(due), error=error)
    return DeliveryAttempt(event_id=delivery.event.event_id, at=at, receivers=tuple(states),
                           outcome="dead" if dead else "delivered", error=error)


class OutboxRelay:
    """Delivers what after-commit dispatch did not: events of crashed processes, and each event to
    the receivers that failed on it (only to those).

    Safe to run in several processes at once: each pass claims its events with a lease. Only
    events older than ``grace`` are taken, so the relay does not race the normal dispatch.
    """

    def __init__(self, store: BroadcastStore, bus: SignalBus, clock: Clock, *,
                 policy: RetryPolicy | None = None, grace: timedelta = timedelta(seconds=10),
                 lease: timedelta = timedelta(minutes=2), batch_size: int = 200) -> None:
        if batch_size < 1:
            raise InvalidArgument(f"batch_size must be at least 1, got {batch_size}")
        if lease <= timedelta(0):
            raise InvalidArgument("lease must be positive (it keeps other relays off a claimed event), "
                                  f"got {show_value(lease)}")
        if grace < timedelta(0):
            raise InvalidArgument(f"grace must not be negative, got {show_value(grace)}")
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
            report += deliver(self.store, self.bus, batch, self.policy, self._clock)
            if on_batch is not None:
                on_batch(len(batch))
            if len(batch) < self._batch_size:
                return report
