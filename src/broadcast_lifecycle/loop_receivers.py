"""Coroutine receivers on the bus: each is awaited on the event loop it was connected on, and only there.

The bus calls every receiver as a plain function. A coroutine receiver is connected wrapped in a
:class:`LoopReceiver`, which runs it on its own loop from wherever the event is sent:

- from the async lifecycle (a command, the async sweeper or relay): the send already runs in
  SQLAlchemy's greenlet bridge on that loop, so the receiver is awaited right there, before the
  command returns, as a sync receiver is called before a sync command returns;
- from another thread (a sync lifecycle, a sweeper or relay thread): it is handed to the loop with
  ``run_coroutine_threadsafe`` and the sender waits for its outcome;
- from the loop's own thread outside the bridge (a blocking sync command called in async code), or
  when the loop no longer runs: it cannot run, so it counts as failed and the event stays in the
  outbox for the relay.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import InvalidArgument
from .events import BroadcastEvent

__all__ = ["LoopReceiver", "ReceiverUnreachable", "is_coroutine_receiver"]


class ReceiverUnreachable(RuntimeError):
    """A coroutine receiver's loop could not run it from where the event was sent."""


def is_coroutine_receiver(receiver: object) -> bool:
    """True for an ``async def`` function, or an object whose ``__call__`` is one."""
    call = None if inspect.isroutine(receiver) else next(
        (klass.__dict__["__call__"] for klass in type(receiver).__mro__ if "__call__" in klass.__dict__), None)
    return inspect.iscoroutinefunction(receiver) or inspect.iscoroutinefunction(call)


class LoopReceiver:
    """A coroutine receiver bound to the loop it was connected on (see the module's docstring)."""

    def __init__(self, receiver: Callable[[BroadcastEvent], Awaitable[Any]],
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                raise InvalidArgument(
                    f"receiver {_label(receiver)} is a coroutine function: connect it while its event loop runs "
                    "(in the app's startup or lifespan), so its events are awaited on that loop") from None
        self.receiver = receiver
        self.loop = loop
        self.__qualname__ = _label(receiver)  # the bus names a receiver by it: the host's function's name

    def __call__(self, event: BroadcastEvent) -> None:
        loop = self.loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            from sqlalchemy.util.concurrency import await_, in_greenlet

            if not in_greenlet():
                raise ReceiverUnreachable(
                    f"{self.__qualname__} is a coroutine receiver and the event was sent by a blocking call on its "
                    "loop's thread; use the async lifecycle there (the relay delivers this event)")
            await_(self.receiver(event))
            return
        if loop.is_closed() or not loop.is_running():
            raise ReceiverUnreachable(f"the event loop of {self.__qualname__} is not running (the relay delivers "
                                      "this event once it is)")
        asyncio.run_coroutine_threadsafe(_call(self.receiver, event), loop).result()

    def __repr__(self) -> str:
        return f"LoopReceiver({self.__qualname__})"


async def _call(receiver: Callable[[BroadcastEvent], Awaitable[Any]], event: BroadcastEvent) -> None:
    await receiver(event)


def _label(receiver: object) -> str:
    return getattr(receiver, "__qualname__", None) or repr(receiver)
