"""The transition table: its soundness checks, and that ROUTES say what a real ``transitions`` machine does."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from transitions import Machine, MachineError

from broadcast_lifecycle import BroadcastSnapshot, CommandContext, TransitionRefused
from broadcast_lifecycle.decision import decide
from broadcast_lifecycle.errors import InvalidTransition
from broadcast_lifecycle.expiry import EXPIRY_TOPICS
from broadcast_lifecycle.guards import BRANCH_TESTS, GUARDS
from broadcast_lifecycle.lifecycle import (
    BRANCHES,
    INITIAL,
    MACHINE,
    REOFFERS,
    ROUTES,
    RULES,
    Route,
    Rule,
    Trigger,
    allowed_from,
    build_machine,
    table_problems,
    topics_of,
)
from broadcast_lifecycle.states import TERMINAL, BroadcastStatus

S = BroadcastStatus
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
TABLE_TRIGGERS = tuple(t for t in Trigger if t is not Trigger.CREATE)


def _edges(rules: tuple[Rule, ...] = RULES) -> dict[S, set[S]]:
    edges: dict[S, set[S]] = {state: set() for state in S}
    for rule in rules:
        for source in rule.sources:
            edges[source].add(rule.dest_from(source))
    return edges


def _reach(start: S, edges: dict[S, set[S]]) -> set[S]:
    seen = {start}
    frontier = [start]
    while frontier:
        for nxt in edges[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return seen


# -- table checks ----------------------------------------------------------------------------


def test_default_table_has_no_problems() -> None:
    """table_problems() finds nothing wrong with the shipped table."""
    assert table_problems() == []


def test_exactly_one_initial_state() -> None:
    """The machine starts in created, and created is the only state no transition leads into."""
    assert MACHINE.initial == INITIAL.value == "created"
    assert build_machine().initial == INITIAL.value
    targets = {rule.dest_from(source) for rule in RULES for source in rule.sources if rule.dest_from(source) != source}
    assert [state for state in S if state not in targets] == [INITIAL]
    assert Trigger.CREATE not in {rule.trigger for rule in RULES}


def test_terminal_states_are_absorbing() -> None:
    """No row of the table, and no route, leaves completed, cancelled or expired."""
    assert {S.COMPLETED, S.CANCELLED, S.EXPIRED} == TERMINAL
    for rule in RULES:
        assert not set(rule.sources) & TERMINAL, rule
    assert not [key for key in ROUTES if key[1] in TERMINAL]
    for trigger in TABLE_TRIGGERS:
        assert not allowed_from(trigger) & TERMINAL


def test_every_state_is_reachable_and_can_reach_a_terminal_state() -> None:
    """From created every state is reachable, and from every state some terminal state is."""
    edges = _edges()
    assert _reach(INITIAL, edges) == set(S)
    for state in S:
        assert _reach(state, edges) & TERMINAL, state


def test_table_names_only_known_guards_and_branches() -> None:
    """Every guard and branch the table names exists, and no name is both a guard and a branch."""
    for rule in RULES:
        assert set(rule.guards) <= set(GUARDS), rule
        for branch in (rule.when, rule.unless):
            assert branch is None or (branch in BRANCHES and branch in BRANCH_TESTS), rule
    assert not set(GUARDS) & set(BRANCHES)
    assert set(BRANCHES) == set(BRANCH_TESTS)


def test_broken_table_terminal_with_exit_is_reported() -> None:
    """A row leaving a terminal state is reported, naming the state."""
    broken = (*RULES, Rule(Trigger.ACTIVATE, (S.EXPIRED,), S.ACTIVE))
    problems = table_problems(broken)
    assert any("terminal state expired" in p and "active" in p for p in problems), problems


def test_broken_table_branches_with_different_guards_are_reported() -> None:
    """Branches of one trigger from one state must share their guards; a table that differs is reported."""
    odd = Rule(Trigger.ACCEPT, (S.ACTIVE,), S.FULLY_FILLED, guards=("slots_available",), when="fills_all", fill=1)
    assert table_problems((*RULES, odd)) == ["accept from active has branches with different guards"]


def test_broken_table_branches_with_different_effects_are_reported() -> None:
    """Branches of one trigger from one state share their effects (fill, deadline); a table where they differ
    is reported (their announcements may differ: each branch says its own)."""
    odd = Rule(Trigger.RELEASE, (S.FULLY_FILLED,), S.ACTIVE, guards=("holds_slots",), when="empties")
    assert set(table_problems((odd, *RULES))) == {"release from fully_filled has branches with different effects"}


def test_reoffers_are_the_transitions_that_open_the_broadcast_again() -> None:
    """Exactly activate (from broadcasting) and release from fully_filled re-offer: the transitions after which
    the notified transporters may accept again where they could not just before."""
    assert set(REOFFERS) == {(Trigger.ACTIVATE, S.BROADCASTING), (Trigger.RELEASE, S.FULLY_FILLED)}


def test_broken_table_unreachable_state_is_reported() -> None:
    """Dropping the only row into in_progress reports in_progress (and completed) as unreachable."""
    broken = tuple(rule for rule in RULES if rule.trigger is not Trigger.START_TRIP)
    problems = table_problems(broken)
    assert "state in_progress is unreachable from created" in problems
    assert "state completed is unreachable from created" in problems


def test_broken_table_dead_end_is_reported() -> None:
    """Dropping complete leaves in_progress unable to reach a terminal state, and that is reported."""
    broken = tuple(rule for rule in RULES if rule.trigger is not Trigger.COMPLETE)
    problems = table_problems(broken)
    assert "state in_progress cannot reach a terminal state" in problems


def test_broken_table_wrong_initial_is_reported() -> None:
    """Checked from another initial state, the states before it are reported unreachable."""
    problems = table_problems(RULES, initial=S.ACTIVE)
    assert "state created is unreachable from active" in problems
    assert "state broadcasting is unreachable from active" in problems


# -- ROUTES against a fresh transitions machine ------------------------------------------------


@dataclass
class _Model:
    """A model for a ``transitions`` machine whose guard and branch conditions are plain flags."""

    state: str


def _make_model(machine: Machine, state: S, truths: dict[str, bool]) -> _Model:
    model = _Model(state.value)
    for name in (*GUARDS, *BRANCHES):
        setattr(model, name, truths.get(name, True))
    machine.add_model(model, initial=state.value)
    return model


def _fire(machine: Machine, model: _Model, trigger: Trigger) -> bool:
    return machine.events[trigger.value].trigger(model)


def _snapshot(status: S, requested: int, filled: int, expires_at: datetime | None) -> BroadcastSnapshot:
    return BroadcastSnapshot(
        kind="booking", id=1, customer_id="c1", status=status, slots_requested=requested,
        slots_filled=filled, version=3, state_changed_at=NOW - timedelta(hours=1),
        created_at=NOW - timedelta(hours=2), expires_at=expires_at,
    )


def _grid(trigger: Trigger, status: S) -> list[tuple[BroadcastSnapshot, CommandContext]]:
    """Consistent snapshots and contexts over a small grid of slots, holdings, deadlines and policies."""
    expiries: tuple[datetime | None, ...] = (None, NOW + timedelta(hours=1))
    if trigger is Trigger.EXPIRE:
        expiries = (*expiries, NOW, NOW - timedelta(minutes=1))
    deadlines = (None, NOW - timedelta(hours=1), NOW, NOW + timedelta(hours=2))
    cases = []
    for requested, slots, expires_at, deadline, partial in itertools.product(
        range(1, 5), range(1, 5), expiries, deadlines, (False, True)
    ):
        for filled in range(requested + 1):
            snap = _snapshot(status, requested, filled, expires_at)
            for holding in sorted({None, 0, filled}, key=lambda h: -1 if h is None else h):
                ctx = CommandContext(
                    now=NOW, slots=slots, transporter_id="t9", holding=holding,
                    deadline=deadline, allow_partial_trip=partial,
                )
                cases.append((snap, ctx))
    return cases


def _failing(trigger: Trigger, status: S, snap: BroadcastSnapshot, ctx: CommandContext) -> list[str]:
    return [g for g in ROUTES[(trigger, status)].guards if GUARDS[g](snap, ctx) is not None]


def _cases(trigger: Trigger, status: S) -> list[tuple[BroadcastSnapshot, CommandContext]]:
    """The grid cases on which every built-in guard of the route passes."""
    return [(snap, ctx) for snap, ctx in _grid(trigger, status) if not _failing(trigger, status, snap, ctx)]


def test_routes_cover_exactly_the_machine_transitions() -> None:
    """ROUTES has one entry per (trigger, source) of a freshly built machine, and nothing else."""
    machine = build_machine()
    expected = {
        (Trigger(name), S(source)) for name, event in machine.events.items() for source in event.transitions
    }
    assert set(ROUTES) == expected
    assert {(r.trigger, s) for r in RULES for s in r.sources} == expected


@pytest.mark.parametrize(("trigger", "status"), sorted(ROUTES, key=str), ids=str)
def test_route_lands_where_the_machine_lands(trigger: Trigger, status: S) -> None:
    """For every branch outcome, decide() picks the state a real model on the machine moves to."""
    route: Route = ROUTES[(trigger, status)]
    branch_names = sorted({branch.name for branch in route.branches if branch.name is not None})
    machine = build_machine()
    landed: dict[tuple[bool, ...], str] = {}
    for snap, ctx in _cases(trigger, status):
        truths = {name: BRANCH_TESTS[name](snap, ctx) for name in branch_names}
        outcome = tuple(truths[n] for n in branch_names)
        if outcome not in landed:
            model = _make_model(machine, status, truths)
            assert _fire(machine, model, trigger) is True
            landed[outcome] = model.state
        decision = decide(snap, trigger, ctx)
        assert decision.superseded is None
        assert decision.from_status is status
        assert decision.to_status.value == landed[outcome], (snap, ctx, truths)
    # every combination of branch outcomes was exercised
    assert set(landed) == set(itertools.product((False, True), repeat=len(branch_names)))


# A guard that no consistent snapshot of that state can fail: a fully filled trip always may start.
_NEVER_FAILS = {(Trigger.START_TRIP, S.FULLY_FILLED, "trip_fill_policy")}


@pytest.mark.parametrize(("trigger", "status"), sorted(ROUTES, key=str), ids=str)
def test_each_failing_guard_stops_machine_and_decide(trigger: Trigger, status: S) -> None:
    """When exactly one guard is false the machine stays put and decide() refuses with that guard's reason."""
    grid = _grid(trigger, status)
    for guard in ROUTES[(trigger, status)].guards:
        machine = build_machine()
        model = _make_model(machine, status, {guard: False})
        assert _fire(machine, model, trigger) is False
        assert model.state == status.value
        cases = [(snap, ctx) for snap, ctx in grid if _failing(trigger, status, snap, ctx) == [guard]]
        if (trigger, status, guard) in _NEVER_FAILS:
            assert cases == []
            continue
        assert cases, f"no grid case makes only {guard} fail"
        for snap, ctx in cases:
            with pytest.raises(TransitionRefused) as info:
                decide(snap, trigger, ctx)
            assert not isinstance(info.value, InvalidTransition)
            assert info.value.reason == GUARDS[guard](snap, ctx)
            assert (info.value.from_state, info.value.trigger) == (status.value, trigger.value)


@pytest.mark.parametrize("trigger", TABLE_TRIGGERS, ids=str)
def test_triggers_not_in_table_raise_on_both(trigger: Trigger) -> None:
    """Where the machine raises MachineError, decide() raises InvalidTransition naming the allowed states."""
    for status in S:
        if (trigger, status) in ROUTES:
            continue
        machine = build_machine()
        model = _make_model(machine, status, {})
        with pytest.raises(MachineError):
            _fire(machine, model, trigger)
        with pytest.raises(InvalidTransition) as info:
            decide(_snapshot(status, 2, 1, None), trigger, CommandContext(now=NOW, deadline=NOW + timedelta(1)))
        assert info.value.from_state == status.value
        assert info.value.trigger == trigger.value
        assert set(info.value.allowed_from) == {s.value for s in allowed_from(trigger)}


def test_auto_transitions_are_off() -> None:
    """Neither the process machine nor a fresh one adds to_<state> triggers, events or model methods."""
    for machine in (MACHINE, build_machine()):
        assert machine.auto_transitions is False
        assert not [name for name in machine.events if name.startswith("to_")]
        assert set(machine.events) == {t.value for t in TABLE_TRIGGERS}
    machine = build_machine()
    model = _make_model(machine, S.ACTIVE, {})
    assert not [name for name in dir(model) if name.startswith("to_")]
    for state in S:
        assert not hasattr(model, f"to_{state.value}")


def test_expiry_announces_the_same_from_every_state_it_expires() -> None:
    """The sweepers write one row per topic of EXPIRY_TOPICS whatever state they expire: the table's expire rule
    announces exactly that from each of them."""
    assert {topics_of(Trigger.EXPIRE, state, S.EXPIRED) for state in allowed_from(Trigger.EXPIRE)} == {EXPIRY_TOPICS}


def test_stores_name_no_trigger_but_the_ones_with_write_paths_of_their_own() -> None:
    """The store code names only the triggers it has a path of its own for (the in-place accept and release,
    the set-wise expiry): any other command, extend included, goes through the generic write, so adding one
    to the table needs no store code (ast of every module under broadcast_lifecycle/stores)."""
    import ast
    from pathlib import Path

    import broadcast_lifecycle.stores

    named: set[str] = set()
    literals: set[str] = set()
    triggers = {t.value for t in Trigger}
    for path in Path(broadcast_lifecycle.stores.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Trigger":
                named.add(node.attr)
            elif isinstance(node, ast.Constant) and node.value in triggers:
                literals.add(str(node.value))
    assert named <= {"ACCEPT", "RELEASE", "EXPIRE"}, named
    assert literals <= {"accept", "release", "expire", "create"}, literals
