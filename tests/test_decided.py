"""PostgreSQL's decided statements (a transition written with no read first, its from-states and guards
generated from the table) against the table: the guards' SQL against the Python guards, every trigger
from every state against the in-memory reference, and racing commands applied exactly once."""

from __future__ import annotations

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
from broadcast_lifecycle.guards import GUARDS
from broadcast_lifecycle.lifecycle import ROUTES, allowed_from
from broadcast_lifecycle.stores.memory import InMemoryStore
from broadcast_lifecycle.stores.schema import history_table, outbox_table
from broadcast_lifecycle.stores.sql.decided import decided_layout
from broadcast_lifecycle.stores.sql.postgresql_decided import GUARD_SQL
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

pytestmark = pytest.mark.postgres

KINDS = (KindConfig("booking"), KindConfig("order", allow_partial_trip=True))
MINUTE = timedelta(minutes=1)


@pytest.fixture
def pg_store(postgres_server: PostgresServer, clock: ManualClock) -> Iterator[SQLAlchemyStore]:
    """A store on a fresh database of the suite's PostgreSQL."""
    store = SQLAlchemyStore.from_url(postgres_server.create_database(f"decided_{id(clock)}"))
    store.create_all(KINDS)
    yield store
    store.close()


def test_the_layouts_cover_the_table() -> None:
    """Each trigger a statement decides has every from-state of the table, with the table's destination
    and guards; the triggers left out are those whose routes branch or move the fill (accept, release)."""
    decided = {t for t in Trigger if decided_layout(t) is not None}
    assert decided == set(Trigger) - {Trigger.CREATE, Trigger.ACCEPT, Trigger.RELEASE}
    for trigger in decided:
        layout = decided_layout(trigger)
        assert layout is not None
        assert set(layout.sources) == allowed_from(trigger)
        for state, (dest, guards) in layout.sources.items():
            route = ROUTES[(trigger, state)]
            assert (dest, guards) == (route.branches[0].dest, route.guards)
            for topic in route.branches[0].announces:
                assert state in layout.announced[topic]


def _guard_cases() -> Iterator[tuple[str, BroadcastStatus, datetime | None, datetime | None, datetime | None, bool]]:
    now = START
    times = (None, now - MINUTE, now, now + MINUTE, now + 2 * MINUTE)
    for name in GUARD_SQL:
        for status in (BroadcastStatus.ACTIVE, BroadcastStatus.PARTIALLY_FILLED, BroadcastStatus.FULLY_FILLED):
            for expires_at in times:
                for given in times:
                    for default in (None, now + 3 * MINUTE):
                        for partial in (False, True):
                            yield name, status, expires_at, given, default, partial


def test_the_guards_sql_allows_what_the_python_guards_allow(pg_store: SQLAlchemyStore) -> None:
    """Every guard with SQL, on a grid of states, deadlines (none, past, now, future) and policies, is true
    in SQL exactly when the Python guard allows (the deadline picked as the service picks it)."""
    cases = list(_guard_cases())
    disagree = []
    with pg_store.engine.connect() as conn:
        for name, status, expires_at, given, default, partial in cases:
            snapshot = BroadcastSnapshot("booking", 1, "c1", status, 2, 1, 2, START, START, expires_at)
            deadline = given if given is not None else expires_at if expires_at is not None else default
            ctx = CommandContext(now=START, deadline=deadline, allow_partial_trip=partial)
            in_python = GUARDS[name](snapshot, ctx) is None
            in_sql = conn.execute(text(
                f"SELECT COALESCE(({GUARD_SQL[name]}), false) FROM (SELECT CAST(:status AS TEXT) AS status, "
                "CAST(:expires_at AS TIMESTAMPTZ) AS expires_at) o"),
                {"status": status.value, "expires_at": expires_at, "at": START, "deadline": given,
                 "default_deadline": default, "allow_partial_trip": partial}).scalar_one()
            if in_sql is not in_python:
                disagree.append((name, status.value, expires_at, given, default, partial, in_python))
    assert disagree == [] and len(cases) > 500


STATES = ("created", "broadcasting", "active", "partially_filled", "fully_filled", "in_progress", "completed",
          "cancelled", "expired", "overdue")


def _into(handle: KindHandle, state: str, clock: ManualClock) -> Any:
    """A new broadcast of ``handle`` in ``state`` (``overdue``: active with its deadline passed)."""
    entity_id = handle.create("c1", slots=2).id
    steps: list[Callable[[], object]] = [
        lambda: handle.start_broadcast(entity_id, ["t1", "t2"]),
        lambda: handle.activate(entity_id, ttl=MINUTE if state == "overdue" else 60 * MINUTE),
        lambda: handle.accept(entity_id, "t1"),
        lambda: handle.accept(entity_id, "t2"),
        lambda: handle.start_trip(entity_id),
    ]
    count = {"created": 0, "broadcasting": 1, "active": 2, "overdue": 2, "partially_filled": 3, "fully_filled": 4,
             "in_progress": 5, "completed": 5, "cancelled": 0, "expired": 2}[state]
    for step in steps[:count]:
        step()
    if state == "completed":
        handle.complete(entity_id)
    elif state == "cancelled":
        handle.cancel(entity_id)
    elif state in ("expired", "overdue"):
        clock.advance(2 * MINUTE if state == "overdue" else 61 * MINUTE)
        if state == "expired":
            handle.expire(entity_id)
    return entity_id


COMMANDS: dict[str, Callable[[KindHandle, Any], object]] = {
    "start_broadcast": lambda h, i: h.start_broadcast(i, ["t9"], reason="go"),
    "activate": lambda h, i: h.activate(i, ttl=5 * MINUTE),
    "activate (past)": lambda h, i: h.activate(i, expires_at=START - MINUTE),
    "extend": lambda h, i: h.extend(i, ttl=600 * MINUTE),
    "extend (earlier)": lambda h, i: h.extend(i, ttl=MINUTE),
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
                found[(kind.name, state, name)] = (*outcome, after.status.value, after.version, history)
    return found


def test_every_trigger_from_every_state_agrees_with_the_reference(pg_store: SQLAlchemyStore) -> None:
    """Each decided trigger, with and without a refusing guard, from every state (an overdue one too),
    on PostgreSQL's statements gives the in-memory store's outcome: the same refusal type, code and
    from-state, or the same new state and events; the same history either way."""
    memory_clock, pg_clock = ManualClock(), ManualClock()
    expected = _outcomes(BroadcastLifecycle(InMemoryStore(), clock=memory_clock, kinds=KINDS), memory_clock)
    paths: set[WritePath] = set()
    lifecycle = BroadcastLifecycle(pg_store, clock=pg_clock, kinds=KINDS)
    original = lifecycle._decide_in_statement

    def counted(*args: Any) -> Any:
        done = original(*args)
        paths.add(WritePath.IN_PLACE if done is not None and not hasattr(done, "holding") else WritePath.GENERAL)
        return done

    lifecycle._decide_in_statement = counted  # type: ignore[method-assign,assignment]
    got = _outcomes(lifecycle, pg_clock)
    assert {k: v for k, v in got.items() if expected[k] != v} == {}
    assert paths == {WritePath.IN_PLACE, WritePath.GENERAL}  # statements that applied and statements that refused
    assert {outcome[0] for outcome in got.values()} == {"applied", "InvalidTransition", "TransitionRefused"}


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
