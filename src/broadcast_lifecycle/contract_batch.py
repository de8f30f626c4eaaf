"""The store contract, batches: a store that decides several commands in one transaction
(:class:`~broadcast_lifecycle.stores.base.DecidesInBatch`) gives each the outcome, and leaves the
history and events, that running them one after another gives. Skipped for a store without it."""

from __future__ import annotations

import unittest
from typing import Any

from .batch import Written, finish, write_batch
from .command import Command, new_command
from .contract_base import KINDS, Clock, ContractBase
from .errors import BroadcastError, BroadcastNotFound, TransitionRefused
from .lifecycle import Trigger
from .records import EntityId
from .results import CommandResult, WritePath
from .service import BroadcastLifecycle
from .stores.base import BatchNotWritten, BroadcastStore, Change, DecidesInBatch, Loaded
from .stores.memory import InMemoryStore
from .testing import EventRecorder

__all__ = ["BatchContract"]


def _commands(lc: BroadcastLifecycle) -> list[Command]:
    """Accepts that fill, overfill and come from a transporter never offered the broadcast, releases
    (one of slots not held), a re-take and a cancel, in one batch."""
    config = lc.kind("booking").config

    def by(trigger: Trigger, transporter: str | None = None, slots: int = 1, **fields: Any) -> Command:
        return new_command(config=config, trigger=trigger, metadata={}, fingerprint="", idempotency_key=None,
                           actor=transporter or "c1", transporter_id=transporter, slots=slots, **fields)

    return [by(Trigger.ACCEPT, "t1"), by(Trigger.ACCEPT, "t2"), by(Trigger.ACCEPT, "t3"),
            by(Trigger.RELEASE, "t3"), by(Trigger.RELEASE, "t1"), by(Trigger.ACCEPT, "t3", slots=2),
            by(Trigger.ACCEPT, "t3"), by(Trigger.ACCEPT, "t9"), by(Trigger.START_TRIP),
            by(Trigger.CANCEL, reason="changed plans")]


def _shape(outcome: CommandResult | Exception) -> tuple[Any, ...]:
    if isinstance(outcome, TransitionRefused):
        return type(outcome).__name__, outcome.code, outcome.from_state, outcome.trigger, outcome.reason
    if isinstance(outcome, Exception):
        return (type(outcome).__name__,)
    snap = outcome.snapshot
    return "ok", snap.status, snap.slots_filled, snap.version, [(e.name, e.version, e.recipients)
                                                                 for e in outcome.events]


def _engine(store: BroadcastStore) -> tuple[BroadcastLifecycle, EventRecorder]:
    """The engine itself on ``store`` (what an async lifecycle runs in its bridge), with a recorder."""
    lc = BroadcastLifecycle(store, clock=Clock(), kinds=KINDS)
    recorder = EventRecorder()
    lc.bus.connect(recorder)
    return lc, recorder


class BatchContract(ContractBase):
    """Several commands decided and written in one transaction."""

    def _batching_store(self) -> BroadcastStore:
        """A new store; the test is skipped (``unittest.SkipTest``, which pytest and ``run_contract`` honour)
        when it does not decide in batches."""
        store = self.new_store()
        if not (isinstance(store, DecidesInBatch) and store.decides_in_batch()):
            raise unittest.SkipTest(f"{type(store).__name__} does not decide in batches (DecidesInBatch)")
        return store

    def test_a_batch_gives_each_command_what_running_them_in_turn_gives(self) -> None:
        """Each command of a batch gets the result or refusal it gets run alone after the ones before it
        (the in-memory store, in turn); the history rows and the events announced are the same too."""
        store = self._batching_store()
        assert isinstance(store, DecidesInBatch)
        (lc, recorder), (reference, reference_recorder) = _engine(store), _engine(InMemoryStore())
        entity_id, reference_id = self._active(lc), self._active(reference)
        together: list[CommandResult | Exception] = []
        for outcome in write_batch(lc, store, _commands(lc), entity_id):
            if isinstance(outcome, Exception):
                together.append(outcome)
                continue
            assert isinstance(outcome, Written), "the batch was not written (decide_and_apply_batch raised)"
            try:
                together.append(finish(lc, outcome))
            except BroadcastError as exc:
                together.append(exc)
        in_turn: list[CommandResult | Exception] = []
        for command in _commands(reference):
            try:
                in_turn.append(reference._run_alone(command, reference_id, None))
            except BroadcastError as exc:
                in_turn.append(exc)
        assert [_shape(o) for o in together] == [_shape(o) for o in in_turn]
        assert {o.path for o in together if isinstance(o, CommandResult)} == {WritePath.BATCHED}

        def history(of: BroadcastLifecycle, key: EntityId) -> list[tuple[Any, ...]]:
            return [(h.from_status, h.to_status, h.trigger, h.actor, h.reason, h.version)
                    for h in of.kind("booking").history(key)]

        assert history(lc, entity_id) == history(reference, reference_id)
        assert [(e.name, e.version, e.recipients) for e in recorder.events if e.entity_id == entity_id] == [
            (e.name, e.version, e.recipients) for e in reference_recorder.events if e.entity_id == reference_id]

    def test_a_batch_on_an_unknown_broadcast_is_not_written(self) -> None:
        """No such broadcast: ``decide_and_apply_batch`` raises ``BatchNotWritten`` from ``BroadcastNotFound``
        and calls no plan."""
        store = self._batching_store()
        assert isinstance(store, DecidesInBatch)
        called: list[Loaded] = []

        def plan(loaded: Loaded) -> Change:
            called.append(loaded)
            raise AssertionError("a plan was called for a broadcast that does not exist")

        try:
            store.decide_and_apply_batch("booking", 4242, [("t1", plan), (None, plan)])
        except BatchNotWritten as exc:
            assert isinstance(exc.__cause__, BroadcastNotFound), repr(exc.__cause__)
            assert called == []
        else:
            raise AssertionError("decide_and_apply_batch on an unknown broadcast did not raise BatchNotWritten")
