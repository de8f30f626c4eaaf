"""Persistence adapters: the protocol and the stores that ship with the library."""

from .base import AfterCommit, BroadcastStore, Change, Committed, Loaded, NewBroadcast, NewRecipients, OutboxEntry
from .memory import InMemoryStore

__all__ = [
    "AfterCommit",
    "BroadcastStore",
    "Change",
    "Committed",
    "InMemoryStore",
    "Loaded",
    "NewBroadcast",
    "NewRecipients",
    "OutboxEntry",
]
