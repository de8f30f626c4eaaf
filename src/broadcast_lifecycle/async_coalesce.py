"""Calls on one key, from one event loop, that come while one is running: queued, then run as a group.

The first call on a key runs as usual, in its caller's task (:meth:`Coalescer.enter` says it may); the
calls that come while it runs wait (:meth:`Coalescer.wait`), holding nothing, and once it lets them
(:meth:`Coalescer.leave`, as soon as they no longer need to wait for it) they run together, in order, in
one call of the group function, in a task of their own: no caller's cancellation stops a group half-way.
Calls that come while a group runs make the next group. What :mod:`.async_queues` (commands on one
broadcast) and :mod:`.async_marks` (marks of delivered events) are built on.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from .errors import error_per_caller
from .stores.async_sqlalchemy import bridge, wait_in_bridge

__all__ = ["Coalescer"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


class _Waiter(Generic[T, R]):
    __slots__ = ("item", "outcome")

    def __init__(self, item: T, loop: asyncio.AbstractEventLoop) -> None:
        self.item = item
        self.outcome: asyncio.Future[R] = loop.create_future()


class Coalescer(Generic[K, T, R]):
    """Per key and loop (tasks of different loops never wait for each other), the calls waiting behind the
    one running. ``run_group(key, items)`` returns one outcome per item, in order (an error is an outcome
    too); it runs in the greenlet bridge, as do the methods here. At most ``max_group()`` items make one
    group."""

    def __init__(self, run_group: Callable[[K, list[T]], list[R]], max_group: Callable[[], int]) -> None:
        self._run_group, self._max_group = run_group, max_group
        self._waiting: dict[tuple[asyncio.AbstractEventLoop, K], deque[_Waiter[T, R]]] = {}  # while one runs
        self._groups: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps weak ones)

    def enter(self, key: K) -> bool:
        """True when nothing runs on ``key``: the caller runs alone and must :meth:`leave` it (once)."""
        loop_key = (asyncio.get_running_loop(), key)
        if loop_key in self._waiting:
            return False
        self._waiting[loop_key] = deque()
        return True

    def wait(self, key: K, item: T) -> R:
        """Queue ``item`` behind what runs on ``key`` and return its group's outcome for it. Cancelled
        before its group formed, it is not run at all; after, its group runs on and its outcome is lost."""
        loop = asyncio.get_running_loop()
        waiting = self._waiting[(loop, key)]
        waiter: _Waiter[T, R] = _Waiter(item, loop)
        waiting.append(waiter)
        try:
            return wait_in_bridge(waiter.outcome)
        except asyncio.CancelledError:
            if waiter in waiting:
                waiting.remove(waiter)
            raise

    def leave(self, key: K) -> None:
        """What ran on ``key`` no longer holds the others: run what waits as the next group, or forget ``key``."""
        loop = asyncio.get_running_loop()
        self._hand_on((loop, key))

    def _hand_on(self, loop_key: tuple[asyncio.AbstractEventLoop, K]) -> None:
        waiting = self._waiting[loop_key]
        group = [waiting.popleft() for _ in range(min(len(waiting), self._max_group()))]
        if not group:
            del self._waiting[loop_key]
            return
        # An empty context: a group is no caller's (each one's own work after it runs in its own task).
        try:
            task = contextvars.Context().run(loop_key[0].create_task, bridge(self._run, loop_key, group))
        except Exception as exc:  # the loop's task factory refused: nobody will answer them otherwise
            for waiter in [*group, *self._waiting.pop(loop_key)]:
                if not waiter.outcome.done():
                    waiter.outcome.set_exception(error_per_caller(exc))
            return
        self._groups.add(task)
        task.add_done_callback(lambda done: self._after(done, loop_key, group))

    def _run(self, loop_key: tuple[asyncio.AbstractEventLoop, K], group: list[_Waiter[T, R]]) -> None:
        group = [waiter for waiter in group if not waiter.outcome.done()]  # cancelled before it began
        try:
            outcomes = self._run_group(loop_key[1], [waiter.item for waiter in group]) if group else []
            if len(outcomes) != len(group):
                raise RuntimeError(f"{len(group)} calls in a group got {len(outcomes)} outcomes")
        except Exception as exc:  # run_group gives errors as outcomes: this is a bug, each caller hears it
            self._hand_on(loop_key)
            for waiter in group:
                if not waiter.outcome.done():
                    waiter.outcome.set_exception(error_per_caller(exc))
            return
        self._hand_on(loop_key)
        for waiter, outcome in zip(group, outcomes, strict=True):  # (lengths checked above)
            if not waiter.outcome.done():  # else its caller was cancelled while the group ran
                waiter.outcome.set_result(outcome)

    def _after(self, task: asyncio.Task[None], loop_key: tuple[asyncio.AbstractEventLoop, K],
               group: list[_Waiter[T, R]]) -> None:
        """A group's task ended: if it was cancelled (its loop closing), nobody will answer its callers or
        those behind it: cancel them and forget the key."""
        self._groups.discard(task)
        if task.cancelled():
            for waiter in [*group, *self._waiting.pop(loop_key, deque())]:
                waiter.outcome.cancel()
