"""Helpers for the host's tests: a receiver that records every event it gets, and for authors of
custom stores the store contract (:class:`StoreContract`) with :func:`run_contract`, which runs it
without pytest (both importable from here; see docs/adapters.md)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Literal

from .events import BroadcastEvent, Recipient

if TYPE_CHECKING:
    from .contract import FOREIGN_TO_INT_KEYS, StoreContract, run_contract

__all__ = ["FOREIGN_TO_INT_KEYS", "EventRecorder", "StoreContract", "run_contract"]


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
    if name in ("FOREIGN_TO_INT_KEYS", "StoreContract", "run_contract"):
        from . import contract

        return getattr(contract, name)
    raise AttributeError(name)
