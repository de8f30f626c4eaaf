"""Commands queued behind a write to their broadcast, written together (async lifecycle on PostgreSQL).

Each batch must give every command the outcome it would get run alone in arrival order (held to the
in-memory store's), in one transaction (its rows share PostgreSQL's ``xmin``), and lose nobody's
result, error or event.
"""

from __future__ import annotations

import asyncio
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
    TransitionRefused,
    Trigger,
    WritePath,
)
from broadcast_lifecycle.testing import EventRecorder

SLOTS = 5
TRANSPORTERS = [f"t{i:02d}" for i in range(16)]
Step = Callable[[AsyncKindHandle, Any], Awaitable[CommandResult]]

_databases = iter(range(1, 1_000_000))


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    return postgres_server.create_database(f"batches_{next(_databases)}")


class Setup:
    """One async lifecycle on a store, with a recorder and a manual clock."""

    def __init__(self, store: Any) -> None:
        self.clock = ManualClock(START)
        self.recorder = EventRecorder()
        self.lifecycle = AsyncBroadcastLifecycle(store, clock=self.clock)
        self.lifecycle.bus.connect(self.recorder)
        self.bookings = self.lifecycle.kind("booking")

    async def open_broadcast(self) -> Any:
        entity_id = (await self.bookings.create("c1", slots=SLOTS)).id
        await self.bookings.start_broadcast(entity_id, TRANSPORTERS)
        await self.bookings.activate(entity_id, ttl=timedelta(minutes=5))
        return entity_id


async def _pg_setup(pg_url: str) -> tuple[Setup, AsyncSQLAlchemyStore]:
    store = AsyncSQLAlchemyStore.from_url(async_url(pg_url))
    await store.create_all()
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
        await store.close()

    asyncio.run(scenario())


def test_every_command_of_a_batch_on_an_unknown_broadcast_is_told_so(pg_url: str) -> None:
    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        outcomes = await _at_once(setup, 424242, [_accept(t) for t in TRANSPORTERS[:4]])
        assert [type(o) for o in outcomes] == [BroadcastNotFound] * 4
        await store.close()

    asyncio.run(scenario())


def test_commands_with_a_key_or_a_host_guard_do_not_queue(pg_url: str) -> None:
    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        keyed: Step = lambda bookings, entity_id: bookings.accept(entity_id, "t01", idempotency_key="k-t01")  # noqa: E731
        outcomes = await _at_once(setup, entity_id, [_accept("t00"), keyed, _accept("t02")])
        assert [o.path if isinstance(o, CommandResult) else o for o in outcomes] == [
            WritePath.IN_PLACE, WritePath.GENERAL, WritePath.BATCHED]
        setup.bookings.add_guard(Trigger.ACCEPT, lambda snapshot, ctx: None)
        outcomes = await _at_once(setup, entity_id, [_accept("t03"), _accept("t04")])
        assert [o.path if isinstance(o, CommandResult) else o for o in outcomes] == [WritePath.GENERAL] * 2
        await store.close()

    asyncio.run(scenario())


async def _until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until ``condition`` holds (each pass lets every ready task run one step)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def _waiting(setup: Setup) -> int:
    queues = setup.lifecycle._lc._queues
    assert queues is not None
    return sum(len(waiting) for waiting in queues._waiting.values())


def test_a_command_cancelled_while_it_waits_is_not_written(pg_url: str) -> None:
    async def scenario() -> None:
        setup, store = await _pg_setup(pg_url)
        entity_id = await setup.open_broadcast()
        async with await psycopg.AsyncConnection.connect(pg_url.replace("postgresql+psycopg", "postgresql")) as raw:
            async with raw.transaction():  # hold the row: the first accept waits for it, the others queue
                await raw.execute("SELECT 1 FROM bl_broadcasts WHERE id = %s FOR UPDATE", (entity_id,))
                first = asyncio.create_task(setup.bookings.accept(entity_id, "t00"))
                await _until(lambda: bool(setup.lifecycle._lc._queues and setup.lifecycle._lc._queues._waiting))
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
        assert _waiting(setup) == 0 and not setup.lifecycle._lc._queues._waiting  # type: ignore[union-attr]
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
