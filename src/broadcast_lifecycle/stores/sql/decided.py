"""A transition decided by its own statement, generated from the transition table (the statement's
text is ``postgresql_decided.decided_statement``).

One autocommit statement applies a command without reading first: it locks the row, checks the
trigger's from-states and the guards of each (the table's :data:`~broadcast_lifecycle.lifecycle.ROUTES`,
each guard through ``postgresql_decided.GUARD_SQL``), writes the new state, the history row, the recipients, the
outbox rows of each topic the table announces from that state, and returns the row as it was
before. No row back means the statement refused: the caller reads the row and the core decides the
refusal. A trigger whose routes branch on the fill, move the fill or have a guard not in
``GUARD_SQL`` has no such statement (:func:`decided_layout` returns ``None``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from ...events import Topic
from ...lifecycle import ROUTES, Trigger
from ...states import BroadcastStatus
from .postgresql_decided import GUARD_SQL

__all__ = ["DecidedLayout", "decided_layout"]


@dataclass(frozen=True)
class DecidedLayout:
    """What a trigger's statement does, derived from the table: the from-states (each with its
    destination and its guards' SQL) and the topics announced from each, besides the state change."""

    trigger: Trigger
    sources: Mapping[BroadcastStatus, tuple[BroadcastStatus, tuple[str, ...]]]
    announced: Mapping[Topic, tuple[BroadcastStatus, ...]]
    sets_deadline: bool

    @property
    def everyone(self) -> bool:
        """Whether the statement calls the everyone function (a topic announced to the notified)."""
        return bool(self.announced)


@cache
def decided_layout(trigger: Trigger) -> DecidedLayout | None:
    """The statement's layout for ``trigger``, or ``None`` when the table gives it a route a
    statement cannot decide (a branch, a fill, a guard with no SQL)."""
    if trigger is Trigger.CREATE:
        return None
    sources: dict[BroadcastStatus, tuple[BroadcastStatus, tuple[str, ...]]] = {}
    announced: dict[Topic, list[BroadcastStatus]] = {}
    deadlines = set()
    for (t, state), route in ROUTES.items():
        if t is not trigger:
            continue
        if len(route.branches) != 1 or route.branches[0].name is not None or route.fill:
            return None
        if any(guard not in GUARD_SQL for guard in route.guards):
            return None
        sources[state] = (route.branches[0].dest, route.guards)
        deadlines.add(route.sets_deadline)
        for topic in route.branches[0].announces:
            announced.setdefault(topic, []).append(state)
    if not sources or len(deadlines) != 1:
        return None
    return DecidedLayout(trigger, sources, {topic: tuple(states) for topic, states in announced.items()},
                         deadlines.pop())
