"""broadcast_lifecycle: a guarded, persisted, observable lifecycle for marketplace broadcasts.

Everything a host uses is importable from here. The core (states, table, guards, events, records,
errors, results) is imported eagerly; the parts with I/O dependencies (bus, outbox, service, stores)
load on first use, so ``import broadcast_lifecycle.states`` pulls in neither blinker nor SQLAlchemy.
Authors of custom stores find the protocol and its values in :mod:`broadcast_lifecycle.stores` and
the contract suite in :mod:`broadcast_lifecycle.testing`.
"""

from typing import TYPE_CHECKING, Any

from .clock import Clock, utc_now
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
from .events import Addressed, BroadcastEvent, EventPayload, Recipient, Topic
from .guards import CommandContext, Guard
from .kinds import DEFAULT_KINDS, KindConfig
from .lifecycle import Trigger, allowed_from
from .records import BroadcastSnapshot, EntityId, HistoryEntry, RecipientRecord
from .results import CommandResult, WritePath
from .states import CLOSED, OPEN, TERMINAL, BroadcastStatus

if TYPE_CHECKING:
    from .async_handle import AsyncKindHandle
    from .async_service import AsyncBroadcastLifecycle, AsyncOutboxRelay
    from .bus import Deduplicator, Delivery, Receiver, ReceiverFailure, SignalBus
    from .handle import KindHandle
    from .outbox import DeliveryReport, OutboxRelay, RetryPolicy
    from .retention import PruneReport
    from .runners import (
        BackgroundRunner,
        lifecycle_tasks,
        relay_task,
        start_relay_thread,
        start_sweeper_thread,
        sweeper_task,
    )
    from .service import SYSTEM_ACTOR, BroadcastLifecycle
    from .socketio import AsyncSocketIOBridge, SocketIOBridge, recipient_room
    from .stores import BroadcastStore, DeadLetter, InMemoryStore
    from .stores._sqlite_setup import SqliteSettings
    from .stores.async_sqlalchemy import AsyncSQLAlchemyStore
    from .stores.schema import BroadcastMixin, library_metadata, postgresql_functions_ddl
    from .stores.sqlalchemy import SQLAlchemyStore

_LAZY = {
    "AsyncKindHandle": ".async_handle",
    "AsyncBroadcastLifecycle": ".async_service",
    "AsyncOutboxRelay": ".async_service",
    "Deduplicator": ".bus",
    "Delivery": ".bus",
    "Receiver": ".bus",
    "ReceiverFailure": ".bus",
    "SignalBus": ".bus",
    "KindHandle": ".handle",
    "DeliveryReport": ".outbox",
    "OutboxRelay": ".outbox",
    "RetryPolicy": ".outbox",
    "PruneReport": ".retention",
    "BackgroundRunner": ".runners",
    "lifecycle_tasks": ".runners",
    "relay_task": ".runners",
    "start_relay_thread": ".runners",
    "start_sweeper_thread": ".runners",
    "sweeper_task": ".runners",
    "SYSTEM_ACTOR": ".service",
    "BroadcastLifecycle": ".service",
    "BroadcastStore": ".stores",
    "DeadLetter": ".stores",
    "InMemoryStore": ".stores",
    "BroadcastMixin": ".stores.schema",
    "library_metadata": ".stores.schema",
    "postgresql_functions_ddl": ".stores.schema",
    "AsyncSQLAlchemyStore": ".stores.async_sqlalchemy",
    "SQLAlchemyStore": ".stores.sqlalchemy",
    "SqliteSettings": ".stores._sqlite_setup",
    "AsyncSocketIOBridge": ".socketio",
    "SocketIOBridge": ".socketio",
    "recipient_room": ".socketio",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.2.0.dev0"
"""The package version: its one source (``pyproject.toml`` reads it; ``importlib.metadata`` reports it)."""

__all__ = [
    "CLOSED",
    "DEFAULT_KINDS",
    "OPEN",
    "SYSTEM_ACTOR",
    "TERMINAL",
    "Addressed",
    "AsyncBroadcastLifecycle",
    "AsyncKindHandle",
    "AsyncOutboxRelay",
    "AsyncSQLAlchemyStore",
    "AsyncSocketIOBridge",
    "BackgroundRunner",
    "BroadcastError",
    "BroadcastEvent",
    "BroadcastLifecycle",
    "BroadcastMixin",
    "BroadcastNotFound",
    "BroadcastSnapshot",
    "BroadcastStatus",
    "BroadcastStore",
    "Clock",
    "CommandContext",
    "CommandResult",
    "ConcurrentUpdate",
    "CorruptState",
    "DeadLetter",
    "Deduplicator",
    "Delivery",
    "DeliveryReport",
    "DuplicateBroadcast",
    "EntityId",
    "EventPayload",
    "Guard",
    "HistoryEntry",
    "IdempotencyKeyReused",
    "InMemoryStore",
    "InvalidArgument",
    "InvalidTransition",
    "KindConfig",
    "KindHandle",
    "OpenBroadcastExists",
    "OutboxRelay",
    "PruneReport",
    "Receiver",
    "ReceiverFailure",
    "Recipient",
    "RecipientRecord",
    "RetryPolicy",
    "SQLAlchemyStore",
    "SignalBus",
    "SocketIOBridge",
    "SqliteSettings",
    "StoreError",
    "Topic",
    "TransitionRefused",
    "Trigger",
    "WritePath",
    "allowed_from",
    "library_metadata",
    "lifecycle_tasks",
    "postgresql_functions_ddl",
    "recipient_room",
    "relay_task",
    "start_relay_thread",
    "start_sweeper_thread",
    "sweeper_task",
    "utc_now",
]
