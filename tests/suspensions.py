"""Counting how often an awaitable suspends its task: each suspension is a wait on the loop (for
aiosqlite, a hop to its thread and back), so a count of 0 means the work never left the loop's thread."""

from __future__ import annotations

from collections.abc import Awaitable, Generator
from typing import Any

__all__ = ["Suspensions"]


class Suspensions:
    """Awaits ``awaitable`` and counts how often it suspended the task; a cancellation (or any error the
    loop throws in) reaches the awaitable as it would unwrapped."""

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.inner = awaitable.__await__()
        self.count = 0

    def __await__(self) -> Generator[Any, Any, Any]:
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = self.inner.throw(error) if error is not None else self.inner.send(value)
            except StopIteration as stop:
                return stop.value
            self.count += 1
            self.suspended()
            try:
                value, error = (yield yielded), None
            except BaseException as exc:
                value, error = None, exc

    def suspended(self) -> None:
        """Called each time the awaitable suspends the task, after ``count`` went up (a subclass's hook)."""
