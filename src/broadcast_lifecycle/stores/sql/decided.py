"""A transition decided by its own statement, generated from the transition table (the statement's
text is ``postgresql_decided.decided_statement``).

One autocommit statement applies a command without reading first: it locks the row (and, for a
trigger that reads or moves a transporter's holding, that transporter's recipient row), checks the
trigger's from-states and the guards of each (the table's :data:`~broadcast_lifecycle.lifecycle.ROUTES`,
each guard through ``postgresql_decided.GUARD_SQL``), picks the destination by the table's branches
(``postgresql_decided.BRANCH_SQL``), moves the fill and the holding by the route's ``fill``, writes the
new state, the history row, the recipients, the outbox rows of each topic the table announces on the
edge taken, and returns the row as it was before. No row back means the statement refused: the caller
reads the row and the core decides the refusal (or, from a state the statement leaves out, applies
the command on the general path). A trigger whose routes have a guard not in ``GUARD_SQL`` or a branch
not in ``BRANCH_SQL`` has no such statement (:func:`decided_layout` returns ``None``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from ...events import Topic
from ...lifecycle import ROUTES, Route, Trigger
from ...states import BroadcastStatus
from .postgresql_decided import BRANCH_SQL, GUARD_SQL, HOLDER_GUARDS

__all__ = ["DecidedLayout", "decided_layout"]

Edge = tuple[BroadcastStatus, BroadcastStatus]
"""A transition's from-state and destination."""


@dataclass(frozen=True)
class DecidedLayout:
    """What a trigger's statement does, derived from the table: the route from each from-state (its
    guards, its branches to a destination each, the fill it moves), the edges each topic is announced
    on besides the state change, and whether the command's transporter's holding is read or moved."""

    trigger: Trigger
    sources: Mapping[BroadcastStatus, Route]
    announced: Mapping[Topic, tuple[Edge, ...]]
    sets_deadline: bool
    holder: bool

    @property
    def everyone(self) -> bool:
        """Whether the statement calls the everyone function (a topic announced to the notified)."""
        return bool(self.announced)


@cache
def decided_layout(trigger: Trigger) -> DecidedLayout | None:
    """The statement's layout for ``trigger``, or ``None`` when the table gives it a route a
    statement cannot decide (a guard or a branch with no SQL)."""
    if trigger is Trigger.CREATE:
        return None
    sources = {state: route for (t, state), route in ROUTES.items() if t is trigger and not _reoffers_a_move(route)}
    announced: dict[Topic, list[Edge]] = {}
    for state, route in sources.items():
        if any(guard not in GUARD_SQL for guard in route.guards):
            return None
        if any(branch.name is not None and branch.name not in BRANCH_SQL for branch in route.branches):
            return None
        for branch in route.branches:
            for topic in branch.announces:
                announced.setdefault(topic, []).append((state, branch.dest))
    deadlines = {route.sets_deadline for route in sources.values()}
    if not sources or len(deadlines) != 1:
        return None
    holder = any(route.fill or HOLDER_GUARDS.intersection(route.guards) for route in sources.values())
    return DecidedLayout(trigger, sources, {topic: tuple(edges) for topic, edges in announced.items()},
                         deadlines.pop(), holder)


def _reoffers_a_move(route: Route) -> bool:
    """Whether ``route`` re-offers the broadcast while moving the command's transporter's holding (a release
    from fully_filled): the re-offer goes to those holding no slot after the command, which the everyone
    function lists on a snapshot of its own that may or may not see the holding this very statement
    moves. Such a from-state is left out of the statement: it refuses there, and the core decides on the
    row it reads (the general path, which lists the recipients after its write)."""
    return bool(route.fill) and any(Topic.OFFERED in branch.announces for branch in route.branches)
