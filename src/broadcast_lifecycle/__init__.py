"""broadcast_lifecycle: a guarded, persisted, observable lifecycle for marketplace broadcasts."""

from .bus import Delivery, Receiver, ReceiverFailure, SignalBus
from .clock import Clock, utc_now
from .decision import Decision, decide
from .errors import (
    BroadcastError,
    BroadcastNotFound,
    ConcurrentUpdate,
    CorruptState,
    DuplicateBroadcast,
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
from .service import BroadcastLifecycle
from .states import CLOSED, OPEN, TERMINAL, BroadcastStatus
from .stores import BroadcastStore, InMemoryStore

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
    "Delivery",
    "DuplicateBroadcast",
    "EntityId",
    "Guard",
    "HistoryEntry",
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
