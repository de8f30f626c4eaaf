"""broadcast_lifecycle: a guarded, persisted, observable lifecycle for marketplace broadcasts.

The core (states, table, guards, ``decide``, events, errors) is imported eagerly; the parts with
I/O dependencies (bus, service, stores) load on first use, so ``import broadcast_lifecycle.states``
pulls in neither blinker nor SQLAlchemy.
"""

from typing import TYPE_CHECKING, Any

from .clock import Clock, utc_now
from .decision import Decision, decide
from .errors import (
    BroadcastError,
    BroadcastNotFound,
    ConcurrentUpdate,
    CorruptState,
    DuplicateBroadcast,
    IdempotencyKeyReused,
    InvalidArgument,
    InvalidTransition,
    OpenBroadcastExists,
    StoreError,
    TransitionRefused,
)
from .events import BroadcastEvent, Recipient, Topic
from .guards import CommandContext, Guard
from .kinds import DEFAULT_KINDS, KindConfig
from .lifecycle import Trigger
from .records import BroadcastSnapshot, EntityId, HistoryEntry, RecipientRecord
from .states import CLOSED, OPEN, TERMINAL, BroadcastStatus

if TYPE_CHECKING:
    from .bus import Deduplicator, Delivery, Receiver, ReceiverFailure, SignalBus
    from .service import BroadcastLifecycle
    from .stores import BroadcastStore, InMemoryStore

_LAZY = {
    "Deduplicator": ".bus",
    "Delivery": ".bus",
    "Receiver": ".bus",
    "ReceiverFailure": ".bus",
    "SignalBus": ".bus",
    "BroadcastLifecycle": ".service",
    "BroadcastStore": ".stores",
    "InMemoryStore": ".stores",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "CLOSED",
    "DEFAULT_KINDS",
    "OPEN",
    "TERMINAL",
    "BroadcastError",
    "BroadcastEvent",
    "BroadcastLifecycle",
    "BroadcastNotFound",
    "BroadcastSnapshot",
    "BroadcastStatus",
    "BroadcastStore",
    "Clock",
    "CommandContext",
    "ConcurrentUpdate",
    "CorruptState",
    "Decision",
    "Deduplicator",
    "Delivery",
    "DuplicateBroadcast",
    "EntityId",
    "Guard",
    "HistoryEntry",
    "IdempotencyKeyReused",
    "InMemoryStore",
    "InvalidArgument",
    "InvalidTransition",
    "KindConfig",
    "OpenBroadcastExists",
    "Receiver",
    "ReceiverFailure",
    "Recipient",
    "RecipientRecord",
    "SignalBus",
    "StoreError",
    "Topic",
    "TransitionRefused",
    "Trigger",
    "decide",
    "utc_now",
]
