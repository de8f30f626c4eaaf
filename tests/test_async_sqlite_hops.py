"""On an asyncio SQLite engine a write transaction of the store's own runs whole in one hop to aiosqlite's
thread: a command waits on the loop once, its host guards run in that thread, and a refusal or a failure
inside the hop rolls the transaction back and leaves the connection usable."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Generator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from broadcast_lifecycle import (
    AsyncBroadcastLifecycle,
    AsyncSQLAlchemyStore,
    BroadcastSnapshot,
    CommandContext,
    TransitionRefused,
    Trigger,
)


class Waits:
    """Awaits ``awaitable`` and counts how often it suspended the task (each a wait on the loop)."""

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.inner = awaitable.__await__()
        self.count = 0

    def __await__(self) -> Generator[Any, Any, Any]:
        value: Any = None
        while True:
            try:
                yielded = self.inner.send(value)
            except StopIteration as stop:
                return stop.value
            self.count += 1
            value = yield yielded


def test_a_command_is_one_hop_and_its_guard_runs_in_aiosqlites_thread(tmp_path: Path) -> None:
    """An accept with a reason (read, decide, write under the lock) and a cancel each wait on the loop once;
    the host guard runs off the loop's thread; a guard's refusal writes nothing and the next command works."""

    async def scenario() -> None:
        store = AsyncSQLAlchemyStore.from_url(f"sqlite+aiosqlite:///{tmp_path / 'hops.db'}")
        await store.create_all()
        lifecycle = AsyncBroadcastLifecycle(store)
        bookings = lifecycle.kind("booking")
        threads: list[int] = []

        def not_t2(snapshot: BroadcastSnapshot, ctx: CommandContext) -> str | None:
            threads.append(threading.get_ident())
            return "t2 may not accept" if ctx.transporter_id == "t2" else None

        bookings.add_guard(Trigger.ACCEPT, not_t2)
        entity_id = (await bookings.create("c1", slots=2)).id
        await bookings.start_broadcast(entity_id, ["t1", "t2"])
        await bookings.activate(entity_id, ttl=timedelta(minutes=5))
        accept = Waits(bookings.accept(entity_id, "t1", reason="took it"))
        accepted = (await accept).snapshot
        assert (accepted.slots_filled, accept.count) == (1, 1)
        assert threads and threading.get_ident() not in threads
        with pytest.raises(TransitionRefused, match="t2 may not accept"):
            await bookings.accept(entity_id, "t2")
        assert (await bookings.get(entity_id)).version == accepted.version
        cancel = Waits(bookings.cancel(entity_id, reason="changed plans"))
        cancelled = (await cancel).snapshot
        assert (cancelled.status.value, cancel.count) == ("cancelled", 1)
        assert [h.trigger for h in await bookings.history(entity_id)][-2:] == ["accept", "cancel"]
        await store.close()

    asyncio.run(scenario())
