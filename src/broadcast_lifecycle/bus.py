"""The signal bus: blinker signals in a private namespace, sent after commit.

Unlike a bare blinker ``send``, one receiver raising does not stop the others: every failure is
logged and returned in the :class:`Delivery`, so the caller can keep the event for the relay.
Receivers are held strongly, so a closure connected by the host is never dropped silently.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from blinker import ANY, Namespace

from .events import BroadcastEvent

__all__ = ["Delivery", "Receiver", "ReceiverFailure", "SignalBus"]

logger = logging.getLogger(__name__)

Receiver = Callable[[BroadcastEvent], None]
"""A host callback: it gets each event it subscribed to."""

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
        """
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
