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

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import InvalidArgument
from ..kinds import DEFAULT_KINDS, KindConfig
from ..records import EntityId
from ._sqlite_setup import SqliteSettings
from .sqlalchemy import SQLAlchemyStore

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.ext.asyncio import AsyncEngine

    from .base import OutboxBucket, OutboxEntry
    from .outbox_state import DeadLetter

__all__ = ["AsyncSQLAlchemyStore", "bridge"]

T = TypeVar("T")


async def bridge(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run the sync ``fn`` in a greenlet on the running loop; its database calls await the asyncio driver."""
    from sqlalchemy.util import greenlet_spawn

    return await greenlet_spawn(fn, *args, **kwargs)


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
