"""The transition table: defined once, on a single process-wide ``transitions`` machine.

Everything that knows which trigger leads from which state to which state reads it from here: the
decision path (through :data:`ROUTES`, compiled from the machine at import), the table checks, the
generated diagram and the docs. No per-broadcast machine object ever exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from transitions import Machine

from .events import Topic
from .states import BroadcastStatus as S

__all__ = [
    "BRANCHES",
    "DEADLINE_TRIGGERS",
    "Branch",
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
    "topics_of",
]


class Trigger(str, Enum):
    """A command that may change a broadcast's state."""

    CREATE = "create"
    START_BROADCAST = "start_broadcast"
    ACTIVATE = "activate"
    EXTEND = "extend"
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
    """One row of the table: ``trigger`` from any of ``sources`` to ``dest``, and what it does.

    ``dest=None`` keeps the state: a self-loop from each source (a command that changes the broadcast
    but not its state, over several states as one rule). ``guards`` name checks in
    :mod:`broadcast_lifecycle.guards` that refuse with a reason; ``when``/``unless`` name a branch from
    :data:`BRANCHES` that selects this row. The effects: ``fill`` moves ``slots_filled`` by the command's
    slots times this sign; ``sets_deadline`` makes the command's deadline the broadcast's. ``announces``
    names the topics sent besides the customer's state change, which every transition sends:
    :attr:`Topic.OFFERED <broadcast_lifecycle.events.Topic.OFFERED>` re-offers the broadcast to the
    notified transporters holding no slot (it opens again for them), any other topic goes to the
    customer and every notified transporter.
    """

    trigger: Trigger
    sources: tuple[S, ...]
    dest: S | None
    guards: tuple[str, ...] = ()
    when: str | None = None
    unless: str | None = None
    announces: tuple[Topic, ...] = ()
    fill: int = 0
    sets_deadline: bool = False

    def dest_from(self, source: S) -> S:
        """Where this rule leads from ``source`` (``source`` itself for a self-loop)."""
        return source if self.dest is None else self.dest


_OPEN_FOR_FILL = (S.ACTIVE, S.PARTIALLY_FILLED)
_ACCEPT_GUARDS = ("transporter_notified", "slots_available")

RULES: tuple[Rule, ...] = (
    Rule(Trigger.START_BROADCAST, (S.CREATED,), S.BROADCASTING),
    Rule(Trigger.ACTIVATE, (S.BROADCASTING,), S.ACTIVE, guards=("deadline_in_future",), sets_deadline=True,
         announces=(Topic.OFFERED,)),
    Rule(Trigger.EXTEND, (S.BROADCASTING, S.ACTIVE, S.PARTIALLY_FILLED), None, guards=("deadline_later",),
         sets_deadline=True, announces=(Topic.EXTENDED,)),
    Rule(Trigger.ACCEPT, _OPEN_FOR_FILL, S.FULLY_FILLED, guards=_ACCEPT_GUARDS, when="fills_all", fill=1,
         announces=(Topic.FULLY_FILLED,)),
    Rule(Trigger.ACCEPT, _OPEN_FOR_FILL, S.PARTIALLY_FILLED, guards=_ACCEPT_GUARDS, unless="fills_all", fill=1),
    Rule(Trigger.RELEASE, (S.PARTIALLY_FILLED,), S.ACTIVE, guards=("holds_slots",), when="empties", fill=-1),
    Rule(Trigger.RELEASE, (S.PARTIALLY_FILLED,), S.PARTIALLY_FILLED, guards=("holds_slots",), unless="empties",
         fill=-1),
    # From fully_filled a release opens the broadcast again: offered anew to those who dropped it.
    Rule(Trigger.RELEASE, (S.FULLY_FILLED,), S.ACTIVE, guards=("holds_slots",), when="empties", fill=-1,
         announces=(Topic.OFFERED,)),
    Rule(Trigger.RELEASE, (S.FULLY_FILLED,), S.PARTIALLY_FILLED, guards=("holds_slots",), unless="empties",
         fill=-1, announces=(Topic.OFFERED,)),
    Rule(Trigger.START_TRIP, (S.FULLY_FILLED,), S.IN_PROGRESS),
    Rule(Trigger.START_TRIP, (S.PARTIALLY_FILLED,), S.IN_PROGRESS, guards=("trip_fill_policy",),
         announces=(Topic.CLOSED,)),
    Rule(Trigger.COMPLETE, (S.IN_PROGRESS,), S.COMPLETED, announces=(Topic.COMPLETED,)),
    Rule(Trigger.CANCEL, (S.CREATED, S.BROADCASTING, S.ACTIVE, S.PARTIALLY_FILLED, S.FULLY_FILLED), S.CANCELLED,
         announces=(Topic.CANCELLED,)),
    Rule(Trigger.EXPIRE, (S.CREATED, S.BROADCASTING, S.ACTIVE, S.PARTIALLY_FILLED), S.EXPIRED,
         guards=("deadline_passed",), announces=(Topic.EXPIRED,)),
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
            "=" if rule.dest is None else rule.dest.value,
            conditions=[*rule.guards, *([rule.when] if rule.when else [])],
            unless=[rule.unless] if rule.unless else [],
        )
    return machine


MACHINE = build_machine()
"""The one machine of the process."""


class Branch(NamedTuple):
    """One destination of a route: taken when branch ``name`` tests ``expected`` (always when
    ``name`` is ``None``), announcing the customer's state change and ``announces``."""

    name: str | None
    expected: bool
    dest: S
    announces: tuple[Topic, ...]


@dataclass(frozen=True)
class Route:
    """Where ``trigger`` leads from one state: the guards to pass, the branches to pick from (the
    first that matches wins, in table order) and the effects every branch shares."""

    guards: tuple[str, ...]
    branches: tuple[Branch, ...]
    fill: int = 0
    sets_deadline: bool = False


def _compile(machine: Machine, rules: tuple[Rule, ...]) -> dict[tuple[Trigger, S], Route]:
    """Flatten the machine's events into a dict keyed by (trigger, from-state), with each rule's
    effects (the machine keeps a (trigger, state)'s candidates in the order the rules added them)."""
    by_source: dict[tuple[Trigger, S], list[Rule]] = {}
    for rule in rules:
        for source in rule.sources:
            by_source.setdefault((rule.trigger, source), []).append(rule)
    routes: dict[tuple[Trigger, S], Route] = {}
    for name, event in machine.events.items():
        trigger = Trigger(name)
        for state_name, candidates in event.transitions.items():
            state = S(state_name)
            guards: list[str] = []
            branches: list[Branch] = []
            for candidate, rule in zip(candidates, by_source[(trigger, state)], strict=True):
                branch: tuple[str | None, bool] = (None, True)
                for condition in candidate.conditions:
                    cond_name = str(condition.func)
                    if cond_name in BRANCHES:
                        branch = (cond_name, bool(condition.target))
                    elif cond_name not in guards:
                        guards.append(cond_name)
                branches.append(Branch(*branch, S(candidate.dest), rule.announces))
            first = by_source[(trigger, state)][0]
            routes[(trigger, state)] = Route(tuple(guards), tuple(branches), first.fill, first.sets_deadline)
    return routes


ROUTES: Mapping[tuple[Trigger, S], Route] = _compile(MACHINE, RULES)
"""The table as a lookup for the decision path."""

REOFFERS: frozenset[tuple[Trigger, S]] = frozenset(
    (rule.trigger, source) for rule in RULES if Topic.OFFERED in rule.announces for source in rule.sources)
"""(trigger, from-state) pairs whose transition announces the offer again to the notified transporters."""


DEADLINE_TRIGGERS: frozenset[Trigger] = frozenset(rule.trigger for rule in RULES if rule.sets_deadline)
"""The triggers whose command brings the broadcast's new deadline (``Rule.sets_deadline``)."""


def topics_of(trigger: Trigger, source: S, dest: S) -> tuple[Topic, ...]:
    """What the transition ``trigger`` from ``source`` to ``dest`` announces, in order: the customer's
    state change, then the rule's topics. ``KeyError`` for an edge that is not in the table."""
    for branch in ROUTES[(trigger, source)].branches:
        if branch.dest is dest:
            return (Topic.STATE_CHANGED, *branch.announces)
    raise KeyError((trigger, source, dest))


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
    shared: dict[tuple[Trigger, S], tuple[tuple[str, ...], int, bool]] = {}
    problems: list[str] = []
    for rule in rules:
        for source in rule.sources:
            edges[source].add(rule.dest_from(source))
            # Branches of one trigger share their guards and effects: the decision checks and applies
            # them whichever branch it picks.
            first = shared.setdefault((rule.trigger, source), (rule.guards, rule.fill, rule.sets_deadline))
            if first[0] != rule.guards:
                problems.append(f"{rule.trigger} from {source} has branches with different guards")
            if first[1:] != (rule.fill, rule.sets_deadline):
                problems.append(f"{rule.trigger} from {source} has branches with different effects")
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
