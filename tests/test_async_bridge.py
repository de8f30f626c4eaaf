"""The greenlet bridge the async facade runs its commands in: SQLAlchemy's ``await_`` works inside it, the
caller's contextvars go in, results and errors come out, a cancellation is raised at the await it lands on,
and its greenlets are reused call after call, each only in the thread that made it."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import pytest
from greenlet import getcurrent  # type: ignore[import-untyped, unused-ignore]
from sqlalchemy.util.concurrency import await_

from broadcast_lifecycle.stores.async_sqlalchemy import bridge

REQUEST = contextvars.ContextVar("request", default="none")


def _add_after_a_wait(a: int, b: int) -> tuple[int, str]:
    """Waits on the loop once (as a statement would), then answers with the sum and the caller's request."""
    total: int = await_(asyncio.sleep(0, result=a + b))
    return total, REQUEST.get()


def _fail() -> None:
    raise LookupError("no such booking")


def test_a_call_waits_on_the_loop_sees_the_callers_context_and_returns_or_raises() -> None:
    """fn's await_ is awaited on the running loop, fn sees the caller's contextvars, its result comes back and
    its exception is raised in the caller with its own type."""

    async def scenario() -> None:
        REQUEST.set("r-1")
        assert await bridge(_add_after_a_wait, 2, b=3) == (5, "r-1")
        with pytest.raises(LookupError, match="no such booking"):
            await bridge(_fail)
        REQUEST.set("r-2")
        assert await bridge(_add_after_a_wait, 1, b=1) == (2, "r-2")

    asyncio.run(scenario())


def test_greenlets_are_reused_and_concurrent_calls_get_their_own() -> None:
    """A call that has ended hands its greenlet to the next call; calls in flight at once run in different
    greenlets, each resumed with its own result."""

    def whoami(wait: bool) -> Any:
        if wait:
            await_(asyncio.sleep(0))
        return getcurrent()

    async def scenario() -> None:
        first = await bridge(whoami, False)
        assert await bridge(whoami, False) is first
        together = await asyncio.gather(*(bridge(whoami, True) for _ in range(3)))
        assert len({id(g) for g in together}) == 3

    asyncio.run(scenario())


def test_a_cancellation_is_raised_at_fns_await_and_the_greenlet_serves_the_next_call() -> None:
    """A task cancelled while fn waits gets CancelledError raised inside fn at that await_ (so fn's own clean-up
    runs), then in the task; the next call runs normally."""
    cleaned: list[str] = []
    started = asyncio.Event()

    def wait_forever() -> None:
        started.set()
        try:
            await_(asyncio.Event().wait())
        except asyncio.CancelledError:
            cleaned.append("rolled back")
            raise

    async def scenario() -> None:
        task = asyncio.ensure_future(bridge(wait_forever))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned == ["rolled back"]
        assert await bridge(_add_after_a_wait, 20, b=22) == (42, "none")

    asyncio.run(scenario())


def test_loops_in_two_threads_use_their_own_greenlets() -> None:
    """Two threads, each running its own event loop, bridge calls at the same time without switching into the
    other thread's greenlets."""
    barrier = threading.Barrier(2)
    answers: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def in_thread(n: int) -> None:
        async def scenario() -> None:
            await bridge(_add_after_a_wait, 0, b=0)  # leaves a greenlet in this thread's pool
            barrier.wait()
            for _ in range(50):
                answers.append(await bridge(_add_after_a_wait, n, b=1))

        try:
            asyncio.run(scenario())
        except BaseException as exc:  # reported below: a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=in_thread, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(set(answers)) == [(2, "none"), (3, "none")] and len(answers) == 100
