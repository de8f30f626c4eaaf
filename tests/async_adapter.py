"""A thin adapter that runs the sync test suites (the store contract, the stateful machine) against
``AsyncBroadcastLifecycle``: each call becomes a coroutine awaited on an event loop in a thread of its
own, so calls from several test threads at once are concurrent tasks on that one loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar, cast

from broadcast_lifecycle import (
    DEFAULT_KINDS,
    AsyncBroadcastLifecycle,
    AsyncSQLAlchemyStore,
    BroadcastLifecycle,
    BroadcastStore,
    KindConfig,
    SQLAlchemyStore,
)

T = TypeVar("T")


class LoopThread:
    """An event loop running in a daemon thread; :meth:`run` awaits a coroutine there from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="async-adapter-loop", daemon=True)
        self.thread.start()

    def run(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` on the loop and return its result (or raise its error) here."""
        return asyncio.run_coroutine_threadsafe(_await(awaitable), self.loop).result()

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable


class _Blocking:
    """``target``'s attributes; what a method returns is awaited on the loop when it is awaitable."""

    def __init__(self, target: object, loop: LoopThread) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            result = value(*args, **kwargs)
            return self._loop.run(result) if isinstance(result, Coroutine) else result
        return call


class BlockingStore:
    """The sync store's methods, each run in the async store's bridge on the loop (directly, when called
    from inside the bridge already: a sync lifecycle over this store dispatches events from there)."""

    def __init__(self, store: AsyncSQLAlchemyStore, loop: LoopThread) -> None:
        self.async_store = store
        self.loop = loop

    def __getattr__(self, name: str) -> Callable[..., Any]:
        from sqlalchemy.util.concurrency import in_greenlet

        method = getattr(SQLAlchemyStore, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is self.loop.thread and in_greenlet():
                return method(self.async_store.sync, *args, **kwargs)
            return self.loop.run(self.async_store.run_sync(method, *args, **kwargs))
        return call

    def close(self) -> None:
        """Close the async store and its loop."""
        self.loop.run(self.async_store.close())
        self.loop.close()


class BlockingLifecycle:
    """An ``AsyncBroadcastLifecycle`` with the sync lifecycle's face (cast it to ``BroadcastLifecycle``)."""

    def __init__(self, lifecycle: AsyncBroadcastLifecycle, loop: LoopThread) -> None:
        self.async_lifecycle = lifecycle
        self.loop = loop
        self.bus = lifecycle.bus
        store = lifecycle.store
        self.store = BlockingStore(store, loop) if isinstance(store, AsyncSQLAlchemyStore) else store

    def kind(self, name: str) -> Any:
        return _Blocking(self.async_lifecycle.kind(name), self.loop)

    def __getattr__(self, name: str) -> Any:
        return getattr(_Blocking(self.async_lifecycle, self.loop), name)

    def close(self) -> None:
        """Close the store (if it is an async SQL store) and the loop."""
        store = self.async_lifecycle.store
        if isinstance(store, AsyncSQLAlchemyStore):
            self.loop.run(store.close())
        self.loop.close()


def blocking_store(url: str, kinds: Sequence[KindConfig] = DEFAULT_KINDS) -> BlockingStore:
    """A new ``AsyncSQLAlchemyStore`` for ``url`` (tables created for ``kinds``) on a loop of its own, with the
    sync store's face."""
    loop = LoopThread()

    async def build() -> AsyncSQLAlchemyStore:
        store = AsyncSQLAlchemyStore.from_url(url)
        await store.create_all(kinds)
        return store

    return BlockingStore(loop.run(build()), loop)


def blocking_lifecycle(store: BlockingStore | BroadcastStore | None,
                       **options: Any) -> tuple[BroadcastLifecycle, BlockingLifecycle]:
    """An async lifecycle on ``store`` (the async store behind a BlockingStore, a sync store that does no I/O,
    or the in-memory default), behind the adapter: typed for the sync suites, and as itself."""
    loop = store.loop if isinstance(store, BlockingStore) else LoopThread()
    inner = store.async_store if isinstance(store, BlockingStore) else store

    async def build() -> AsyncBroadcastLifecycle:
        return AsyncBroadcastLifecycle(inner, **options)

    adapter = BlockingLifecycle(loop.run(build()), loop)
    return cast(BroadcastLifecycle, adapter), adapter


def async_url(url: str) -> str:
    """The asyncio driver's URL for a sync one (``sqlite://`` -> ``sqlite+aiosqlite://``; psycopg as it is)."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url.removeprefix("sqlite:")
    return url
