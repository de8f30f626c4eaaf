"""Commands queued behind a write to their broadcast, written together (async lifecycle on PostgreSQL).

Each batch must give every command the outcome it would get run alone in arrival order (held to the
in-memory store's), in one transaction (its rows share PostgreSQL's ``xmin``), and lose nobody's
result, error or event.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from async_adapter import async_url
from conftest import START, ManualClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from postgres_server import PostgresServer

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncKindHandle,
    AsyncSQLAlchemyStore,
    BroadcastNotFound,
    CommandResult,
    InMemoryStore,
    InvalidTransition,
    KindConfig,
    OpenBroadcastExists,
    StoreError,
    TransitionRefused,
    Trigger,
    WritePath,
    async_queues,
)
from broadcast_lifecycle.testing import EventRecorder

SLOTS = 5
TRANSPORTERS = [f"t{i:02d}" for i in range(16)]
Step = Callable[[AsyncKindHandle, Any], Awaitable[CommandResult]]

_databases = iter(range(1, 1_000_000))


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database(f"batches_{next(_databases)}")


KINDS = (KindConfig("booking"), KindConfig("order", one_open_per_customer=True))


class Setup:
    """One async lifecycle on a store, with a recorder and a manual clock."""

    def __init__(self, store: Any) -> None:
        self.clock = ManualClock(START)
        self.recorder = EventRecorder()
        self.lifecycle = AsyncBroadcastLifecycle(store, clock=self.clock, kinds=KINDS)
        self.lifecycle.bus.connect(self.recorder)
        self.bookings = self.lifecycle.kind("booking")

    async def open_broadcast(self) -> Any:
        entity_id = (await self.bookings.create("c1", slots=SLOTS)).id
        await self.bookings.start_broadcast(entity_id, TRANSPORTERS)
        await self.bookings.activate(entity_id, ttl=timedelta(minutes=5))
        return entity_id


async def _pg_setup(pg_url: str) -> tuple[Setup, AsyncSQLAlchemyStore]:
    store = AsyncSQLAlchemyStore.from_url(async_url(pg_url))
    await store.create_all(KINDS)
    return Setup(store), store


async def _at_once(setup: Setup, entity_id: Any, steps: list[Step]) -> list[CommandResult | BaseException]:
    """``steps`` started together: the first is written alone, the rest queue behind it."""
    return await asyncio.gather(*(step(setup.bookings, entity_id) for step in steps), return_exceptions=True)


async def _one_by_one(setup: Setup, entity_id: Any, steps: list[Step]) -> list[CommandResult | BaseException]:
    outcomes: list[CommandResult | BaseException] = []
    for step in steps:
        try:
            outcomes.append(await step(setup.bookings, entity_id))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


def _shape(outcome: CommandResult | BaseException) -> tuple[Any, ...]:
    if isinstance(outcome, BaseException):
        assert isinstance(outcome, TransitionRefused), outcome
        return type(outcome).__name__, outcome.code, outcome.from_state, outcome.trigger, outcome.reason
    snap = outcome.snapshot
    return "ok", snap.status, snap.slots_filled, snap.version, [(e.name, e.version, e.recipients)
                                                                 for e in outcome.events]


async def _history(setup: Setup, entity_id: Any) -> list[tuple[Any, ...]]:
    return [(h.from_status, h.to_status, h.trigger, h.actor, h.reason, h.version)
            for h in await setup.bookings.history(entity_id)]


def _events(setup: Setup, entity_id: Any) -> list[tuple[Any, ...]]:
    return [(e.name, e.version, e.status, e.recipients, e.reason) for e in setup.recorder.events
            if e.entity_id == entity_id]


def _accept(transporter: str) -> Step:
    return lambda bookings, entity_id: bookings.accept(entity_id, transporter)


def _cancel(reason: str) -> Step:
    return lambda bookings, entity_id: bookings.cancel(entity_id, actor="c1", reason=reason)


def _release(transporter: str) -> Step:
    return lambda bookings, entity_id: bookings.release(entity_id, transporter)


SCENARIOS = {
    "sixteen accepts on five slots": [_accept(t) for t in TRANSPORTERS],
    "accepts, a cancel, accepts": [_accept("t00"), _accept("t01"), _cancel("changed plans"), _accept("t02"),
                                   _release("t01")],
    "release and take again": [_accept("t00"), _accept("t01"), _release("t00"), _release("t00"), _accept("t00"),
                               _accept("t99")],  # t00 releases twice (the second holds nothing); t99 was never offered
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_batch_gives_each_command_what_running_them_in_turn_gives(pg_url: str, name: str) -> None:
    """Outcomes (results and refusals, worded), history and events match the in-memory store running the
    same commands one after another; the queued ones were written in one transaction."""
    steps = SCENARIOS[name]

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        together = await _at_once(setup, entity_id, steps)
        reference = Setup(InMemoryStore())
        reference_id = await reference.open_broadcast()
        in_turn = await _one_by_one(reference, reference_id, steps)
        assert [_shape(o) for o in together] == [_shape(o) for o in in_turn]
        assert await _history(setup, entity_id) == await _history(reference, reference_id)
        assert _events(setup, entity_id) == _events(reference, reference_id)
        written = [o for o in together[1:] if isinstance(o, CommandResult)]
        assert written and all(o.path is WritePath.BATCHED for o in written)
        assert not isinstance(together[0], BaseException) and together[0].path is not WritePath.BATCHED
        async with await psycopg.AsyncConnection.connect(pg_url.replace("postgresql+psycopg", "postgresql")) as raw:
            rows = await (await raw.execute(
                "SELECT version, xmin::text FROM bl_transition_history WHERE entity_id = %s AND version > 3 "
                "ORDER BY version", (str(entity_id),))).fetchall()
        transactions = [xmin for _, xmin in rows]
        assert len(set(transactions[1:])) == 1 and transactions[0] != transactions[1]  # first alone, then one batch
        await store.close()

    asyncio.run(scenario())


def _start_trip(bookings: AsyncKindHandle, entity_id: Any) -> Awaitable[CommandResult]:
    return bookings.start_trip(entity_id, actor="c1")


def _complete(bookings: AsyncKindHandle, entity_id: Any) -> Awaitable[CommandResult]:
    return bookings.complete(entity_id, actor="c1")


def _extend(bookings: AsyncKindHandle, entity_id: Any) -> Awaitable[CommandResult]:
    return bookings.extend(entity_id, ttl=timedelta(hours=1))


def _expire(bookings: AsyncKindHandle, entity_id: Any) -> Awaitable[CommandResult]:
    return bookings.expire(entity_id)


_offered = st.sampled_from([*TRANSPORTERS[:3], "t99"])  # t99 was never offered the broadcast
_accepts = st.builds(lambda t, n: lambda b, e: b.accept(e, t, slots=n), _offered, st.integers(1, 2))
_releases = st.builds(lambda t, n: lambda b, e: b.release(e, t, slots=n), _offered, st.integers(1, 2))
_steps = st.one_of(  # mostly slots taken and given back; now and then the broadcast moves on or ends
    _accepts, _accepts, _accepts, _releases, _releases,
    st.builds(_cancel, st.sampled_from(["changed plans", "found another"])),
    st.sampled_from([_start_trip, _complete, _extend, _expire]),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_steps, min_size=2, max_size=9), overdue=st.booleans())
def test_any_commands_at_once_match_the_same_commands_in_turn(pg_url: str, steps: list[Step], overdue: bool) -> None:
    """Any mix of commands started together (accepts and releases of several slots, by offered transporters
    or not, cancel, trip, extend, expire), on an open or an overdue broadcast: the same outcomes,
    history and events as the in-memory store running them one after another."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        reference = Setup(InMemoryStore())
        entity_id, reference_id = await setup.open_broadcast(), await reference.open_broadcast()
        if overdue:
            for clock in (setup.clock, reference.clock):
                clock.advance(timedelta(minutes=6))
        together = await _at_once(setup, entity_id, steps)
        in_turn = await _one_by_one(reference, reference_id, steps)
        assert [_shape(o) for o in together] == [_shape(o) for o in in_turn]
        assert await _history(setup, entity_id) == await _history(reference, reference_id)
        assert _events(setup, entity_id) == _events(reference, reference_id)
        assert all(o.path is WritePath.BATCHED for o in together[1:] if isinstance(o, CommandResult))
        await store.close()

    asyncio.run(scenario())


def test_every_command_of_a_batch_on_an_unknown_broadcast_is_told_so(pg_url: str) -> None:
    """A batch on a broadcast that does not exist is not written: each command, run alone, is told so."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        outcomes = await _at_once(setup, 424242, [_accept(t) for t in TRANSPORTERS[:4]])
        assert [type(o) for o in outcomes] == [BroadcastNotFound] * 4
        await store.close()

    asyncio.run(scenario())


def test_commands_with_a_key_or_a_host_guard_do_not_queue(pg_url: str) -> None:
    """A command with an idempotency key, or of a trigger with a host guard, keeps its own transaction."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        keyed: Step = lambda bookings, entity_id: bookings.accept(entity_id, "t01", idempotency_key="k-t01")  # noqa: E731
        outcomes = await _at_once(setup, entity_id, [_accept("t00"), keyed, _accept("t02")])
        assert [o.path if isinstance(o, CommandResult) else o for o in outcomes] == [  # the key: its own statement
            WritePath.IN_PLACE, WritePath.IN_PLACE, WritePath.BATCHED]
        setup.bookings.add_guard(Trigger.ACCEPT, lambda snapshot, ctx: None)
        outcomes = await _at_once(setup, entity_id, [_accept("t03"), _accept("t04")])
        assert [o.path if isinstance(o, CommandResult) else o for o in outcomes] == [WritePath.GENERAL] * 2
        await store.close()

    asyncio.run(scenario())


def _raw(url: str) -> str:
    """The database's URL for the raw driver."""
    return url.replace("postgresql+psycopg", "postgresql")


async def _until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds (each pass lets every ready task run one step)."""
    for _ in range(200_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def _waiting(setup: Setup) -> int:
    """How many commands wait behind a write (any broadcast), and -1 while none is being written."""
    queues = setup.lifecycle._lc._queues
    assert queues is not None
    running = queues._queue._waiting
    return sum(len(waiting) for waiting in running.values()) if running else -1


def test_a_command_cancelled_while_it_waits_is_not_written(pg_url: str) -> None:
    """Cancelled in the queue (before its batch formed): nothing of it is written; the others are."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        async with await psycopg.AsyncConnection.connect(pg_url.replace("postgresql+psycopg", "postgresql")) as raw:
            async with raw.transaction():  # hold the row: the first accept waits for it, the others queue
                await raw.execute("SELECT 1 FROM bl_broadcasts WHERE id = %s FOR UPDATE", (entity_id,))
                first = asyncio.create_task(setup.bookings.accept(entity_id, "t00"))
                await _until(lambda: _waiting(setup) == 0)  # the first is being written
                queued = [asyncio.create_task(setup.bookings.accept(entity_id, t)) for t in ("t01", "t02", "t03")]
                await _until(lambda: _waiting(setup) == 3)
                queued[1].cancel()
            results = await asyncio.gather(first, *queued, return_exceptions=True)
        assert isinstance(results[2], asyncio.CancelledError)
        assert [r.path for r in results if isinstance(r, CommandResult)] == [
            WritePath.IN_PLACE, WritePath.BATCHED, WritePath.BATCHED]
        actors = [h.actor for h in await setup.bookings.history(entity_id) if h.trigger == "accept"]
        assert actors == ["t00", "t01", "t03"]
        assert {r.transporter_id for r in await setup.bookings.recipients(entity_id) if r.slots_held} == {
            "t00", "t01", "t03"}
        assert [e.version for e in setup.recorder.events if e.entity_id == entity_id][-3:] == [4, 5, 6]
        assert _waiting(setup) == -1  # nothing left behind
        await store.close()

    asyncio.run(scenario())


def test_a_command_cancelled_after_its_batch_committed_stands_and_the_relay_announces_it(pg_url: str) -> None:
    """Cancelled once its batch has committed (while another command of it announces its events): its write
    stands, whole; its events wait in the outbox and the relay delivers them; every event leaves once."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        victim: list[asyncio.Task[CommandResult]] = []

        async def cancel_t02(event: Any) -> None:
            if event.entity_id == entity_id and event.version == 5 and victim:  # t01's event: t02 is written too
                victim[0].cancel()

        setup.lifecycle.bus.connect(cancel_t02)
        tasks = [asyncio.create_task(setup.bookings.accept(entity_id, t)) for t in ("t00", "t01", "t02", "t03")]
        victim.append(tasks[2])
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[2], asyncio.CancelledError)
        assert [h.actor for h in await setup.bookings.history(entity_id) if h.trigger == "accept"] == [
            "t00", "t01", "t02", "t03"]
        heard = [e.version for e in setup.recorder.events if e.entity_id == entity_id]
        assert 6 not in heard and heard[-3:] == [4, 5, 7]
        pending = await store.outbox_of("booking", entity_id)
        assert [(e.event.version, e.delivered_at) for e in pending if e.event.version == 6] == [(6, None)]
        setup.clock.advance(timedelta(minutes=1))  # past the relay's grace
        await setup.lifecycle.relay().relay_once()
        events = [e for e in setup.recorder.events if e.entity_id == entity_id]
        assert [e.version for e in events][-1] == 6
        assert len({e.event_id for e in events}) == len(events)
        await store.close()

    asyncio.run(scenario())


def test_a_slow_receiver_holds_up_its_own_command_only(pg_url: str) -> None:
    """A receiver stuck on one batched command's event: the other commands of its batch return (their events
    announced), and a later command on the broadcast goes through; the stuck one returns once released."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        release = asyncio.Event()

        async def stuck_on_t02(event: Any) -> None:
            if event.entity_id == entity_id and event.version == 6:
                await release.wait()

        setup.lifecycle.bus.connect(stuck_on_t02)
        tasks = [asyncio.create_task(setup.bookings.accept(entity_id, t)) for t in ("t00", "t01", "t02", "t03")]
        others = await asyncio.wait_for(asyncio.gather(tasks[0], tasks[1], tasks[3]), timeout=60)  # bound, not timing
        assert [r.snapshot.version for r in others] == [4, 5, 7]
        later = await asyncio.wait_for(setup.bookings.accept(entity_id, "t04"), timeout=60)
        assert later.snapshot.version == 8 and not tasks[2].done()
        release.set()
        assert (await tasks[2]).snapshot.version == 6
        await store.close()

    asyncio.run(scenario())


def test_a_command_cancelled_after_its_batch_formed_but_before_it_began_is_not_written(pg_url: str) -> None:
    """Cancelled between the forming of its batch and the batch's first statement (here by a receiver of the
    first command's event, which runs right after the batch is formed): nothing of it is written."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        tasks: list[asyncio.Task[CommandResult]] = []

        def cancel_waiter(event: Any) -> None:
            if event.entity_id == entity_id and event.version == 4:
                tasks[1].cancel()

        setup.lifecycle.bus.connect(cancel_waiter)
        async with await psycopg.AsyncConnection.connect(_raw(pg_url)) as raw:
            async with raw.transaction():  # hold the row: the first accept waits for it, the others queue
                await raw.execute("SELECT 1 FROM bl_broadcasts WHERE id = %s FOR UPDATE", (entity_id,))
                tasks.append(asyncio.create_task(setup.bookings.accept(entity_id, "t00")))
                await _until(lambda: _waiting(setup) == 0)  # the first is being written
                tasks += [asyncio.create_task(setup.bookings.accept(entity_id, t)) for t in ("t01", "t02")]
                await _until(lambda: _waiting(setup) == 2)
            results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[1], asyncio.CancelledError)
        assert [h.actor for h in await setup.bookings.history(entity_id) if h.trigger == "accept"] == ["t00", "t02"]
        await store.close()

    asyncio.run(scenario())


REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="-")


def test_receivers_of_batched_commands_run_in_their_own_requests_context(pg_url: str) -> None:
    """A receiver sees the contextvars of the request whose command caused the event, batched or not."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        seen: list[tuple[int, str]] = []
        setup.lifecycle.bus.connect(
            lambda event: seen.append((event.version, REQUEST.get())) if event.entity_id == entity_id
            and event.name == "BROADCAST_STATE_CHANGED" else None)

        async def accept_as(transporter: str) -> CommandResult:
            REQUEST.set(f"request-of-{transporter}")
            return await setup.bookings.accept(entity_id, transporter)

        results = await asyncio.gather(*(accept_as(t) for t in ("t00", "t01", "t02")))
        assert [r.path for r in results][1:] == [WritePath.BATCHED] * 2
        assert seen == [(4, "request-of-t00"), (5, "request-of-t01"), (6, "request-of-t02")]
        await store.close()

    asyncio.run(scenario())


def test_a_batch_tracks_recipients_a_command_of_it_adds(pg_url: str) -> None:
    """In one batch: an accept by a transporter not yet offered it (refused), start_broadcast offering it,
    activate, then its accept (taken): the batch knows the recipient its own start_broadcast added."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = (await setup.bookings.create("c2", slots=2)).id
        outcomes = await asyncio.gather(
            setup.bookings.extend(entity_id, ttl=timedelta(hours=1)),  # first, alone (refused: created)
            setup.bookings.accept(entity_id, "t50"),
            setup.bookings.start_broadcast(entity_id, ["t50"]),
            setup.bookings.activate(entity_id, ttl=timedelta(minutes=5)),
            setup.bookings.accept(entity_id, "t50"),
            return_exceptions=True)
        shown = [o.path if isinstance(o, CommandResult) else getattr(o, "code", o) for o in outcomes]
        assert shown == ["invalid_transition", "invalid_transition", WritePath.BATCHED, WritePath.BATCHED,
                         WritePath.BATCHED]
        assert [(r.transporter_id, r.slots_held) for r in await setup.bookings.recipients(entity_id)] == [("t50", 1)]
        await store.close()

    asyncio.run(scenario())


def test_a_batch_on_a_broadcast_that_went_overdue_while_queued(pg_url: str) -> None:
    """The deadline passes while the first command is written: the batch's first command expires the
    broadcast and is refused "expired", the rest as in turn (held to the in-memory store)."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        setup.lifecycle.bus.connect(lambda event: setup.clock.advance(timedelta(minutes=6))
                                    if event.entity_id == entity_id and event.version == 4 else None)
        steps = [_accept(t) for t in ("t00", "t01", "t02", "t03")]
        together = await _at_once(setup, entity_id, steps)
        reference = Setup(InMemoryStore())
        reference_id = await reference.open_broadcast()
        in_turn = await _one_by_one(reference, reference_id, steps[:1])
        reference.clock.advance(timedelta(minutes=6))
        in_turn += await _one_by_one(reference, reference_id, steps[1:])
        assert isinstance(together[1], TransitionRefused) and together[1].code == "expired"
        assert [_shape(o) for o in together] == [_shape(o) for o in in_turn]
        assert await _history(setup, entity_id) == await _history(reference, reference_id)
        assert _events(setup, entity_id) == _events(reference, reference_id)
        await store.close()

    asyncio.run(scenario())


def test_a_batch_a_policy_refuses_is_rolled_back_and_each_command_runs_alone(pg_url: str) -> None:
    """Releases that would open a filled order again while its customer has another open one: the unique
    index refuses the batch's first write, nothing of the batch is written, and each release, run alone,
    is refused OpenBroadcastExists, as in turn."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        orders = setup.lifecycle.kind("order")
        filled = (await orders.create("c1", slots=2)).id
        await orders.start_broadcast(filled, ["t1", "t2", "t3"])
        await orders.activate(filled, ttl=timedelta(hours=1))
        await orders.accept(filled, "t1")
        await orders.accept(filled, "t2")
        await orders.create("c1")  # c1's second order, open
        outcomes = await asyncio.gather(orders.accept(filled, "t3"), orders.release(filled, "t1"),
                                        orders.release(filled, "t2"), return_exceptions=True)
        assert [type(o) for o in outcomes] == [InvalidTransition, OpenBroadcastExists, OpenBroadcastExists]
        snapshot = await orders.get(filled)
        assert (snapshot.status.value, snapshot.slots_filled, snapshot.version) == ("fully_filled", 2, 5)
        await store.close()

    asyncio.run(scenario())


def test_a_commit_whose_outcome_is_unknown_is_not_written_again(pg_url: str) -> None:
    """Every COMMIT that wrote history fails (a deferred constraint trigger; a sequence, which no rollback
    undoes, counts its firings): the first command and each of the batch behind it hear the error, as a
    command alone would, nothing is written, and no command is tried a second time."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        async with await psycopg.AsyncConnection.connect(_raw(pg_url), autocommit=True) as raw:
            await raw.execute("CREATE SEQUENCE tried")
            await raw.execute("CREATE FUNCTION fail_commit() RETURNS trigger AS $$ BEGIN PERFORM nextval('tried'); "
                              "RAISE EXCEPTION 'refused at commit'; END $$ LANGUAGE plpgsql")
            await raw.execute("CREATE CONSTRAINT TRIGGER fail_commit AFTER INSERT ON bl_transition_history "
                              "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_commit()")
            outcomes = await _at_once(setup, entity_id, [_accept(t) for t in ("t00", "t01", "t02", "t03")])
            row = await (await raw.execute("SELECT last_value FROM tried")).fetchone()
        assert [type(o) for o in outcomes] == [StoreError] * 4
        assert len({id(o) for o in outcomes}) == 4
        assert row is not None and row[0] == 2  # the first command's commit, then the batch's: once each
        assert (await setup.bookings.get(entity_id)).slots_filled == 0
        await store.close()

    asyncio.run(scenario())


def test_two_loops_queueing_their_own_commands_fill_a_broadcast_exactly(pg_url: str) -> None:
    """Two threads, each with its own loop, store and lifecycle (as two processes would be), each queueing its
    own commands on one broadcast: across them the row lock orders the batches, which fill it exactly."""

    async def on_one_loop(transporters: list[str], entity_id: Any, barrier: threading.Barrier) -> list[Any]:
        setup, store = await _pg_setup(pg_url)
        await asyncio.to_thread(barrier.wait)
        outcomes = await _at_once(setup, entity_id, [_accept(t) for t in transporters])
        await store.close()
        return [o.path if isinstance(o, CommandResult) else type(o).__name__ for o in outcomes]

    async def opened() -> Any:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        await store.close()
        return entity_id

    entity_id = asyncio.run(opened())
    barrier = threading.Barrier(2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        halves = list(pool.map(lambda ts: asyncio.run(on_one_loop(ts, entity_id, barrier)),
                               [TRANSPORTERS[:8], TRANSPORTERS[8:]]))
    paths = [p for half in halves for p in half]
    assert paths.count("InvalidTransition") + paths.count("TransitionRefused") == 16 - SLOTS
    assert len([p for p in paths if isinstance(p, WritePath)]) == SLOTS


def test_a_batch_holds_at_most_max_batch_commands(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """More commands queued than one batch takes: they are written in batches of MAX_BATCH, in order."""
    monkeypatch.setattr(async_queues, "MAX_BATCH", 2)

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = (await setup.bookings.create("c1", slots=10)).id
        await setup.bookings.start_broadcast(entity_id, TRANSPORTERS)
        await setup.bookings.activate(entity_id, ttl=timedelta(minutes=5))
        outcomes = await _at_once(setup, entity_id, [_accept(t) for t in TRANSPORTERS[:6]])
        assert [o.snapshot.version for o in outcomes if isinstance(o, CommandResult)] == [4, 5, 6, 7, 8, 9]
        async with await psycopg.AsyncConnection.connect(_raw(pg_url)) as raw:
            rows = await (await raw.execute(
                "SELECT xmin::text FROM bl_transition_history WHERE entity_id = %s AND version > 3 ORDER BY version",
                (str(entity_id),))).fetchall()
        sizes = [len(list(group)) for _, group in itertools.groupby(xmin for (xmin,) in rows)]
        assert sizes == [1, 2, 2, 1]  # the first alone, then batches of two
        await store.close()

    asyncio.run(scenario())


def test_marks_of_delivered_events_that_come_together_are_written_together(pg_url: str) -> None:
    """Twenty commands on twenty broadcasts at once, a receiver connected: every event is marked delivered
    (none left for the relay), in fewer statements than commands (the marks queued behind one go in one)."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        setup.lifecycle.bus.connect(_async_receiver)
        ids = [await setup.open_broadcast() for _ in range(20)]
        sync_store, calls = store.sync, []
        real = sync_store.mark_delivered

        def counted(event_ids: Any, at: Any) -> None:
            calls.append(len(event_ids))
            real(event_ids, at)

        sync_store.mark_delivered = counted  # type: ignore[method-assign]
        await asyncio.gather(*(setup.bookings.accept(entity_id, "t00") for entity_id in ids))
        assert sum(calls) == 20 and len(calls) < 20, calls
        assert [e for e in await store.pending_events(100) if e.event.entity_id in ids] == []
        await store.close()

    asyncio.run(scenario())


async def _async_receiver(event: Any) -> None:
    return None


def test_a_mark_that_fails_reaches_every_caller_it_leaves_unmarked(pg_url: str) -> None:
    """The outbox refuses every mark: each command (the first, alone, and those whose marks queued behind
    it) raises the store's error, and their events stay pending for the relay."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        setup.lifecycle.bus.connect(_async_receiver)
        ids = [await setup.open_broadcast() for _ in range(4)]
        async with await psycopg.AsyncConnection.connect(_raw(pg_url), autocommit=True) as raw:
            await raw.execute("CREATE FUNCTION no_marking() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION "
                              "'outbox unavailable'; END $$ LANGUAGE plpgsql")
            await raw.execute("CREATE TRIGGER no_marking BEFORE UPDATE ON bl_outbox FOR EACH ROW "
                              "EXECUTE FUNCTION no_marking()")
        outcomes = await asyncio.gather(*(setup.bookings.accept(entity_id, "t00") for entity_id in ids),
                                        return_exceptions=True)
        assert [type(o) for o in outcomes] == [StoreError] * 4
        assert len({id(o) for o in outcomes}) == 4
        pending = {e.event.entity_id for e in await store.pending_events(100)}
        assert set(ids) <= pending
        await store.close()

    asyncio.run(scenario())


def test_a_batch_that_fails_unexpectedly_answers_each_caller_with_its_error(pg_url: str) -> None:
    """A store that breaks its protocol (one outcome too few): the batch's callers hear the error it caused,
    not a cancellation nobody asked for; the next command on the broadcast goes through."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        real = store.sync.decide_and_apply_batch
        store.sync.decide_and_apply_batch = lambda *a, **k: real(*a, **k)[:-1]  # type: ignore[method-assign]
        outcomes = await _at_once(setup, entity_id, [_accept(t) for t in ("t00", "t01", "t02")])
        assert isinstance(outcomes[0], CommandResult)
        assert [type(o) for o in outcomes[1:]] == [ValueError, ValueError] and outcomes[1] is not outcomes[2]
        store.sync.decide_and_apply_batch = real  # type: ignore[method-assign]
        assert (await setup.bookings.accept(entity_id, "t03")).snapshot.slots_filled == 4
        await store.close()

    asyncio.run(scenario())


def test_a_connection_lost_before_the_batch_began_reruns_each_command(pg_url: str,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The server dropped the store's idle connections (a restart, an idle timeout): the batch's BEGIN fails,
    so nothing of it was written and each of its commands runs again on its own, where each meets a dead
    connection (a StoreError of its own) or goes through; what went through is exactly what is written."""

    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        await asyncio.gather(*(setup.bookings.create(f"c{i}") for i in range(3)))  # several idle connections
        async with await psycopg.AsyncConnection.connect(_raw(pg_url), autocommit=True) as raw:
            await raw.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with caplog.at_level(logging.INFO, logger="broadcast_lifecycle.batch"):
            outcomes = await _at_once(setup, entity_id, [_accept(t) for t in ("t00", "t01", "t02", "t03")])
        assert "3 commands on booking" in caplog.text and "not written together" in caplog.text
        for outcome in outcomes[1:]:
            assert (outcome.path is WritePath.IN_PLACE if isinstance(outcome, CommandResult)
                    else isinstance(outcome, StoreError) and "terminating connection" in str(outcome)), outcome
        written = {h.actor for h in await setup.bookings.history(entity_id) if h.trigger == "accept"}
        assert written == {t for t, o in zip(("t00", "t01", "t02", "t03"), outcomes, strict=True)
                           if isinstance(o, CommandResult)}  # (run again on their own, in no set order)
        await store.close()

    asyncio.run(scenario())


def _eager_factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
    """Python 3.12's ``asyncio.eager_task_factory``, imitated: the coroutine's first step runs inside
    ``create_task``, on the caller's stack (in the caller's greenlet, when called from the bridge)."""
    try:
        first, done, value = coro.send(None), False, None
    except StopIteration as stop:
        first, done, value = None, True, stop.value

    async def rest() -> Any:
        if done:
            return value
        yielded = first
        while True:
            try:
                if yielded is None:
                    await asyncio.sleep(0)
                    result = None
                else:
                    yielded._asyncio_future_blocking = False
                    result = await yielded
            except BaseException as exc:  # handed to the coroutine, as a task would
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(result)
                except StopIteration as stop:
                    return stop.value

    return asyncio.Task(rest(), loop=loop, **kwargs)


def test_queued_commands_work_under_an_eager_task_factory(pg_url: str) -> None:
    """With a task factory that runs a task's first step at once (3.12's eager one), the batch's task starts
    inside the first command's greenlet: every command still gets its own result."""

    async def scenario() -> None:
        asyncio.get_running_loop().set_task_factory(_eager_factory)
        setup, store = await _pg_setup(pg_url)
        setup.lifecycle.bus.connect(_async_receiver)
        entity_id = await setup.open_broadcast()
        outcomes = await asyncio.wait_for(_at_once(setup, entity_id, [_accept(t) for t in TRANSPORTERS[:4]]), 60)
        assert [o.snapshot.version if isinstance(o, CommandResult) else o for o in outcomes] == [4, 5, 6, 7]
        asyncio.get_running_loop().set_task_factory(None)
        await store.close()

    asyncio.run(scenario())


def test_a_loop_closing_with_commands_and_marks_queued_leaves_nothing_behind(pg_url: str) -> None:
    """asyncio.run ends while a batch is stuck in its transaction (its history row's version taken by a
    transaction left open) with another command queued behind it, and while marks queue behind one that
    waits: every task ends, and no queue keeps an entry or a task."""
    left: dict[str, Any] = {}

    async def main() -> None:
        setup, left["store"] = await _pg_setup(pg_url)
        setup.lifecycle.bus.connect(_async_receiver)
        left["lc"] = setup.lifecycle._lc
        held, others = await setup.open_broadcast(), [await setup.open_broadcast() for _ in range(3)]
        raw = left["raw"] = await psycopg.AsyncConnection.connect(_raw(pg_url), autocommit=True)
        blocker = left["blocker"] = await psycopg.AsyncConnection.connect(_raw(pg_url))
        await blocker.execute(  # version 5 (the batch's first) taken, uncommitted: its INSERT waits on the index
            "INSERT INTO bl_transition_history (kind, entity_id, from_status, to_status, trigger, meta, at, version) "
            "VALUES ('booking', %s, 'active', 'partially_filled', 'accept', '{}', now(), 5)", (str(held),))
        await raw.execute("CREATE FUNCTION wait_mark() RETURNS trigger AS $$ BEGIN "
                          "PERFORM pg_advisory_xact_lock(42); RETURN NEW; END $$ LANGUAGE plpgsql")
        await raw.execute("CREATE TRIGGER wait_mark BEFORE UPDATE ON bl_outbox FOR EACH ROW "
                          "EXECUTE FUNCTION wait_mark()")
        await raw.execute("SELECT pg_advisory_lock(42)")  # every mark waits
        left["tasks"] = [asyncio.create_task(setup.bookings.accept(held, t)) for t in ("t00", "t01", "t02")]
        await _until(lambda: len(setup.lifecycle._lc._queues._queue._groups) == 1)  # type: ignore[union-attr]
        left["tasks"] += [asyncio.create_task(setup.bookings.accept(held, "t03"))]  # behind the stuck batch
        left["tasks"] += [asyncio.create_task(setup.bookings.accept(i, "t00")) for i in others]
        await _until(lambda: _waiting(setup) == 1 and _marks_waiting(setup) == 3)  # t00's mark is stuck itself

    asyncio.run(main())
    assert all(task.done() for task in left["tasks"])
    lc = left["lc"]
    assert lc._queues._queue._waiting == {} and lc._queues._queue._groups == set()
    marks = lc._marks.__self__._queue
    assert marks._waiting == {} and marks._groups == set()


def _marks_waiting(setup: Setup) -> int:
    """How many marks wait behind one being written."""
    marks: Any = setup.lifecycle._lc._marks
    return sum(len(waiting) for waiting in marks.__self__._queue._waiting.values())
