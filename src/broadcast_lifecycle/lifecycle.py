"""The transition table: defined once, on a single process-wide ``transitions`` machine.

Everything that knows which trigger leads from which state to which state reads it from here: the
decision path (through :data:`ROUTES`, compiled from the machine at import), the table checks, the
generated diagram and the docs. No per-broadcast machine object ever exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from transitions import Machine

from .states import BroadcastStatus as S

__all__ = [
    "BRANCHES",
    "INITIAL",
    "MACHINE",
    "REOFFERS",
    "ROUTES",
    "RULES",
    "Route",
    "Rule",
    "Trigger",
    "allowed_from",
    "build_machine",
    "table_problems",
]


class Trigger(str, Enum):
    """A command that may change a broadcast's state."""

    CREATE = "create"
    START_BROADCAST = "start_broadcast"
    ACTIVATE = "activate"
    ACCEPT = "accept"
    RELEASE = "release"
    START_TRIP = "start_trip"
    COMPLETE = "complete"
    CANCEL = "cancel"
    EXPIRE = "expire"

    def __str__(self) -> str:
        return self.value


INITIAL = S.CREATED
"""The state ``create`` puts a new broadcast in."""

BRANCHES: Mapping[str, str] = {
    "fills_all": "the last open slot fills",
    "empties": "no slot stays filled",
}
"""Conditions that pick between destinations; unlike guards, they never refuse."""


@dataclass(frozen=True)
class Rule:
    """One row of the table: ``trigger`` from any of ``sources`` to ``dest``.

    ``guards`` name checks in :mod:`broadcast_lifecycle.guards` that refuse with a reason;
    ``when``/``unless`` name a branch from :data:`BRANCHES` that selects this row. ``reoffers``: the
    broadcast (re)opens for the transporters already notified (a deadline is set, a full broadcast
    has a slot free again), so the offer is announced again to each of them that holds no slot.
    """

    trigger: Trigger
    sources: tuple[S, ...]
    dest: S
    guards: tuple[str, ...] = ()
    when: str | None = None
    unless: str | None = None
    reoffers: bool = False


_OPEN_FOR_FILL = (S.ACTIVE, S.PARTIALLY_FILLED)

RULES: tuple[Rule, ...] = (
    Rule(Trigger.START_BROADCAST, (S.CREATED,), S.BROADCASTING),
    Rule(Trigger.ACTIVATE, (S.BROADCASTING,), S.ACTIVE, guards=("deadline_in_future",), reoffers=True),
    Rule(
        Trigger.ACCEPT,
        _OPEN_FOR_FILL,
        S.FULLY_FILLED,
        guards=("transporter_notified", "slots_available"),
        when="fills_all",
    ),
    Rule(
        Trigger.ACCEPT,
        _OPEN_FOR_FILL,
        S.PARTIALLY_FILLED,
        guards=("transporter_notified", "slots_available"),
        unless="fills_all",
    ),
    Rule(Trigger.RELEASE, (S.PARTIALLY_FILLED,), S.ACTIVE, guards=("holds_slots",), when="empties"),
    Rule(Trigger.RELEASE, (S.PARTIALLY_FILLED,), S.PARTIALLY_FILLED, guards=("holds_slots",), unless="empties"),
    Rule(Trigger.RELEASE, (S.FULLY_FILLED,), S.ACTIVE, guards=("holds_slots",), when="empties", reoffers=True),
    Rule(Trigger.RELEASE, (S.FULLY_FILLED,), S.PARTIALLY_FILLED, guards=("holds_slots",), unless="empties",
         reoffers=True),
    Rule(Trigger.START_TRIP, (S.PARTIALLY_FILLED, S.FULLY_FILLED), S.IN_PROGRESS, guards=("trip_fill_policy",)),
    Rule(Trigger.COMPLETE, (S.IN_PROGRESS,), S.COMPLETED),
    Rule(
        Trigger.CANCEL,
        (S.CREATED, S.BROADCASTING, S.ACTIVE, S.PARTIALLY_FILLED, S.FULLY_FILLED),
        S.CANCELLED,
    ),
    Rule(
        Trigger.EXPIRE,
        (S.CREATED, S.BROADCASTING, S.ACTIVE, S.PARTIALLY_FILLED),
        S.EXPIRED,
        guards=("deadline_passed",),
    ),
)
"""The default lifecycle. ``create`` is not a row: it makes a broadcast in :data:`INITIAL`."""


def build_machine() -> Machine:
    """Build the ``transitions`` machine from :data:`RULES` (no model, no auto transitions)."""
    machine = Machine(
        model=None,
        states=[state.value for state in S],
        initial=INITIAL.value,
        auto_transitions=False,
        ignore_invalid_triggers=False,
    )
    for rule in RULES:
        machine.add_transition(
            rule.trigger.value,
            [source.value for source in rule.sources],
            rule.dest.value,
            conditions=[*rule.guards, *([rule.when] if rule.when else [])],
            unless=[rule.unless] if rule.unless else [],
        )
    return machine


MACHINE = build_machine()
"""The one machine of the process."""


@dataclass(frozen=True)
class Route:
    """Where ``trigger`` leads from one state: the guards to pass and the branches to pick from.

    ``branches`` pairs a branch name and its required truth value with a destination; the first
    pair that matches wins, in table order.
    """

    guards: tuple[str, ...]
    branches: tuple[tuple[str | None, bool, S], ...]


def _compile(machine: Machine) -> dict[tuple[Trigger, S], Route]:
    """Flatten the machine's events into a dict keyed by (trigger, from-state)."""
    routes: dict[tuple[Trigger, S], Route] = {}
    for name, event in machine.events.items():
        trigger = Trigger(name)
        for source, candidates in event.transitions.items():
            guards: list[str] = []
            branches: list[tuple[str | None, bool, S]] = []
            for candidate in candidates:
                branch: tuple[str | None, bool] = (None, True)
                for condition in candidate.conditions:
                    cond_name = str(condition.func)
                    if cond_name in BRANCHES:
                        branch = (cond_name, bool(condition.target))
                    elif cond_name not in guards:
                        guards.append(cond_name)
                branches.append((*branch, S(candidate.dest)))
            routes[(trigger, S(source))] = Route(tuple(guards), tuple(branches))
    return routes


ROUTES: Mapping[tuple[Trigger, S], Route] = _compile(MACHINE)
"""The table as a lookup for the decision path."""

REOFFERS: frozenset[tuple[Trigger, S]] = frozenset(
    (rule.trigger, source) for rule in RULES if rule.reoffers for source in rule.sources)
"""(trigger, from-state) pairs whose transition announces the offer again to the notified transporters."""

_ALLOWED_FROM: Mapping[Trigger, frozenset[S]] = {
    trigger: frozenset(source for (t, source) in ROUTES if t is trigger) for trigger in Trigger
}


def allowed_from(trigger: Trigger) -> frozenset[S]:
    """The states from which ``trigger`` is in the table."""
    return _ALLOWED_FROM[trigger]


def table_problems(rules: Iterable[Rule] = RULES, initial: S = INITIAL) -> list[str]:
    """Check a table: terminal states absorbing, every state reachable and able to end.

    Returns one sentence per problem; an empty list means the table is sound.
    """
    rules = tuple(rules)
    edges: dict[S, set[S]] = {state: set() for state in S}
    guards: dict[tuple[Trigger, S], tuple[str, ...]] = {}
    reoffers: dict[tuple[Trigger, S], bool] = {}
    problems: list[str] = []
    for rule in rules:
        for source in rule.sources:
            edges[source].add(rule.dest)
            # Branches of one trigger share their guards: the decision checks them before it picks one.
            if guards.setdefault((rule.trigger, source), rule.guards) != rule.guards:
                problems.append(f"{rule.trigger} from {source} has branches with different guards")
            if reoffers.setdefault((rule.trigger, source), rule.reoffers) != rule.reoffers:
                problems.append(f"{rule.trigger} from {source} has branches that disagree on re-offering")
    problems += [
        f"terminal state {state} has a transition out (to {', '.join(sorted(edges[state]))})"
        for state in S
        if state.is_terminal and edges[state]
    ]
    reachable = _closure({initial}, edges)
    problems += [f"state {state} is unreachable from {initial}" for state in S if state not in reachable]
    for state in S:
        if not state.is_terminal and not any(s.is_terminal for s in _closure({state}, edges)):
            problems.append(f"state {state} cannot reach a terminal state")
    return problems


def _closure(start: set[S], edges: Mapping[S, set[S]]) -> set[S]:
    seen = set(start)
    frontier = list(start)
    while frontier:
        for nxt in edges[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return seen
