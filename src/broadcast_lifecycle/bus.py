"""The signal bus: blinker signals in a private namespace, sent after commit.

Unlike a bare blinker ``send``, one receiver raising does not stop the others: every failure is
logged and returned in the :class:`Delivery`, so the caller can keep the event for the relay.
Receivers are held strongly, so a closure connected by the host is never dropped silently. A
receiver may be a coroutine function: it is awaited on the event loop it was connected on (see
:mod:`~broadcast_lifecycle.loop_receivers`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from blinker import ANY, Namespace

from .events import BroadcastEvent
from .loop_receivers import LoopReceiver, is_coroutine_receiver

__all__ = ["Deduplicator", "Delivery", "Receiver", "ReceiverFailure", "SignalBus"]

logger = logging.getLogger(__name__)

Receiver = Callable[[BroadcastEvent], "Awaitable[None] | None"]
"""A host callback: it gets each event it subscribed to (a coroutine function is awaited on its loop)."""

_EVERY_EVENT = "*"


@dataclass(frozen=True, slots=True)
class ReceiverFailure:
    """A receiver that raised while handling an event."""

    receiver: str
    error: BaseException

    def describe(self) -> str:
        """``receiver: ErrorType: message``, as stored in the outbox's last error."""
        return f"{self.receiver}: {type(self.error).__name__}: {self.error}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of sending one event to every receiver."""

    event: BroadcastEvent
    receivers: int
    failures: tuple[ReceiverFailure, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every receiver handled the event."""
        return not self.failures


class SignalBus:
    """Routes events to receivers by event name (or to receivers of every event)."""

    def __init__(self) -> None:
        self._namespace = Namespace()
        self._lock = threading.Lock()

    def connect(self, receiver: Receiver, event_name: str | None = None, kind: str | None = None) -> Callable[[], None]:
        """Call ``receiver`` for each event named ``event_name`` (all events when ``None``),
        of ``kind`` only when given. Returns a function that disconnects it.

        A coroutine function must be connected while its event loop runs; it is awaited on that
        loop, never on another.
        """
        if is_coroutine_receiver(receiver):
            receiver = LoopReceiver(receiver)  # type: ignore[arg-type]
        signal = self._namespace.signal(event_name or _EVERY_EVENT)
        sender = ANY if kind is None else kind
        with self._lock:
            signal.connect(receiver, sender=sender, weak=False)
        return lambda: signal.disconnect(receiver, sender=sender)

    def has_receivers(self) -> bool:
        """True when any receiver is connected."""
        return any(signal.receivers for signal in self._namespace.values())

    def send(self, event: BroadcastEvent) -> Delivery:
        """Deliver ``event`` to each matching receiver, isolating their failures."""
        failures: list[ReceiverFailure] = []
        count = 0
        for name in (event.name, _EVERY_EVENT):
            signal = self._namespace.get(name)
            if signal is None:
                continue
            for receiver in signal.receivers_for(event.kind):
                count += 1
                try:
                    receiver(event)
                except Exception as exc:
                    label = getattr(receiver, "__qualname__", repr(receiver))
                    logger.exception("receiver %s failed on %s %s", label, event.name, event.event_id)
                    failures.append(ReceiverFailure(label, exc))
        return Delivery(event, count, tuple(failures))


class Deduplicator:
    """Wraps a receiver so that it handles each ``event_id`` once, however often it is delivered.

    Delivery is at least once (a relay may deliver an event again after a crash or a failed
    receiver); wrap a receiver whose effect must not repeat. By default the ids seen are kept in
    memory, in a thread-safe LRU of ``capacity`` ids: that de-duplicates within one process. For
    de-duplication across processes and restarts pass ``claim``, a persistent check-and-set that
    returns True only the first time it sees an id (Redis ``SET key 1 NX EX ...``, an INSERT into a
    table with a unique key), and ``release`` to undo a claim when the receiver fails, so that the
    retry reaches it. Without ``release``, an event whose receiver failed after the claim is never
    handled by this receiver again.

    An id is claimed before the receiver runs, so two concurrent deliveries of one event never
    both reach it; when the receiver raises, the claim is released and the error propagates (the
    outbox then retries the event).
    """

    def __init__(self, receiver: Receiver, *, capacity: int = 100_000,
                 claim: Callable[[str], bool] | None = None,
                 release: Callable[[str], None] | None = None) -> None:
        from .errors import InvalidArgument

        if capacity < 1:
            raise InvalidArgument(f"capacity must be at least 1, got {capacity}")
        if release is not None and claim is None:
            raise InvalidArgument("release is only meaningful with claim")
        if is_coroutine_receiver(receiver):
            receiver = LoopReceiver(receiver)  # type: ignore[arg-type]
        self.receiver = receiver
        self.capacity = capacity
        self._claim = claim
        self._release = release
        self._seen: dict[str, None] = {}  # insertion-ordered: the oldest id comes first
        self._lock = threading.Lock()
        self.dropped = 0
        """How many deliveries were dropped as repeats."""

    def __call__(self, event: BroadcastEvent) -> None:
        """Pass ``event`` to the receiver unless its ``event_id`` was seen before."""
        if not self.claim(event.event_id):
            with self._lock:
                self.dropped += 1
            logger.debug("dropped repeated event %s %s", event.name, event.event_id)
            return
        try:
            self.receiver(event)
        except BaseException:
            self.forget(event.event_id)
            raise

    def __repr__(self) -> str:
        return f"Deduplicator({getattr(self.receiver, '__qualname__', repr(self.receiver))})"

    def claim(self, event_id: str) -> bool:
        """True the first time ``event_id`` is claimed (and records it), False afterwards."""
        if self._claim is not None:
            return self._claim(event_id)
        with self._lock:
            if event_id in self._seen:
                del self._seen[event_id]  # re-insert: the most recently seen ids are kept longest
                self._seen[event_id] = None
                return False
            self._seen[event_id] = None
            if len(self._seen) > self.capacity:
                del self._seen[next(iter(self._seen))]
            return True

    def forget(self, event_id: str) -> None:
        """Undo the claim of ``event_id`` (its next delivery reaches the receiver again)."""
        if self._claim is not None:
            if self._release is not None:
                self._release(event_id)
            return
        with self._lock:
            self._seen.pop(event_id, None)
