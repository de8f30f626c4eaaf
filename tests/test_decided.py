"""PostgreSQL's decided statements (a transition written with no read first, its from-states and guards
generated from the table) against the table: the guards' SQL against the Python guards, every trigger
from every state against the in-memory reference, and racing commands applied exactly once."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import START, ManualClock
from postgres_server import PostgresServer
from sqlalchemy import select, text

from broadcast_lifecycle import (
    BroadcastLifecycle,
    BroadcastSnapshot,
    BroadcastStatus,
    CommandContext,
    CommandResult,
    IdempotencyKeyReused,
    KindConfig,
    KindHandle,
    Topic,
    TransitionRefused,
    Trigger,
    WritePath,
)
from broadcast_lifecycle.guards import BRANCH_TESTS, GUARDS
from broadcast_lifecycle.lifecycle import ROUTES, allowed_from, topics_of
from broadcast_lifecycle.stores.base import Change
from broadcast_lifecycle.stores.memory import InMemoryStore
from broadcast_lifecycle.stores.schema import history_table, outbox_table
from broadcast_lifecycle.stores.sql.decided import decided_layout
from broadcast_lifecycle.stores.sql.postgresql_decided import BRANCH_SQL, GUARD_SQL, HOLDER_GUARDS
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

pytestmark = pytest.mark.postgres

KINDS = (KindConfig("booking"), KindConfig("order", allow_partial_trip=True))
MINUTE = timedelta(minutes=1)
_databases = itertools.count(1)


@pytest.fixture
def pg_store(postgres_server: PostgresServer, clock: ManualClock) -> Iterator[SQLAlchemyStore]:
    """A store on a fresh database of the suite's PostgreSQL."""
    store = SQLAlchemyStore.from_url(postgres_server.create_database(f"decided_{next(_databases)}"))
    store.create_all(KINDS)
    yield store
    store.close()


def test_the_layouts_cover_the_table() -> None:
    """Every trigger but create has a statement, with every from-state of the table and its route (guards,
    branches with their destinations, fill) but those that re-offer while moving the holding (release from
    fully_filled: the general path); each topic is announced on exactly the edges the table announces it
    on, and the transporter's holding is read where a guard or the fill needs it."""
    decided = {t for t in Trigger if decided_layout(t) is not None}
    assert decided == set(Trigger) - {Trigger.CREATE}
    for trigger in decided:
        layout = decided_layout(trigger)
        assert layout is not None
        reoffering_moves = {s for s in allowed_from(trigger) if ROUTES[(trigger, s)].fill and any(
            Topic.OFFERED in branch.announces for branch in ROUTES[(trigger, s)].branches)}
        assert set(layout.sources) == allowed_from(trigger) - reoffering_moves
        edges: dict[Topic, set[tuple[BroadcastStatus, BroadcastStatus]]] = {}
        for state, route in layout.sources.items():
            assert route == ROUTES[(trigger, state)]
            for branch in route.branches:
                for topic in topics_of(trigger, state, branch.dest)[1:]:
                    edges.setdefault(topic, set()).add((state, branch.dest))
        assert {topic: set(found) for topic, found in layout.announced.items()} == edges
        assert layout.holder is (trigger in (Trigger.ACCEPT, Trigger.RELEASE))
    release = decided_layout(Trigger.RELEASE)
    assert release is not None and set(release.sources) == {BroadcastStatus.PARTIALLY_FILLED}


def _guard_cases() -> Iterator[tuple[str, BroadcastStatus, datetime | None, datetime | None, datetime | None, bool]]:
    now = START
    times = (None, now - MINUTE, now, now + MINUTE, now + 2 * MINUTE)
    for name in GUARD_SQL:
        if name in HOLDER_GUARDS or name == "slots_available":
            continue  # on the holding and the fill: see _fill_cases
        for status in (BroadcastStatus.ACTIVE, BroadcastStatus.PARTIALLY_FILLED, BroadcastStatus.FULLY_FILLED):
            for expires_at in times:
                for given in times:
                    for default in (None, now + 3 * MINUTE):
                        for partial in (False, True):
                            yield name, status, expires_at, given, default, partial


def _in_sql(conn: Any, condition: str, params: dict[str, Any]) -> bool:
    """``condition`` (a guard's or a branch's SQL) on a locked row ``o`` and a recipient row ``h`` made of
    ``params`` (a NULL condition counts as false, as in the statement's WHERE)."""
    return bool(conn.execute(text(
        f"SELECT COALESCE(({condition}), false) FROM (SELECT CAST(:status AS TEXT) AS status, "
        "CAST(:expires_at AS TIMESTAMPTZ) AS expires_at, CAST(:filled AS INTEGER) AS slots_filled, "
        "CAST(:requested AS INTEGER) AS slots_requested) o, (SELECT CAST(:holding AS INTEGER) AS slots_held) h"),
        {"filled": 1, "requested": 2, "holding": None, "slots": 1, **params}).scalar_one())


def test_the_guards_sql_allows_what_the_python_guards_allow(pg_store: SQLAlchemyStore) -> None:
    """Every guard with SQL on the deadline or the state, on a grid of states, deadlines (none, past, now,
    future) and policies, is true in SQL exactly when the Python guard allows (the deadline picked as the
    service picks it)."""
    cases = list(_guard_cases())
    disagree = []
    with pg_store.engine.connect() as conn:
        for name, status, expires_at, given, default, partial in cases:
            snapshot = BroadcastSnapshot("booking", 1, "c1", status, 2, 1, 2, START, START, expires_at)
            deadline = given if given is not None else expires_at if expires_at is not None else default
            ctx = CommandContext(now=START, deadline=deadline, allow_partial_trip=partial)
            in_python = GUARDS[name](snapshot, ctx) is None
            in_sql = _in_sql(conn, GUARD_SQL[name], {
                "status": status.value, "expires_at": expires_at, "at": START, "deadline": given,
                "default_deadline": default, "allow_partial_trip": partial})
            if in_sql is not in_python:
                disagree.append((name, status.value, expires_at, given, default, partial, in_python))
    assert disagree == [] and len(cases) > 500


def test_the_fill_guards_and_branches_sql_agree_with_python(pg_store: SQLAlchemyStore) -> None:
    """Every guard on the holding or the fill (transporter_notified, slots_available, holds_slots) and every
    branch (fills_all, empties), on a grid of slots requested, filled, asked for and held (never notified
    too), is true in SQL exactly when the Python guard allows or the branch test holds."""
    checks: dict[str, tuple[str, Callable[[BroadcastSnapshot, CommandContext], bool]]] = {
        **{name: (GUARD_SQL[name], lambda s, c, name=name: GUARDS[name](s, c) is None)  # type: ignore[misc]
           for name in (*HOLDER_GUARDS, "slots_available")},
        **{name: (BRANCH_SQL[name], BRANCH_TESTS[name]) for name in BRANCH_SQL},
    }
    disagree, count = [], 0
    with pg_store.engine.connect() as conn:
        for name, (condition, in_python) in checks.items():
            for requested in (1, 2, 3):
                for filled in range(requested + 1):
                    for slots in (1, 2, 3):
                        for holding in (None, 0, 1, 2, 3):
                            snapshot = BroadcastSnapshot("booking", 1, "c1", BroadcastStatus.PARTIALLY_FILLED,
                                                         requested, filled, 2, START, START, None)
                            ctx = CommandContext(now=START, slots=slots, transporter_id="t1", holding=holding)
                            expected = bool(in_python(snapshot, ctx))
                            got = _in_sql(conn, condition, {"status": "partially_filled", "expires_at": None,
                                                            "filled": filled, "requested": requested,
                                                            "slots": slots, "holding": holding})
                            count += 1
                            if got is not expected:
                                disagree.append((name, requested, filled, slots, holding, expected))
    assert disagree == [] and count > 500


SECOND = timedelta(seconds=1)


def _notify_later(handle: KindHandle, entity_id: Any, clock: ManualClock) -> object:
    """Notify t0 a second after the others: first by id, last in notification order."""
    clock.advance(SECOND)
    return handle.notify_more(entity_id, ["t0"])


_STEPS: dict[str, Callable[[KindHandle, Any, ManualClock], object]] = {
    "broadcast": lambda h, i, c: h.start_broadcast(i, ["t1", "t2", "t3"]),
    "broadcast to t1, t2": lambda h, i, c: h.start_broadcast(i, ["t1", "t2"]),
    "activate": lambda h, i, c: h.activate(i, ttl=60 * MINUTE),
    "activate briefly": lambda h, i, c: h.activate(i, ttl=MINUTE),
    "notify t0": _notify_later,
    "t1 accepts": lambda h, i, c: h.accept(i, "t1"),
    "t1 accepts 2": lambda h, i, c: h.accept(i, "t1", slots=2),
    "t2 accepts": lambda h, i, c: h.accept(i, "t2"),
    "trip": lambda h, i, c: h.start_trip(i),
    "complete": lambda h, i, c: h.complete(i),
    "cancel": lambda h, i, c: h.cancel(i),
    "pass a brief deadline": lambda h, i, c: c.advance(2 * MINUTE),
    "pass the deadline": lambda h, i, c: c.advance(61 * MINUTE),
    "expire": lambda h, i, c: h.expire(i),
}
_OPEN = ["broadcast", "activate", "notify t0"]
_FILLED = [*_OPEN, "t1 accepts", "t2 accepts"]
PLANS: dict[str, tuple[int, list[str]]] = {
    "created": (2, []),
    "broadcasting": (2, ["broadcast"]),
    "active": (2, _OPEN),
    "overdue": (2, ["broadcast", "activate briefly", "notify t0", "pass a brief deadline"]),
    "partially_filled": (2, [*_OPEN, "t1 accepts"]),
    "partially_filled, t1 holding 2": (3, [*_OPEN, "t1 accepts 2"]),
    "fully_filled": (2, _FILLED),
    "fully_filled, t1 holding 2": (2, [*_OPEN, "t1 accepts 2"]),
    "fully_filled past its deadline": (2, [*_FILLED, "pass the deadline"]),
    "fully_filled, every notified holding": (3, ["broadcast to t1, t2", "activate", "t1 accepts 2", "t2 accepts"]),
    "in_progress": (2, [*_FILLED, "trip"]),
    "completed": (2, [*_FILLED, "trip", "complete"]),
    "cancelled": (2, ["cancel"]),
    "expired": (2, [*_OPEN, "pass the deadline", "expire"]),
}
"""Each state a test starts from: the slots requested and the steps that lead there (t1, t2, t3 notified
at start_broadcast, t0 a second after activate; only t1 and t2 where every notified transporter holds)."""
STATES = tuple(PLANS)


def _into(handle: KindHandle, state: str, clock: ManualClock) -> Any:
    """A new broadcast of ``handle`` in ``state`` (a key of :data:`PLANS`)."""
    slots, steps = PLANS[state]
    entity_id = handle.create("c1", slots=slots).id
    for step in steps:
        _STEPS[step](handle, entity_id, clock)
    return entity_id


COMMANDS: dict[str, Callable[[KindHandle, Any], object]] = {
    "start_broadcast": lambda h, i: h.start_broadcast(i, ["t9"], reason="go"),
    "activate": lambda h, i: h.activate(i, ttl=5 * MINUTE),
    "activate (past)": lambda h, i: h.activate(i, expires_at=START - MINUTE),
    "extend": lambda h, i: h.extend(i, ttl=600 * MINUTE),
    "extend (earlier)": lambda h, i: h.extend(i, ttl=MINUTE),
    "accept": lambda h, i: h.accept(i, "t2"),
    "accept 2": lambda h, i: h.accept(i, "t3", slots=2),
    "accept (late notified, by another actor, reason)": lambda h, i: h.accept(
        i, "t0", actor="ops", reason="by phone", metadata={"call": 3}),
    "accept (not notified)": lambda h, i: h.accept(i, "t9"),
    "release": lambda h, i: h.release(i, "t1"),
    "release 2": lambda h, i: h.release(i, "t1", slots=2),
    "release (holds none)": lambda h, i: h.release(i, "t3", reason="changed plans"),
    "release (not notified)": lambda h, i: h.release(i, "t9"),
    "start_trip": lambda h, i: h.start_trip(i, metadata={"truck": 7}),
    "complete": lambda h, i: h.complete(i),
    "cancel": lambda h, i: h.cancel(i, actor="c1", reason="plans changed"),
    "expire": lambda h, i: h.expire(i),
}


def _outcomes(lifecycle: BroadcastLifecycle, clock: ManualClock) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """Each command on a broadcast in each state, per kind: the refusal (type, code, from-state) or the
    new state, then the broadcast's state, version, history and events as the store keeps them."""
    found: dict[tuple[str, str, str], tuple[Any, ...]] = {}
    for kind in KINDS:
        handle = lifecycle.kind(kind.name)
        for state in STATES:
            for name, command in COMMANDS.items():
                entity_id = _into(handle, state, clock)
                try:
                    result = command(handle, entity_id)
                    outcome: tuple[Any, ...] = ("applied", result.snapshot.status.value,  # type: ignore[attr-defined]
                                                [(e.name, [r.id for r in e.recipients], e.reason)
                                                 for e in result.events])  # type: ignore[attr-defined]
                except TransitionRefused as refused:
                    outcome = (type(refused).__name__, refused.code, refused.from_state)
                after = handle.get(entity_id)
                history = [(h.from_status, h.to_status, h.trigger, h.actor, h.reason, h.metadata)
                           for h in handle.history(entity_id)]
                holdings = [(r.transporter_id, r.slots_held, r.response) for r in handle.recipients(entity_id)]
                found[(kind.name, state, name)] = (*outcome, after.status.value, after.slots_filled, after.version,
                                                   history, holdings)
    return found


def test_every_trigger_from_every_state_agrees_with_the_reference(pg_store: SQLAlchemyStore) -> None:
    """Each trigger, with and without a refusing guard, from every state (an overdue one too; accept and
    release with various slots, holders and transporters never notified), on PostgreSQL's statements gives
    the in-memory store's outcome: the same refusal type, code and from-state, or the same new state, fill
    and events (recipients in order); the same history and holdings either way. Only the expiry of an
    overdue broadcast and the re-offering release are written on the general path: every other change is
    its command's statement."""
    memory_clock, pg_clock = ManualClock(), ManualClock()
    expected = _outcomes(BroadcastLifecycle(InMemoryStore(), clock=memory_clock, kinds=KINDS), memory_clock)
    paths: set[WritePath] = set()
    lifecycle = BroadcastLifecycle(pg_store, clock=pg_clock, kinds=KINDS)
    original, general = lifecycle._decide_in_statement, pg_store.apply
    in_general: list[tuple[Trigger, BroadcastStatus]] = []

    def counted(*args: Any) -> Any:
        done = original(*args)
        paths.add(WritePath.IN_PLACE if done is not None and not hasattr(done, "holding") else WritePath.GENERAL)
        return done

    def general_apply(change: Change, *args: Any) -> Any:
        in_general.append((change.decision.trigger, change.decision.from_status))
        return general(change, *args)

    lifecycle._decide_in_statement = counted  # type: ignore[method-assign,assignment]
    pg_store.apply = general_apply  # type: ignore[method-assign,assignment]
    got = _outcomes(lifecycle, pg_clock)
    assert {k: v for k, v in got.items() if expected[k] != v} == {}
    assert paths == {WritePath.IN_PLACE, WritePath.GENERAL}  # statements that applied and statements that refused
    assert {outcome[0] for outcome in got.values()} == {"applied", "InvalidTransition", "TransitionRefused"}
    assert {edge for edge in in_general if edge[0] is not Trigger.EXPIRE} == {
        (Trigger.RELEASE, BroadcastStatus.FULLY_FILLED)}
    applied = {(state, name) for (_, state, name), outcome in got.items() if outcome[0] == "applied"}
    assert {("fully_filled", "release"), ("fully_filled, t1 holding 2", "release"), ("partially_filled", "accept"),
            ("active", "accept 2"), ("fully_filled past its deadline", "release"),
            ("fully_filled, every notified holding", "release")} <= applied


def test_a_refusal_is_worded_from_the_row_the_statement_found(pg_store: SQLAlchemyStore, clock: ManualClock) -> None:
    """A refused statement writes nothing; the refusal names the state the row was in and the guard's code."""
    bookings = BroadcastLifecycle(pg_store, clock=clock, kinds=KINDS).kind("booking")
    entity_id = _into(bookings, "partially_filled", clock)
    before = (bookings.get(entity_id), bookings.history(entity_id), pg_store.pending_events(100))
    with pytest.raises(TransitionRefused) as refused:
        bookings.start_trip(entity_id)
    assert (refused.value.code, refused.value.from_state) == ("trip_fill_policy", "partially_filled")
    assert (bookings.get(entity_id), bookings.history(entity_id), pg_store.pending_events(100)) == before


def test_a_refused_statement_is_decided_again_at_the_statement_s_time(pg_store: SQLAlchemyStore,
                                                                      clock: ManualClock) -> None:
    """The row a refused statement found is decided at the time the statement ran, not at a later reading
    of the clock: an expire refused before the deadline stays refused (it is not applied a moment later)."""
    readings: list[datetime] = []

    def late_clock() -> datetime:  # each reading after the first is two minutes later: past the deadline
        readings.append(clock() + 2 * MINUTE * len(readings))
        return readings[-1]

    bookings = BroadcastLifecycle(pg_store, clock=clock, kinds=KINDS).kind("booking")
    entity_id = bookings.create("c1", slots=1).id
    bookings.start_broadcast(entity_id, ["t1"])
    bookings.activate(entity_id, ttl=MINUTE)
    late = BroadcastLifecycle(pg_store, clock=late_clock, kinds=KINDS).kind("booking")
    with pytest.raises(TransitionRefused) as refused:
        late.expire(entity_id)
    assert (refused.value.code, bookings.get(entity_id).status.value, len(readings)) == (
        "deadline_passed", "active", 1)


def _race(entity_id: Any, commands: list[Callable[[Any], object]]) -> list[object]:
    """Run ``commands`` on ``entity_id`` in threads released together; what each returned or the refusal."""
    barrier = threading.Barrier(len(commands))
    results: list[object] = []

    def run(command: Callable[[Any], object]) -> None:
        barrier.wait()
        try:
            results.append(command(entity_id))
        except TransitionRefused as refused:
            results.append(refused)

    threads = [threading.Thread(target=run, args=(command,)) for command in commands]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("rivals", [("cancel", "start_trip"), ("cancel", "cancel")])
def test_racing_commands_on_one_row_apply_exactly_once(pg_store: SQLAlchemyStore, clock: ManualClock,
                                                       rivals: tuple[str, str]) -> None:
    """Eight threads released together on one fully filled booking, half of them with each command: exactly
    one applies (one history row, one state change in the outbox), every other is refused by the state."""
    lifecycle = BroadcastLifecycle(pg_store, clock=clock, kinds=KINDS)
    bookings = lifecycle.kind("booking")
    commands = {"cancel": bookings.cancel, "start_trip": bookings.start_trip}
    for _ in range(5):
        entity_id = _into(bookings, "fully_filled", clock)
        results = _race(entity_id, [commands[rivals[i % 2]] for i in range(8)])
        won = [r for r in results if not isinstance(r, TransitionRefused)]
        assert len(won) == 1 and len(results) == 8
        assert all(r.code == "invalid_transition" for r in results if isinstance(r, TransitionRefused))
        assert [h.version for h in bookings.history(entity_id)] == [1, 2, 3, 4, 5, 6]
        h, o = history_table.c, outbox_table.c
        with pg_store.engine.connect() as conn:
            last = conn.execute(select(h.to_status).where(h.entity_id == str(entity_id), h.version == 6)).scalar_one()
            changes = conn.execute(select(o.status).where(
                o.entity_id == str(entity_id), o.version == 6, o.topic == Topic.STATE_CHANGED.value)).scalars().all()
        assert [last] == changes == [bookings.get(entity_id).status.value]


def test_a_keyed_command_records_its_outcome_in_its_statement(pg_store: SQLAlchemyStore, clock: ManualClock) -> None:
    """A keyed transition is decided by its statement, which records the key with the outcome: a retry
    replays exactly the first result (times to the microsecond), the same key on other arguments is
    refused, and two threads sending one keyed command apply it once."""
    lifecycle = BroadcastLifecycle(pg_store, clock=clock, kinds=KINDS)
    bookings = lifecycle.kind("booking")
    entity_id = bookings.create("c1", slots=2).id
    steps: list[tuple[str, Callable[[str], CommandResult]]] = [
        ("k-broadcast", lambda key: bookings.start_broadcast(entity_id, ["t1"], actor="c1", idempotency_key=key)),
        ("k-activate", lambda key: bookings.activate(entity_id, ttl=5 * MINUTE, actor="ops", idempotency_key=key)),
        ("k-cancel", lambda key: bookings.cancel(entity_id, actor="c1", reason="r", idempotency_key=key)),
    ]
    for key, command in steps:
        first = command(key)
        assert first.path is WritePath.IN_PLACE
        clock.advance(MINUTE)
        again = command(key)
        assert (again.path, again.snapshot, again.events) == (WritePath.REPLAYED, first.snapshot, ())
        recorded = pg_store.recall(key)
        assert recorded is not None and recorded.snapshot == first.snapshot
    assert pg_store.recall("k-activate").actor == "ops"  # type: ignore[union-attr]
    with pytest.raises(IdempotencyKeyReused):
        bookings.cancel(entity_id, actor="c1", reason="other", idempotency_key="k-cancel")
    raced = _into(bookings, "active", clock)
    results = _race(raced, [lambda i: bookings.cancel(i, actor="c1", idempotency_key="k-race")] * 4)
    assert {r.snapshot.version for r in results} == {4}  # type: ignore[attr-defined]
    assert sorted(r.path.value for r in results) == ["in_place", "replayed", "replayed", "replayed"]  # type: ignore[attr-defined]
    assert [h.trigger for h in bookings.history(raced)].count("cancel") == 1


def test_a_command_pinned_to_its_time_keeps_every_other_field() -> None:
    """The decided path pins a command to the statement's time with a quick copy: it equals
    ``dataclasses.replace`` on a command whose every field differs from its default."""
    from broadcast_lifecycle.command import Command
    from broadcast_lifecycle.command import pinned_to as _at

    defaults = Command(config=KINDS[0], trigger=Trigger.ACCEPT)
    command = Command(config=KINDS[1], trigger=Trigger.RELEASE, actor="ops", reason="r", metadata={"m": 1},
                      transporter_id="t1", slots=2, recipients=("t2",), deadline=START, ttl=MINUTE, now=START,
                      idempotency_key="k", fingerprint="f")
    assert all(getattr(command, f.name) != getattr(defaults, f.name) for f in dataclasses.fields(Command))
    assert _at(command, START + MINUTE) == dataclasses.replace(command, now=START + MINUTE)


def test_racing_releases_of_one_held_slot_apply_once(pg_store: SQLAlchemyStore, clock: ManualClock) -> None:
    """Four threads release the one slot a transporter holds at once: exactly one applies; each other is refused
    by holds_slots, read on the holder's row as the winner left it (not a CHECK constraint's StoreError)."""
    bookings = BroadcastLifecycle(pg_store, clock=clock, kinds=KINDS).kind("booking")
    def release_t1(key: Any) -> object:
        return bookings.release(key, "t1")

    for _ in range(5):
        entity_id = bookings.create("c1", slots=3).id
        bookings.start_broadcast(entity_id, ["t1", "t2", "t3"])
        bookings.activate(entity_id, ttl=timedelta(hours=1))
        bookings.accept(entity_id, "t1")
        bookings.accept(entity_id, "t2")  # t2's slot keeps it partially filled whoever wins
        results = _race(entity_id, [release_t1] * 4)
        assert sorted(r.code if isinstance(r, TransitionRefused) else "applied" for r in results) == [
            "applied", "holds_slots", "holds_slots", "holds_slots"]
        assert [(r.transporter_id, r.slots_held) for r in bookings.recipients(entity_id)] == [
            ("t1", 0), ("t2", 1), ("t3", 0)]


def test_slot_counts_at_the_integer_limit_are_refused_as_in_memory(pg_store: SQLAlchemyStore,
                                                                   clock: ManualClock) -> None:
    """Slots near 2**31 - 1: an accept asking for more than is open is refused slots_available, worded as the
    in-memory store words it (the guard's arithmetic stays inside INTEGER)."""
    most = 2**31 - 1
    refusals = []
    for store in (pg_store, InMemoryStore()):
        bookings = BroadcastLifecycle(store, clock=clock, kinds=KINDS).kind("booking")
        entity_id = bookings.create("c1", slots=most).id
        bookings.start_broadcast(entity_id, ["t1", "t2"])
        bookings.activate(entity_id, ttl=timedelta(hours=1))
        bookings.accept(entity_id, "t1")
        with pytest.raises(TransitionRefused) as refused:
            bookings.accept(entity_id, "t2", slots=most)
        refusals.append((type(refused.value), refused.value.code, refused.value.reason))
        assert bookings.accept(entity_id, "t2", slots=most - 1).snapshot.status is BroadcastStatus.FULLY_FILLED
    assert refusals[0] == refusals[1] and refusals[0][1] == "slots_available"


def test_a_host_row_referencing_the_broadcast_does_not_block_its_commands(postgres_server: PostgresServer,
                                                                        clock: ManualClock) -> None:
    """A host transaction that inserted a row referencing the booking (a foreign key: it holds KEY SHARE on
    the booking's row) and is still open blocks neither an accept, a release nor a cancel of it (each locks
    the row as a plain UPDATE does)."""
    url = postgres_server.create_database(f"decided_fk_{next(_databases)}")
    store = SQLAlchemyStore.from_url(url, connect_args={"options": "-c lock_timeout=10000"})  # a bound, not timing
    store.create_all(KINDS)
    bookings = BroadcastLifecycle(store, clock=clock, kinds=KINDS).kind("booking")
    entity_id = _into(bookings, "active", clock)
    holder = sorted(r.transporter_id for r in bookings.recipients(entity_id))[0]
    with store.engine.connect() as host:
        host.execute(text("CREATE TABLE host_assignment (booking_id INTEGER REFERENCES bl_broadcasts (id))"))
        host.commit()
        host.execute(text("INSERT INTO host_assignment VALUES (:id)"), {"id": entity_id})  # left uncommitted
        assert bookings.accept(entity_id, holder).snapshot.slots_filled == 1
        assert bookings.release(entity_id, holder).snapshot.slots_filled == 0
        assert bookings.cancel(entity_id, actor="c1").snapshot.status is BroadcastStatus.CANCELLED
        host.rollback()
    store.close()
