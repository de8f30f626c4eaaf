"""Helpers for the host's tests: a receiver that records every event it gets, and the store
contract (:class:`StoreContract`, importable from here) for authors of custom stores."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Literal

from .events import BroadcastEvent, Recipient

if TYPE_CHECKING:
    from .contract import StoreContract

__all__ = ["EventRecorder", "StoreContract"]


class EventRecorder:
    """A thread-safe receiver: connect it to a bus and read what arrived, in arrival order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[BroadcastEvent] = []

    def __call__(self, event: BroadcastEvent) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[BroadcastEvent]:
        """Every event received so far."""
        with self._lock:
            return list(self._events)

    def names(self) -> list[str]:
        """The names of the events received so far."""
        return [event.name for event in self.events]

    def for_recipient(self, role: Literal["customer", "transporter"], recipient_id: str) -> list[BroadcastEvent]:
        """The events addressed to one customer or transporter."""
        target = Recipient(role, recipient_id)
        return [event for event in self.events if target in event.recipients]

    def clear(self) -> None:
        """Forget what was received."""
        with self._lock:
            self._events.clear()


def __getattr__(name: str) -> object:
    # The contract imports the service; load it only when asked for, to keep this module light.
    if name == "StoreContract":
        from .contract import StoreContract

        return StoreContract
    raise AttributeError(name)
