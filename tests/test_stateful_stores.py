"""The stateful machine of ``test_stateful.py`` on SQLite and PostgreSQL through every write path,
compared after every step with an in-memory reference driven by the same commands and clock.

Each command runs on the reference (a lifecycle on ``InMemoryStore``), then on the store under
test by the machine's current *route* (:data:`ROUTES`): plainly (PostgreSQL: accept and release in
place, other transitions in one statement; SQLite: decided under the write lock), with a reason and
metadata, by another actor or through a lifecycle with host guards (none of them in place), with an
idempotency key, or inside a host ``Session`` (the multi-statement write). Another rule switches
delivery between the after-commit dispatch and a relay reading the outbox (the sweep then skips
reading its events back, and what the test sees are the outbox rows as stored). Creation,
``notify_more`` and the set-wise sweep run in every route.

Both stores must give the same outcome (error type, state, trigger and reason) and, after every
step, the same broadcasts: state, counters, version, deadline, history rows, recipients with their
holdings, and events (ids and event ids aside).

Time budget (``make test`` must stay within minutes on 2 shared cores): SQLite 200 runs and
PostgreSQL 150 runs (:data:`EXAMPLES`) of up to 30 steps, each step several commands and a dozen
reads on both stores; about 10 s and 30 s on an idle machine, three times that under load. A run's
reads are cached until its next command. Both databases are created once per test and emptied
between runs. ``BL_STATEFUL_EXAMPLES=2000`` runs a deep search.
"""

from __future__ import annotations

import inspect
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import START, ManualClock
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule
from postgres_server import PostgresServer
from sqlalchemy.orm import Session
from test_stateful import KINDS, Key, LifecycleMachine, Observed, note

from broadcast_lifecycle import (
    BroadcastError,
    BroadcastEvent,
    BroadcastLifecycle,
    BroadcastSnapshot,
    CommandResult,
    EntityId,
    InMemoryStore,
    InvalidArgument,
    KindConfig,
    KindHandle,
    OutboxRelay,
    SignalBus,
    Topic,
    TransitionRefused,
    Trigger,
)
from broadcast_lifecycle.guards import CommandContext
from broadcast_lifecycle.stores.schema import library_metadata, standalone_metadata
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

ROUTES = ("plain", "reason", "actor", "key", "session", "guarded")
"""How the machine sends its next commands to the store under test (see the module's docstring)."""
RELAY_TIME = START + timedelta(days=1000)
"""The relay's clock: after every event the machine's clock can have stamped."""


def _allow(snapshot: BroadcastSnapshot, ctx: CommandContext) -> str | None:
    """A host guard that never refuses: it only takes the command off the in-place path."""
    del snapshot, ctx
    return None


class Mirror(KindHandle):
    """A kind's commands, sent to the reference and then to the store under test (see
    :meth:`StoreMachine.mirrored`); queries go to the store under test."""

    __slots__ = ("_machine",)

    def __init__(self, machine: StoreMachine, kind: str) -> None:
        super().__init__(machine.lifecycle, machine.lifecycle.kind(kind).config)
        self._machine = machine

    def _send(self, command: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CommandResult:
        return self._machine.mirrored(self.name, command, args, kwargs)

    def create(self, *args: Any, **kwargs: Any) -> CommandResult:
        """See :meth:`KindHandle.create`."""
        return self._send("create", args, kwargs)

    def start_broadcast(self, *args: Any, **kwargs: Any) -> CommandResult:
        """See :meth:`KindHandle.start_broadcast`."""
        return self._send("start_broadcast", args, kwargs)

    def notify_more(self, *args: Any, **kwargs: Any) -> CommandResult:
        """See :meth:`KindHandle.notify_more`."""
        return self._send("notify_more", args, kwargs)

    def activate(self, *args: Any, **kwargs: Any) -> CommandResult:
        """See :meth:`KindHandle.activate`."""
        return self._send("activate", args, kwargs)

    def extend(self, *args: Any, **kwargs: Any) -> CommandResult:
        """See :meth:`KindHandle.extend`."""
        return self._send("extend", args, kwargs)

    def accept(self, *args: Any, **kwargs: Any) -> CommandResult:
        """See :meth:`KindHandle.accept`."""
        return self._send("accept", args, kwargs)

    def release(self, *args: Any, **kwargs: Any) -> CommandResult:
        """See :meth:`KindHandle.release`."""
        return self._send("release", args, kwargs)

    def start_trip(self, *args: Any, **kwargs: Any) -> CommandResult:
        """See :meth:`KindHandle.start_trip`."""
        return self._send("start_trip", args, kwargs)

    def complete(self, *args: Any, **kwargs: Any) -> CommandResult:
        """See :meth:`KindHandle.complete`."""
        return self._send("complete", args, kwargs)

    def cancel(self, *args: Any, **kwargs: Any) -> CommandResult:
        """See :meth:`KindHandle.cancel`."""
        return self._send("cancel", args, kwargs)

    def expire(self, *args: Any, **kwargs: Any) -> CommandResult:
        """See :meth:`KindHandle.expire`."""
        return self._send("expire", args, kwargs)


class StoreMachine(LifecycleMachine):
    """The lifecycle machine on a SQL store, every command mirrored on an in-memory reference."""

    shared_store: ClassVar[SQLAlchemyStore | None] = None
    """The store under test, set up once per database (tables created) and emptied for each run."""

    def __init__(self) -> None:
        self.relay: OutboxRelay | None = None
        self.relayed: list[BroadcastEvent] = []
        super().__init__()
        self.route = "plain"
        self.keys = itertools.count(1)
        self.ref_ids: dict[Key, EntityId] = {}
        """The reference's id of each broadcast the machine tracks (the stores pick ids their own way)."""
        self.paths: set[str] = set()
        self.relay_bus = SignalBus()
        self.relay_bus.connect(self.relayed.append)
        self.seen: dict[Key, Observed] = {}
        """Observations since the last command (reads change nothing: a step reads each broadcast once)."""

    # -- the stores ----------------------------------------------------------------------------

    def make_lifecycle(self, clock: ManualClock, kinds: Sequence[KindConfig]) -> BroadcastLifecycle:
        """A lifecycle on the shared store, emptied; and the reference beside it, on the same clock."""
        store = self.shared_store
        assert store is not None, "the test's fixture sets StoreMachine.shared_store"
        empty(store)
        self.store = store
        self.reference = BroadcastLifecycle(InMemoryStore(), clock=clock, kinds=kinds)
        self.ref_recorder = EventRecorder()
        self.reference.bus.connect(self.ref_recorder)
        tested = BroadcastLifecycle(store, clock=clock, kinds=kinds)
        self.guarded = BroadcastLifecycle(store, bus=tested.bus, clock=clock, kinds=kinds)
        """The same store and bus, with host guards that always pass (so never the in-place path)."""
        for trigger in Trigger:
            if trigger is not Trigger.CREATE:
                self.guarded.add_guard(trigger, _allow)
        return tested

    def commands(self, kind: str) -> KindHandle:
        """Every command goes to both stores (see :meth:`mirrored`)."""
        return Mirror(self, kind)

    def mirrored(self, kind: str, command: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CommandResult:
        """Run ``command`` on the reference, then on the store under test by the current route;
        check both had the same outcome and give the tested store's (result or error)."""
        accepted = inspect.signature(getattr(KindHandle, command)).parameters
        extra = {name: value for name, value in self.route_keywords().items()
                 if name in accepted and not (name == "actor" and command == "expire")}  # the model: "system"
        ref_args = args if command == "create" else (self.ref_ids[(kind, args[0])], *args[1:])
        expected, refused = _outcome(lambda: getattr(self.reference.kind(kind), command)(*ref_args, **kwargs, **extra))
        handle = (self.guarded if self.route == "guarded" else self.lifecycle).kind(kind)
        if self.route == "session":
            with Session(self.store.engine) as session:
                result, error = _outcome(lambda: getattr(handle, command)(*args, **kwargs, **extra, tx=session))
                if error is None or isinstance(error, TransitionRefused):
                    # A refusal wrote nothing, except the expiry of an overdue broadcast, which is in
                    # the host's transaction: this host keeps it (one that rolls back leaves it to the sweeper).
                    session.commit()
        else:
            result, error = _outcome(lambda: getattr(handle, command)(*args, **kwargs, **extra))
        self.deliver_outbox()
        if refused is not None or error is not None:
            same_refusal(refused, error)
            assert error is not None
            raise error
        assert result is not None and expected is not None
        if command == "create":
            self.ref_ids[(kind, result.id)] = expected.id
        ref_id = self.ref_ids[(kind, result.id)]
        assert replace(result.snapshot, id=ref_id) == expected.snapshot
        assert comparable(result.events, ref_id) == comparable(expected.events, ref_id)
        assert result.replayed == expected.replayed
        self.paths.add(f"{command} {result.path.value}")
        note(f"{command} took {result.path.value} ({self.route})")
        return result

    def deliver_outbox(self) -> None:
        """With the relay on: deliver the outbox to the recorder, each transition's events in the order
        the stores dispatch them (the relay keeps no order among events written at the same instant)."""
        self.seen.clear()
        if self.relay is None:
            return
        self.relay.relay_once()
        for event in sorted(self.relayed, key=lambda e: (e.kind, str(e.entity_id), e.version,
                                                         e.topic is not Topic.STATE_CHANGED)):
            self.recorder(event)
        self.relayed.clear()

    def observe(self, key: Key) -> Observed:
        """As the public API shows it (read again only after a command)."""
        if key not in self.seen:
            self.seen[key] = super().observe(key)
        return self.seen[key]

    def route_keywords(self) -> dict[str, Any]:
        """The keywords the current route adds to a command (on both stores; those a command takes)."""
        if self.route == "reason":
            return {"reason": "via the general path", "metadata": {"route": "reason"}}
        if self.route == "actor":
            return {"actor": "operator"}
        if self.route == "key":  # a key is scoped to its actor, so a keyed command names one
            return {"idempotency_key": f"key-{next(self.keys)}", "actor": "keyed-client"}
        return {}

    def sweep(self, now: datetime | None, batch_size: int) -> int:
        """The sweep on both stores; the same count."""
        expected = (self.reference.expire_due(batch_size=batch_size) if now is None
                    else self.reference.expire_due(now, batch_size=batch_size))
        count = super().sweep(now, batch_size)
        self.deliver_outbox()
        assert count == expected
        return count

    # -- rules that pick the path ----------------------------------------------------------------

    @rule(route=st.sampled_from(ROUTES))
    def choose_route(self, route: str) -> None:
        """Send the next commands to the store under test this way."""
        self.route = route

    @rule(key=LifecycleMachine.broadcasts, routes=st.lists(st.sampled_from(ROUTES), min_size=10, max_size=10),
          ending=st.sampled_from(["complete", "cancel", "expire", "sweep", "stay"]))
    def tour(self, key: Key, routes: list[str], ending: str) -> None:
        """Walk a broadcast through the whole lifecycle, each command by its own route: notify, notify
        more, activate, accept, release, accept to full, then end it (or leave it filled)."""
        drawn = iter(routes)

        def step(command: Callable[[], object]) -> None:
            self.route = next(drawn, "plain")
            command()
            self.lifecycle_invariants()
            self.agrees_with_reference()

        step(lambda: self.start_broadcast(key, ["t1", "t2"]))
        step(lambda: self.notify_more(key, ["t3"]))
        step(lambda: self.activate(key, "ttl", 30))
        step(lambda: self.accept(key, "t1", 1))
        step(lambda: self.release(key, "t1", 1))
        step(lambda: self.accept(key, "t2", 1))
        step(lambda: self.accept(key, "t3", max(self.lifecycle.kind(key[0]).get(key[1]).slots_open, 1)))
        if ending == "complete":
            step(lambda: self.start_trip(key))
            step(lambda: self.complete(key))
        elif ending == "cancel":
            step(lambda: self.cancel(key))
        elif ending in ("expire", "sweep"):
            self.move_clock(45)
            step(lambda: self.expire(key) if ending == "expire" else self.expire_due(None, 1000))

    @rule()
    def switch_delivery(self) -> None:
        """Alternate between the after-commit dispatch and a relay that reads the outbox."""
        if self.disconnect_recorder is not None:
            self.disconnect_recorder()
            self.disconnect_recorder = None
            self.relay = OutboxRelay(self.store, self.relay_bus, lambda: RELAY_TIME, grace=timedelta(0))
        else:
            self.disconnect_recorder = self.lifecycle.bus.connect(self.recorder)
            self.relay = None

    # -- the comparison --------------------------------------------------------------------------

    @invariant()
    def agrees_with_reference(self) -> None:
        """Every broadcast reads the same on both stores, and got the same events."""
        for key, ref_id in self.ref_ids.items():
            kind = key[0]
            tested = self.observe(key)
            handle = self.reference.kind(kind)
            expected = Observed(handle.get(ref_id), handle.history(ref_id), handle.recipients(ref_id))
            assert replace(tested.snapshot, id=ref_id) == expected.snapshot
            assert tuple(replace(entry, entity_id=ref_id) for entry in tested.history) == expected.history
            assert tested.recipients == expected.recipients
            assert comparable(self.events_of(key), ref_id) == comparable(
                [e for e in self.ref_recorder.events if (e.kind, e.entity_id) == (kind, ref_id)], ref_id)


def _outcome(call: Callable[[], CommandResult]) -> tuple[CommandResult | None, BroadcastError | None]:
    try:
        return call(), None
    except BroadcastError as error:
        return None, error


def same_refusal(expected: BroadcastError | None, got: BroadcastError | None) -> None:
    """The store under test refused as the reference did: same type, state, trigger and reason."""
    assert type(got) is type(expected), f"reference: {expected!r}; store under test: {got!r}"
    if isinstance(expected, TransitionRefused):
        assert isinstance(got, TransitionRefused)
        assert (got.from_state, got.trigger, got.reason) == (expected.from_state, expected.trigger, expected.reason)
    elif isinstance(expected, InvalidArgument):
        assert str(got) == str(expected)


def comparable(events: Sequence[BroadcastEvent], ref_id: EntityId) -> list[BroadcastEvent]:
    """Events without their event ids, under the reference's id, by version and topic."""
    return sorted((replace(e, event_id="", entity_id=ref_id) for e in events),
                  key=lambda e: (e.version, e.topic.value))


def empty(store: SQLAlchemyStore) -> None:
    """Delete every row of the store's tables (the library's and the standalone one)."""
    tables = [*library_metadata.sorted_tables, *standalone_metadata.sorted_tables]
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "postgresql":
            quote = store.engine.dialect.identifier_preparer.format_table
            conn.exec_driver_sql(f"TRUNCATE {', '.join(quote(table) for table in tables)}")
        else:
            for table in reversed(tables):
                conn.execute(table.delete())


@contextmanager
def _store(url: str) -> Iterator[SQLAlchemyStore]:
    store = SQLAlchemyStore.from_url(url)
    store.create_all(KINDS)
    try:
        yield store
    finally:
        store.close()


class SQLiteMachine(StoreMachine):
    """On a SQLite file."""


class PostgresMachine(StoreMachine):
    """On the suite's PostgreSQL server."""


EXAMPLES = {"sqlite": 200, "postgres": 150}
"""Runs per database, each of up to 30 steps; ``BL_STATEFUL_EXAMPLES=<n>`` runs n on each (a deep run)."""
_DEEP = os.environ.get("BL_STATEFUL_EXAMPLES")
for machine, database in ((SQLiteMachine, "sqlite"), (PostgresMachine, "postgres")):
    machine.TestCase.settings = settings(max_examples=int(_DEEP or EXAMPLES[database]), stateful_step_count=30,
                                         deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[None]:
    """A SQLite store for :class:`SQLiteMachine`."""
    with _store(f"sqlite:///{tmp_path / 'stateful.db'}") as store:
        SQLiteMachine.shared_store = store
        yield
    SQLiteMachine.shared_store = None


@pytest.fixture
def postgres_store(postgres_server: PostgresServer) -> Iterator[None]:
    """A PostgreSQL store for :class:`PostgresMachine`."""
    with _store(postgres_server.create_database("stateful_stores")) as store:
        PostgresMachine.shared_store = store
        yield
    PostgresMachine.shared_store = None


@pytest.mark.usefixtures("sqlite_store")
class TestSQLiteAgainstReference(SQLiteMachine.TestCase):  # type: ignore[valid-type,misc]
    """The machine on SQLite, compared with the in-memory reference."""


@pytest.mark.postgres
@pytest.mark.usefixtures("postgres_store")
class TestPostgresAgainstReference(PostgresMachine.TestCase):  # type: ignore[valid-type,misc]
    """The machine on PostgreSQL, compared with the in-memory reference."""
