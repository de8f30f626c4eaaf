"""``BroadcastLifecycle``: the engine behind every command. Load, decide, apply atomically, announce.

Hosts reach the commands through a per-kind handle (:class:`~broadcast_lifecycle.handle.KindHandle`,
from :meth:`BroadcastLifecycle.kind`); this module holds what they share: the write paths, the
retries, idempotency keys, host guards and the after-commit dispatch.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ._quick import quick_constructor
from .bus import SignalBus
from .clock import Clock, require_aware, utc_now
from .command import SYSTEM_ACTOR, Command, command_deadline, expiry_of, pinned_to
from .decision import decide, is_overdue
from .errors import (
    ConcurrentUpdate,
    IdempotencyKeyReused,
    InvalidArgument,
    InvalidTransition,
    TransitionRefused,
    show_value,
)
from .guards import CommandContext, Guard
from .idempotency import check_replay
from .kinds import DEFAULT_KINDS, KindConfig
from .lifecycle import DEADLINE_TRIGGERS, Trigger
from .outbox import OutboxRelay, RetryPolicy, deliver
from .records import EntityId
from .results import CommandResult, WritePath
from .retention import PruneReport, prune
from .states import OPEN
from .stores.base import (
    SWEEP_REASON,
    Adoption,
    AdoptsRows,
    AfterCommit,
    BroadcastStore,
    Change,
    Committed,
    DecidesInBatch,
    DecidesInStatement,
    DecidesUnderLock,
    Loaded,
    NewBroadcast,
    NewRecipients,
    StatementCommand,
    TypedKeys,
    missing_store_methods,
)
from .stores.memory import InMemoryStore

if TYPE_CHECKING:
    from .async_queues import CommandQueues
    from .handle import KindHandle

__all__ = ["SYSTEM_ACTOR", "BroadcastLifecycle"]

logger = logging.getLogger(__name__)

# Members read on every command, as module constants: on Python 3.10 and 3.11 an Enum class's attribute
# is read through EnumType.__getattr__, some 60 ns a read.
_IN_PLACE_PATH, _UNDER_LOCK_PATH = WritePath.IN_PLACE, WritePath.UNDER_LOCK



class BroadcastLifecycle:
    """Runs every command on a broadcast as a guarded, persisted, announced transition.

    Resolve a kind once, at wiring time, and call its commands on the handle::

        bookings = lifecycle.kind("booking")
        booking = bookings.create("c-1", slots=2)

    Each command loads the broadcast, decides with the transition table and the guards, writes the
    result by compare-and-set (retrying a lost race up to ``max_attempts`` times, then raising
    :class:`ConcurrentUpdate`) and sends the events on ``bus`` once the write has committed. Which
    write path a command takes is chosen in one place (:meth:`_path`) and reported in
    :attr:`CommandResult.path <broadcast_lifecycle.results.CommandResult.path>`.
    Pass ``tx`` (a SQLAlchemy ``Session``) to write inside the caller's transaction; the events then
    leave when that transaction commits, and never if it rolls back.
    """

    def __init__(
        self,
        store: BroadcastStore | None = None,
        *,
        bus: SignalBus | None = None,
        clock: Clock = utc_now,
        kinds: Iterable[KindConfig] = DEFAULT_KINDS,
        max_attempts: int = 16,
        retry: RetryPolicy | None = None,
    ) -> None:
        if max_attempts < 1:
            raise InvalidArgument(f"max_attempts must be at least 1, got {max_attempts}")
        self.store: BroadcastStore = store if store is not None else InMemoryStore()
        if missing := missing_store_methods(self.store):
            raise InvalidArgument(f"{type(self.store).__name__} is not a BroadcastStore: it lacks "
                                  f"{', '.join(missing)} (see broadcast_lifecycle.stores.BroadcastStore)")
        self._under_lock = (self.store if isinstance(self.store, DecidesUnderLock) and self.store.decides_under_lock()
                            else None)
        # Deciding in the statement is how a store without a decision lock avoids lost races; one with it has none.
        self._in_statement = (self.store if isinstance(self.store, DecidesInStatement) and self._under_lock is None
                              else None)
        self._typed_keys = self.store if isinstance(self.store, TypedKeys) else None
        self._in_batch = (self.store if isinstance(self.store, DecidesInBatch) and self.store.decides_in_batch()
                          else None)
        self._queues: CommandQueues | None = None  # see _queue_per_loop
        self._marks: Callable[[Sequence[str], datetime], None] | None = None
        self.bus = bus if bus is not None else SignalBus()
        self._clock = clock
        self._kinds = {k.name: k for k in kinds}
        self._handles: dict[str, KindHandle] = {}
        self._max_attempts = max_attempts
        self.retry = retry or RetryPolicy()
        self._guards: dict[tuple[str | None, Trigger], list[Guard]] = defaultdict(list)

    def _queue_per_loop(self) -> None:
        """Queue, per event loop, the commands on one broadcast and the marks of delivered events that come
        while one is written, and write each queue's together (:mod:`.async_queues`, :mod:`.async_marks`):
        what ``AsyncBroadcastLifecycle`` asks of a store that decides in batches."""
        from .async_marks import MarkQueue
        from .async_queues import CommandQueues

        if self._in_batch is not None:
            self._queues = CommandQueues(self, self._in_batch)
            self._marks = MarkQueue(self.store).mark_delivered

    @property
    def kinds(self) -> tuple[KindConfig, ...]:
        """The kinds this lifecycle knows."""
        return tuple(self._kinds.values())

    def kind(self, name: str) -> KindHandle:
        """The command handle of kind ``name``; an unknown kind raises ``InvalidArgument`` at once."""
        handle = self._handles.get(name)
        if handle is None:
            from .handle import KindHandle

            try:
                config = self._kinds[name]
            except (KeyError, TypeError):
                raise InvalidArgument(
                    f"unknown kind {name!r}; known kinds: {', '.join(sorted(self._kinds))}") from None
            handle = self._handles[name] = KindHandle(self, config)
        return handle

    def add_guard(self, trigger: Trigger, guard: Guard, *, kind: str | None = None) -> None:
        """Run ``guard`` after the built-in guards of ``trigger`` (of ``kind`` only, when given); a
        reason it returns refuses the command with :class:`TransitionRefused`."""
        if trigger not in Trigger.__members__.values():
            raise InvalidArgument(f"trigger must be one of {', '.join(t.value for t in Trigger)}, got {trigger!r}")
        trigger = Trigger(trigger)
        if trigger is Trigger.CREATE:
            raise InvalidArgument("create has no snapshot to guard; validate before calling create()")
        if kind is not None:
            self.kind(kind)
        self._guards[(kind, trigger)].append(guard)

    def expire_due(self, now: datetime | None = None, batch_size: int = 1000, *,
                   on_batch: Callable[[int], None] | None = None) -> int:
        """Expire every overdue broadcast, set-wise, batch by batch; returns how many this call expired.

        Safe to run in several processes at once. Events of the expired broadcasts are dispatched
        after each batch commits when this process has receivers; otherwise the relay delivers them.
        ``on_batch`` is called with each committed batch's count (e.g. a progress line's ``advance``).
        """
        if batch_size < 1:
            raise InvalidArgument(f"batch_size must be at least 1, got {batch_size}")
        cutoff = require_aware("now", now) if now is not None else self._now()
        expired = 0
        listening = self.bus.has_receivers()
        for kind in self._kinds.values():
            while True:
                batch = self.store.expire_overdue(kind, cutoff, batch_size, SYSTEM_ACTOR, listening)
                expired += batch.count
                if on_batch is not None and batch.count:
                    on_batch(batch.count)
                if batch.count and listening:
                    deliver(self.store, self.bus, batch.load_events(), self.retry, self._now)
                if batch.count < batch_size:
                    break
        return expired

    def relay(self, *, grace: timedelta = timedelta(seconds=10), lease: timedelta = timedelta(minutes=2),
              batch_size: int = 200) -> OutboxRelay:
        """An outbox relay on this lifecycle's store, bus, clock and retry policy."""
        return OutboxRelay(self.store, self.bus, self._now, policy=self.retry, grace=grace, lease=lease,
                           batch_size=batch_size)

    def prune(self, older_than: timedelta, *, history: bool = False, batch_size: int = 1000) -> PruneReport:
        """Delete delivered outbox events and idempotency records older than ``older_than`` (and, with
        ``history=True``, the history of broadcasts that ended before then), ``batch_size`` rows per
        transaction. Pending, retrying and dead events stay. See :mod:`broadcast_lifecycle.retention`."""
        if not isinstance(older_than, timedelta) or older_than <= timedelta(0):
            raise InvalidArgument(f"older_than must be a positive timedelta, got {show_value(older_than)}")
        return prune(self.store, self._now() - older_than, history=history, batch_size=batch_size)

    # -- what the handles call -------------------------------------------------------------

    def _key(self, kind: str, entity_id: EntityId) -> EntityId:
        """``entity_id`` as the store keys ``kind`` (a key's text converted, see ``TypedKeys``), before
        anything else uses it: the command, its idempotency record and its events carry the typed id."""
        return entity_id if self._typed_keys is None else self._typed_keys.entity_key(kind, entity_id)

    def _create(self, new: NewBroadcast, tx: object) -> CommandResult:
        key = new.idempotency_key
        if key is not None and (replay := self._replay(key, new.kind.name, None, "create", new.actor,
                                                       new.fingerprint, tx)):
            return replay
        try:
            committed = self.store.insert(new, self._announce, tx)
        except IdempotencyKeyReused:
            if key is not None and (replay := self._replay(key, new.kind.name, None, "create", new.actor,
                                                           new.fingerprint, tx)):
                return replay
            raise
        return _result(snapshot=committed.snapshot, events=committed.events, path=WritePath.INSERT)

    def _adopt(self, adoption: Adoption, tx: object) -> CommandResult:
        if not isinstance(self.store, AdoptsRows):
            raise InvalidArgument(f"{type(self.store).__name__} cannot adopt rows the host inserted; use create(), "
                                  "or a store with adopt() such as SQLAlchemyStore")
        key, kind = adoption.idempotency_key, adoption.kind.name
        if key is not None and adoption.actor is None:  # the actor defaults to the row's customer
            customer = self.store.load(kind, adoption.entity_id, tx=tx).snapshot.customer_id
            adoption = dataclasses.replace(adoption, actor=customer)
        if key is not None and (replay := self._replay(key, kind, adoption.entity_id, "create", adoption.actor,
                                                       adoption.fingerprint, tx)):
            return replay
        try:
            committed = self.store.adopt(adoption, self._announce, tx)
        except IdempotencyKeyReused:  # a concurrent request recorded the key first: answer with its outcome
            if key is not None and (replay := self._replay(key, kind, None, "create", adoption.actor,
                                                           adoption.fingerprint, tx)):
                return replay
            raise
        return CommandResult(snapshot=committed.snapshot, events=committed.events, path=WritePath.ADOPT)

    def _notify_more(self, config: KindConfig, entity_id: EntityId, recipients: tuple[str, ...],
                     reason: str | None, tx: object) -> CommandResult:
        kind = config.name
        now = self._now()
        current = self.store.load(kind, entity_id, tx=tx).snapshot
        if current.status in OPEN and current.expires_at is not None and is_overdue(current, now):
            self._run(expiry_of(config), entity_id, tx)
            raise TransitionRefused(kind, entity_id, current.status.value, "notify_more",
                                    f"expired at {current.expires_at.isoformat()}", code="expired")
        new = NewRecipients(kind=config, entity_id=entity_id, transporters=recipients, at=now,
                            open_states=OPEN, reason=reason)
        committed = self.store.add_recipients(new, self._announce, tx)
        snapshot = committed.snapshot
        if snapshot.status not in OPEN:
            raise InvalidTransition(kind, entity_id, snapshot.status.value, "notify_more", (s.value for s in OPEN))
        return CommandResult(snapshot=snapshot, events=committed.events, path=WritePath.RECIPIENTS)

    def _run(self, command: Command, entity_id: EntityId, tx: object) -> CommandResult:
        """Apply ``command``: queued behind a write to its broadcast where :meth:`_queues_for` says, else alone."""
        if self._queues is not None and tx is None and self._queues_for(command):
            return self._queues.run(command, entity_id)
        return self._run_alone(command, entity_id, tx)

    def _queues_for(self, command: Command) -> bool:
        """Whether ``command`` may wait behind a write to its broadcast and be written in a batch with the
        others that did: what the store writes on its own, with no idempotency key or host guard."""
        return command.idempotency_key is None and not self._guards_for(command.config.name, command.trigger)

    def _run_alone(self, command: Command, entity_id: EntityId, tx: object,
                   announce: AfterCommit | None = None) -> CommandResult:
        """Apply ``command`` on the path :meth:`_path` picks; retry lost races, replay recorded keys.
        ``announce`` (default :meth:`_announce`) is called with what committed, once it has."""
        announce = announce or self._announce
        config, trigger, key = command.config, command.trigger, command.idempotency_key
        kind = config.name
        path = self._path(command, tx)
        found: Loaded | None = None
        if path is _IN_PLACE_PATH and self._in_statement is not None:
            at = command.now if command.now is not None else self._now()
            if command.now is None:  # one time for the statement and for deciding on the row it refused
                command = pinned_to(command, at)
            if key is not None and (replay := self._replay(key, kind, entity_id, trigger.value, command.actor,
                                                           command.fingerprint, tx)):
                return replay
            try:
                done = self._decide_in_statement(self._in_statement, command, at, entity_id, announce)
            except IdempotencyKeyReused:
                done = None  # a concurrent duplicate recorded it first: the loop below replays it
            if isinstance(done, Committed):
                return _result(snapshot=done.snapshot, events=done.events, path=path)
            found = done  # refused (or passed): decide on the row as the store found it
            path = WritePath.GENERAL
        planned: list[Change] = []

        def plan(loaded: Loaded) -> Change:
            planned.append(self._plan(command, loaded))
            return planned[-1]

        for _ in range(self._max_attempts):
            if key is not None and (replay := self._replay(key, kind, entity_id, trigger.value, command.actor,
                                                           command.fingerprint, tx)):
                return replay
            try:
                if path is _UNDER_LOCK_PATH and self._under_lock is not None:
                    committed = self._under_lock.decide_and_apply(kind, entity_id, command.transporter_id, plan,
                                                                  announce, tx)
                else:
                    plan(found or self.store.load(kind, entity_id, command.transporter_id, tx))
                    found = None
                    committed = self.store.apply(planned[-1], announce, tx)
            except IdempotencyKeyReused:
                if key is None:
                    raise
                continue  # a concurrent duplicate recorded it first: replay it on the next pass
            if committed is None:
                continue
            return self._result_of(planned[-1], committed, path)
        raise ConcurrentUpdate(kind, entity_id, trigger.value, self._max_attempts)

    @staticmethod
    def _result_of(change: Change, committed: Committed, path: WritePath) -> CommandResult:
        """The result of a command whose ``change`` committed; the refusal of one that found its broadcast
        overdue and expired it instead (``decide`` put the expiry in its place)."""
        before = change.before
        if change.decision.superseded is not None and before.expires_at is not None:
            raise TransitionRefused(before.kind, before.id, before.status.value, change.decision.superseded.value,
                                    f"expired at {before.expires_at.isoformat()}", code="expired")
        return _result(snapshot=committed.snapshot, events=committed.events, path=path)

    def _path(self, command: Command, tx: object) -> WritePath:
        """The write path for ``command``: the one place that chooses.

        In place (decided by its own statement, generated from the transition table, no read) where
        the store has that statement, with no host guard or host transaction. Otherwise decide under
        the store's write lock where it has one, else the general compare-and-set.
        """
        if (self._in_statement is not None and tx is None
                and not self._guards_for(command.config.name, command.trigger)
                and self._in_statement.decides_in_statement(command.config, command.trigger)):
            return WritePath.IN_PLACE  # host guards need the row before deciding: they keep the read
        return _UNDER_LOCK_PATH if self._under_lock is not None else WritePath.GENERAL

    def _decide_in_statement(self, store: DecidesInStatement, command: Command, at: datetime,
                             entity_id: EntityId, announce: AfterCommit) -> Committed | Loaded | None:
        """Write ``command`` (pinned to its time ``at``) in one statement that checks the table's guards
        itself; the events and the result come from :meth:`_plan` on the row the statement found, as on
        every path."""
        config = command.config
        given = command.deadline if command.deadline is not None else (
            at + command.ttl if command.ttl is not None else None)
        request = _statement_command(
            kind=config, trigger=command.trigger, entity_id=entity_id, at=at, deadline=given,
            default_deadline=at + config.default_ttl if config.default_ttl is not None else None,
            transporter_id=command.transporter_id, slots=command.slots,
            actor=command.actor, reason=command.reason, metadata=command.metadata, recipients=command.recipients,
            idempotency_key=command.idempotency_key, fingerprint=command.fingerprint)
        return store.decide_in_statement(request, lambda loaded: self._plan(command, loaded), announce)

    def _guards_for(self, kind: str, trigger: Trigger) -> list[Guard]:
        if not self._guards:
            return []
        return self._guards.get((None, trigger), []) + self._guards.get((kind, trigger), [])

    def _plan(self, command: Command, loaded: Loaded) -> Change:
        """Decide ``command`` on the broadcast as loaded: the change to apply, or the refusal raised."""
        before = loaded.snapshot
        config, trigger, deadline = command.config, command.trigger, command.deadline
        at = command.now if command.now is not None else self._now()
        if trigger in DEADLINE_TRIGGERS:
            deadline = command_deadline(at, deadline, command.ttl, before.expires_at, config.default_ttl)
        ctx = _context(at, command.slots, command.transporter_id, loaded.holding, deadline,
                             config.allow_partial_trip, command.actor)
        decision = decide(before, trigger, ctx, self._guards_for(config.name, trigger))
        stamp = max(at, before.state_changed_at)
        if decision.superseded is not None:
            # The reason reaches every recipient of the expiry: who was pre-empted stays in the history's metadata.
            return _change(config, before, decision, stamp, SYSTEM_ACTOR, f"{SWEEP_REASON} before {trigger.value}",
                          {"preempted": {"trigger": trigger.value, "actor": command.actor}})
        return _change(config, before, decision, stamp, command.actor, command.reason, command.metadata,
                      command.transporter_id, command.recipients, command.idempotency_key, command.fingerprint)

    def _replay(self, key: str, kind: str, entity_id: EntityId | None, trigger: str, actor: str | None,
                digest: str, tx: object) -> CommandResult | None:
        """The first outcome recorded under ``key`` if it was this same command; else refuse."""
        first = self.store.recall(key, tx)
        if first is None:
            return None
        check_replay(first, kind=kind, trigger=trigger, entity_id=entity_id, actor=actor, digest=digest)
        return CommandResult(snapshot=first.snapshot, path=WritePath.REPLAYED)

    def _announce(self, committed: Committed) -> None:
        """Send a committed write's events; the outbox keeps what was not delivered, for the relay."""
        if not self.bus.has_receivers():
            return  # nobody here listens: the events stay pending for a relay where receivers are
        deliver(self.store, self.bus, committed.events, self.retry, self._now, self._marks)

    def _now(self) -> datetime:
        return require_aware("the clock's time", self._clock())


_context = quick_constructor(CommandContext)
_change = quick_constructor(Change)
_result = quick_constructor(CommandResult)
_statement_command = quick_constructor(StatementCommand)

