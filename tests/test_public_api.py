"""The public surface: one import path for what a host uses, pinned, and used by the docs and examples."""

from __future__ import annotations

import re
from pathlib import Path

import broadcast_lifecycle

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = {"broadcast_lifecycle", "broadcast_lifecycle.testing", "broadcast_lifecycle.stores"}
"""Modules a host or a store author imports from; the rest are implementation."""

PINNED = {
    "Addressed", "EventPayload",
    "AsyncBroadcastLifecycle", "AsyncKindHandle", "AsyncOutboxRelay", "AsyncSQLAlchemyStore", "lifecycle_tasks",
    "BackgroundRunner", "BroadcastError", "BroadcastEvent", "BroadcastLifecycle", "BroadcastMixin",
    "BroadcastNotFound", "BroadcastSnapshot", "BroadcastStatus", "BroadcastStore", "CLOSED", "Clock",
    "CommandContext", "CommandResult", "ConcurrentUpdate", "CorruptState", "DEFAULT_KINDS", "DeadLetter",
    "Deduplicator", "Delivery", "DeliveryReport", "DuplicateBroadcast", "EntityId", "Guard", "HistoryEntry",
    "IdempotencyKeyReused", "InMemoryStore", "InvalidArgument", "InvalidTransition", "KindConfig", "KindHandle",
    "OPEN", "OpenBroadcastExists", "OutboxRelay", "PruneReport", "Receiver", "ReceiverFailure", "Recipient",
    "RecipientRecord", "RetryPolicy", "SQLAlchemyStore", "SYSTEM_ACTOR", "SignalBus", "SqliteSettings", "StoreError",
    "TERMINAL", "Topic",
    "TransitionRefused", "Trigger", "WritePath", "library_metadata", "postgresql_functions_ddl", "relay_task",
    "start_relay_thread", "start_sweeper_thread", "sweeper_task", "utc_now",
    "AsyncSocketIOBridge", "SocketIOBridge", "recipient_room",
    "allowed_from",
}


def test_public_names_are_pinned_and_resolve() -> None:
    """__all__ is exactly the pinned set (a change here is a deliberate API change) and every name resolves."""
    assert set(broadcast_lifecycle.__all__) == PINNED
    assert len(broadcast_lifecycle.__all__) == len(PINNED)
    for name in PINNED:
        assert getattr(broadcast_lifecycle, name) is not None


def test_docs_and_examples_import_only_public_modules() -> None:
    """README, docs and examples import the library only from its public modules."""
    imports = re.compile(r"^\s*(?:from (broadcast_lifecycle[\w.]*) import|import (broadcast_lifecycle[\w.]*))",
                         re.MULTILINE)
    sources = [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("examples/**/*.py")]
    used = {(path.relative_to(ROOT).as_posix(), module)
            for path in sources for pair in imports.findall(path.read_text(encoding="utf-8"))
            for module in pair if module}
    private = sorted((path, module) for path, module in used if module not in PUBLIC_MODULES)
    assert private == []
