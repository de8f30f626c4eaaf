"""``AsyncBroadcastLifecycle``: the lifecycle for asyncio hosts, on the same engine as the sync one.

Every command runs :class:`~broadcast_lifecycle.service.BroadcastLifecycle`'s own code (load,
decide, write, announce) in SQLAlchemy's greenlet bridge (see
:mod:`~broadcast_lifecycle.stores.async_sqlalchemy`), so each database call awaits the asyncio driver
on the running loop and nothing is decided or written twice over. Receivers that are coroutine
functions are awaited on their loop after the commit, before the command returns.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .bus import SignalBus
from .clock import Clock, utc_now
from .errors import InvalidArgument
from .guards import Guard
from .kinds import DEFAULT_KINDS, KindConfig
from .lifecycle import Trigger
from .outbox import DeliveryReport, OutboxRelay, RetryPolicy
from .retention import PruneReport
from .service import BroadcastLifecycle
from .stores.async_sqlalchemy import AsyncSQLAlchemyStore, bridge
from .stores.base import BroadcastStore
from .stores.memory import InMemoryStore

if TYPE_CHECKING:
    from .async_handle import AsyncKindHandle

__all__ = ["AsyncBroadcastLifecycle", "AsyncOutboxRelay"]


class AsyncBroadcastLifecycle:
    """The same commands, results, errors and guarantees as :class:`BroadcastLifecycle`, awaited.

    ::

        store = AsyncSQLAlchemyStore.from_url("sqlite+aiosqlite:///broadcasts.db")
        lifecycle = AsyncBroadcastLifecycle(store)
        bookings = lifecycle.kind("booking")
        booking = await bookings.create("c-1", slots=2)

    ``store`` is an :class:`AsyncSQLAlchemyStore`, or a store that does no I/O (the default
    :class:`InMemoryStore`, for tests). Pass ``tx=`` an ``AsyncSession`` to write in the caller's
    transaction; the events then leave when it commits. A task cancelled during a command leaves
    the broadcast as it was (the transaction rolls back) and sends nothing; once the write has
    committed, its events are delivered (by the relay, if the cancellation stopped the dispatch).
    On PostgreSQL, commands on one broadcast that arrive while it is being written wait in the process
    and are written together in one transaction (see :mod:`~broadcast_lifecycle.async_queues`); one
    cancelled after its batch began is written with it; and the marks of delivered events that come while
    one is written go in one transaction. ``queue_commands=False`` gives every command and every mark a
    transaction of its own instead.
    """

    def __init__(
        self,
        store: AsyncSQLAlchemyStore | BroadcastStore | None = None,
        *,
        bus: SignalBus | None = None,
        clock: Clock = utc_now,
        kinds: Iterable[KindConfig] = DEFAULT_KINDS,
        max_attempts: int = 16,
        retry: RetryPolicy | None = None,
        queue_commands: bool = True,
    ) -> None:
        if store is None:
            store = InMemoryStore()
        if isinstance(store, AsyncSQLAlchemyStore):
            sync_store: BroadcastStore = store.sync
        else:
            engine = getattr(store, "engine", None)
            if engine is not None and not engine.dialect.is_async:
                raise InvalidArgument(
                    f"store is a {type(store).__name__} on a sync engine, whose statements would block the event "
                    "loop; use AsyncSQLAlchemyStore on an AsyncEngine (or BroadcastLifecycle in sync code)")
            sync_store = store
        self.store = store
        self._lc = BroadcastLifecycle(sync_store, bus=bus, clock=clock, kinds=kinds, max_attempts=max_attempts,
                                      retry=retry)
        if queue_commands:
            self._lc._queue_per_loop()
        self._handles: dict[str, AsyncKindHandle] = {}

    @property
    def bus(self) -> SignalBus:
        """The signal bus the events go to (connect coroutine receivers while the loop runs)."""
        return self._lc.bus

    @property
    def retry(self) -> RetryPolicy:
        """How failed deliveries are retried."""
        return self._lc.retry

    @property
    def kinds(self) -> tuple[KindConfig, ...]:
        """The kinds this lifecycle knows."""
        return self._lc.kinds

    def kind(self, name: str) -> AsyncKindHandle:
        """The command handle of kind ``name``; an unknown kind raises ``InvalidArgument`` at once."""
        handle = self._handles.get(name)
        if handle is None:
            from .async_handle import AsyncKindHandle

            handle = self._handles[name] = AsyncKindHandle(self._lc.kind(name))
        return handle

    def add_guard(self, trigger: Trigger, guard: Guard, *, kind: str | None = None) -> None:
        """See :meth:`BroadcastLifecycle.add_guard` (a guard is a plain function: it runs inside the command)."""
        self._lc.add_guard(trigger, guard, kind=kind)

    async def expire_due(self, now: datetime | None = None, batch_size: int = 1000) -> int:
        """See :meth:`BroadcastLifecycle.expire_due`."""
        return await bridge(self._lc.expire_due, now, batch_size)

    def relay(self, *, grace: timedelta = timedelta(seconds=10), lease: timedelta = timedelta(minutes=2),
              batch_size: int = 200) -> AsyncOutboxRelay:
        """An outbox relay on this lifecycle's store, bus, clock and retry policy."""
        return AsyncOutboxRelay(self._lc.relay(grace=grace, lease=lease, batch_size=batch_size))

    async def prune(self, older_than: timedelta, *, history: bool = False, batch_size: int = 1000) -> PruneReport:
        """See :meth:`BroadcastLifecycle.prune`."""
        return await bridge(self._lc.prune, older_than, history=history, batch_size=batch_size)


class AsyncOutboxRelay:
    """:class:`OutboxRelay`, awaited: delivers what the after-commit dispatch did not."""

    def __init__(self, relay: OutboxRelay) -> None:
        self.sync = relay
        """The relay it runs in the bridge."""

    async def relay_once(self) -> DeliveryReport:
        """Claim and deliver every due event, batch by batch; returns what happened."""
        return await bridge(self.sync.relay_once)
