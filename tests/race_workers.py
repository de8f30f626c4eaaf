"""Worker processes for the cross-process race tests (a module of its own so ``spawn`` can import it)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

from broadcast_lifecycle import BroadcastLifecycle, TransitionRefused
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore


def accept_worker(url: str, names: list[str], jobs: Queue[int | None], results: Queue[tuple[str, str]],
                  barrier: Barrier) -> None:
    """For each broadcast id from ``jobs``, every name in ``names`` accepts one slot at the barrier."""
    lc = BroadcastLifecycle(SQLAlchemyStore.from_url(url, pool_size=len(names)))

    def accept(entity_id: int, name: str) -> None:
        barrier.wait()
        try:
            lc.kind("booking").accept(entity_id, name)
            results.put((name, "won"))
        except TransitionRefused:
            results.put((name, "refused"))
        except Exception as exc:
            results.put((name, f"error: {type(exc).__name__}: {exc}"))

    while (entity_id := jobs.get()) is not None:
        threads = [threading.Thread(target=accept, args=(entity_id, name)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def terminal_worker(url: str, command: str, start: datetime, after_deadline: datetime,
                    jobs: Queue[tuple[int, bool] | None], results: Queue[tuple[str, str]], barrier: Barrier) -> None:
    """For each ``(broadcast id, takes part)`` from ``jobs``, run ``command`` at the barrier: ``accept``,
    ``cancel``, ``expire`` or ``expire_due`` (the last two told it is past the deadline)."""
    lc = BroadcastLifecycle(SQLAlchemyStore.from_url(url, pool_size=2), clock=lambda: start)
    late = BroadcastLifecycle(lc.store, clock=lambda: after_deadline)
    commands: dict[str, Callable[[int], bool]] = {
        "accept": lambda entity_id: bool(lc.kind("booking").accept(entity_id, "t1")),
        "cancel": lambda entity_id: bool(lc.kind("booking").cancel(entity_id, reason="customer changed plans")),
        "expire": lambda entity_id: bool(late.kind("booking").expire(entity_id)),
        "expire_due": lambda entity_id: lc.expire_due(after_deadline) == 1,
    }
    lc.store.pending_events(1)  # connect before the first barrier
    while (job := jobs.get()) is not None:
        entity_id, takes_part = job
        barrier.wait()
        if not takes_part:
            results.put((command, "sat out"))
            continue
        try:
            results.put((command, "won" if commands[command](entity_id) else "lost"))
        except TransitionRefused:
            results.put((command, "refused"))
        except Exception as exc:
            results.put((command, f"error: {type(exc).__name__}: {exc}"))


def async_accept_worker(url: str, names: list[str], jobs: Queue[int | None], results: Queue[tuple[str, str]],
                        barrier: Barrier) -> None:
    """For each broadcast id from ``jobs``, one asyncio task per name in ``names`` accepts one slot, all
    started together once every process has reached the barrier."""
    import asyncio

    from broadcast_lifecycle import AsyncBroadcastLifecycle, AsyncSQLAlchemyStore

    async def main() -> None:
        store = AsyncSQLAlchemyStore.from_url(url, pool_size=len(names))
        bookings = AsyncBroadcastLifecycle(store).kind("booking")

        async def accept(entity_id: int, name: str, go: asyncio.Event) -> None:
            await go.wait()
            try:
                await bookings.accept(entity_id, name)
                results.put((name, "won"))
            except TransitionRefused:
                results.put((name, "refused"))
            except Exception as exc:
                results.put((name, f"error: {type(exc).__name__}: {exc}"))

        while (entity_id := await asyncio.to_thread(jobs.get)) is not None:
            go = asyncio.Event()
            tasks = [asyncio.create_task(accept(entity_id, name, go)) for name in names]
            await asyncio.to_thread(barrier.wait)
            go.set()
            await asyncio.gather(*tasks)
        await store.close()

    asyncio.run(main())
