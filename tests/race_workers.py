"""Worker processes for the cross-process race tests (a module of its own so ``spawn`` can import it)."""

from __future__ import annotations

import threading
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
            lc.accept("booking", entity_id, name)
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
