"""``AsyncSQLAlchemyStore``: the SQL store on SQLAlchemy's ``AsyncEngine``, with no second copy of it.

The store is :class:`~broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore` itself, built on the async
engine's ``sync_engine``. Its code runs in a greenlet (SQLAlchemy's ``greenlet_spawn``, the bridge
behind ``AsyncSession.run_sync``): every statement it sends goes through the driver's SQLAlchemy
adapter, which awaits the asyncio driver (aiosqlite, psycopg's async mode) on the running loop. So
the decisions, the statements and the event building are those of the sync store; only the I/O
waits differently. A task cancelled while it waits gets ``CancelledError`` raised at that statement,
inside the store's transaction, which rolls back as for any other error.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import InvalidArgument
from ..kinds import DEFAULT_KINDS, KindConfig
from ..records import EntityId
from ._sqlite_setup import SqliteSettings
from .sqlalchemy import SQLAlchemyStore, driver_missing

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

    from .base import OutboxBucket, OutboxEntry
    from .outbox_state import DeadLetter

__all__ = ["AsyncSQLAlchemyStore", "bridge", "wait_in_bridge"]

T = TypeVar("T")


async def bridge(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run the sync ``fn`` in a greenlet on the running loop; its database calls await the asyncio driver.

    SQLAlchemy's ``greenlet_spawn`` protocol (``await_`` in ``fn`` hands an awaitable to this coroutine,
    which awaits it and switches the outcome back; the caller's contextvars go in), on a greenlet reused
    from call to call: a new greenlet per call costs about 15 us (its creation, and the frames of ``fn``
    on a fresh, empty stack), more than the rest of the bridge.
    """
    from greenlet import getcurrent  # type: ignore[import-untyped, unused-ignore]

    pool = _idle_workers()
    worker = pool.pop() if pool else _new_worker()
    caller = getcurrent()
    worker.parent = caller
    worker.gr_context = caller.gr_context
    result = worker.switch(fn, args, kwargs)
    while not isinstance(result, _Done):
        try:
            value = await result
        except BaseException as exc:  # a cancellation, or the awaitable's own error: raised at fn's await_
            worker.parent = getcurrent()  # who resumes it (not always the first caller: an eager task factory)
            result = worker.throw(exc)
        else:
            worker.parent = getcurrent()
            result = worker.switch(value)
    if len(pool) < _POOL_SIZE:
        pool.append(worker)
    if result.error is not None:
        error, result.error = result.error, None
        raise error
    return result.value  # type: ignore[no-any-return]


def wait_in_bridge(awaitable: Awaitable[T]) -> T:
    """``await awaitable`` from the sync code :func:`bridge` runs (its greenlet hands it to the bridge's
    coroutine, as SQLAlchemy's ``await_`` does); a cancellation of the bridge's task is raised here."""
    from greenlet import getcurrent  # type: ignore[import-untyped, unused-ignore]

    worker = getcurrent()
    if not getattr(worker, "__sqlalchemy_greenlet_provider__", False):
        raise RuntimeError("wait_in_bridge() called outside bridge()")
    return worker.parent.switch(awaitable)  # type: ignore[no-any-return]


class _Done:
    """What a worker greenlet switches back when ``fn`` has returned or raised."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any, error: BaseException | None) -> None:
        self.value, self.error = value, error


_POOL_SIZE = 64
"""Idle worker greenlets kept per thread (one per command in flight is made; past this many, dropped)."""

_workers = threading.local()
_worker_class: Any = None


def _idle_workers() -> list[Any]:
    """This thread's idle workers (a greenlet runs only in the thread that made it)."""
    pool: list[Any] | None = getattr(_workers, "idle", None)
    if pool is None:
        pool = _workers.idle = []
    return pool


def _new_worker() -> Any:
    global _worker_class  # noqa: PLW0603 (made on first use: greenlet is an optional dependency)
    if _worker_class is None:
        from greenlet import greenlet  # type: ignore[import-untyped, unused-ignore]

        class _Worker(greenlet):  # type: ignore[misc]
            __sqlalchemy_greenlet_provider__ = True  # what SQLAlchemy's await_ looks for

            def run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
                while True:
                    try:
                        done = _Done(fn(*args, **kwargs), None)
                    except BaseException as exc:  # handed to bridge(), which raises it in the caller
                        done = _Done(None, exc)
                    fn = args = kwargs = None  # type: ignore[assignment]  # nothing of the call outlives it
                    fn, args, kwargs = self.parent.switch(done)

        _worker_class = _Worker
    return _worker_class()


_DRIVERS = frozenset({"sqlite+aiosqlite", "postgresql+psycopg"})
"""The asyncio drivers the store's statements are written for (asyncpg takes another parameter style)."""


class AsyncSQLAlchemyStore:
    """The SQL store on an ``AsyncEngine`` (``sqlite+aiosqlite://``, ``postgresql+psycopg://``).

    ``models`` maps kinds to the host's mapped classes and ``sqlite`` sets up the store's own SQLite
    connections, as for ``SQLAlchemyStore``. The commands
    go through :class:`~broadcast_lifecycle.async_service.AsyncBroadcastLifecycle`; the outbox's reads
    are here, awaited (:meth:`dead_letters`, :meth:`pending_events`, :meth:`outbox_summary`,
    :meth:`outbox_of`); for anything else the sync store offers, call it through :meth:`run_sync`:
    ``await store.run_sync(SQLAlchemyStore.id_type, "booking")``.
    """

    def __init__(self, engine: AsyncEngine, models: Mapping[str, Any] | None = None, *,
                 sqlite: SqliteSettings | None = None) -> None:
        from sqlalchemy.ext.asyncio import AsyncEngine

        if not isinstance(engine, AsyncEngine):
            raise InvalidArgument(
                f"engine must be a sqlalchemy AsyncEngine (create_async_engine), got {type(engine).__name__}; "
                "for a sync Engine use SQLAlchemyStore")
        driver = f"{engine.dialect.name}+{engine.dialect.driver}"
        if driver not in _DRIVERS:
            raise InvalidArgument(f"engine must use one of the asyncio drivers the store is built for "
                                  f"({', '.join(sorted(_DRIVERS))}), got {driver}")
        self.engine = engine
        self.sync = SQLAlchemyStore(engine.sync_engine, models, sqlite=sqlite)
        """The store itself: call it only through :meth:`run_sync` (its I/O must run in the bridge)."""
        self._owns_engine = False

    @classmethod
    def from_url(cls, url: str, models: Mapping[str, Any] | None = None, *, sqlite: SqliteSettings | None = None,
                 **engine_options: Any) -> AsyncSQLAlchemyStore:
        """A store on a new async engine for ``url`` (e.g. ``sqlite+aiosqlite:///broadcasts.db``)."""
        from sqlalchemy.exc import ArgumentError, InvalidRequestError
        from sqlalchemy.ext.asyncio import create_async_engine

        try:
            engine = create_async_engine(url, **engine_options)
        except ImportError as exc:
            raise driver_missing(url, exc) from exc
        except (ArgumentError, InvalidRequestError) as exc:
            raise InvalidArgument(f"url must name an asyncio driver (sqlite+aiosqlite://, postgresql+psycopg://), "
                                  f"got {url.split('://', 1)[0]}://: {exc}") from exc
        store = cls(engine, models, sqlite=sqlite)
        store._owns_engine = True
        return store

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(store, *args, **kwargs)`` on the sync store, its I/O awaited on the running loop."""
        return await bridge(fn, self.sync, *args, **kwargs)

    async def create_all(self, kinds: Iterable[KindConfig] = DEFAULT_KINDS) -> None:
        """See :meth:`SQLAlchemyStore.create_all <broadcast_lifecycle.stores.sqlalchemy.SQLAlchemyStore.create_all>`."""
        await self.run_sync(SQLAlchemyStore.create_all, tuple(kinds))

    async def dead_letters(self, limit: int) -> Sequence[DeadLetter]:
        """See :meth:`SQLAlchemyStore.dead_letters <broadcast_lifecycle.stores.base.BroadcastStore.dead_letters>`:
        receivers that gave up on an event, newest first."""
        return await self.run_sync(SQLAlchemyStore.dead_letters, limit)

    async def pending_events(self, limit: int, created_before: datetime | None = None) -> Sequence[OutboxEntry]:
        """See :meth:`BroadcastStore.pending_events <broadcast_lifecycle.stores.base.BroadcastStore.pending_events>`:
        events not yet delivered to every receiver, oldest first."""
        return await self.run_sync(SQLAlchemyStore.pending_events, limit, created_before)

    async def outbox_summary(self) -> dict[str, OutboxBucket]:
        """See :class:`~broadcast_lifecycle.stores.base.InspectsOutbox`: undelivered events by state."""
        return await self.run_sync(SQLAlchemyStore.outbox_summary)

    async def outbox_of(self, kind: str, entity_id: EntityId) -> Sequence[OutboxEntry]:
        """See :class:`~broadcast_lifecycle.stores.base.InspectsOutbox`: one broadcast's events, oldest first."""
        return await self.run_sync(SQLAlchemyStore.outbox_of, kind, entity_id)

    async def close(self) -> None:
        """Close the store's connections (and, for a store made by :meth:`from_url`, dispose of the engine)."""
        await self.run_sync(SQLAlchemyStore.close)
        if self._owns_engine:
            await self.engine.dispose()
