"""Progress of a long operator command (a sweep of a large backlog, a relay drain, a prune) on a terminal.

A :class:`Progress` redraws one line on its stream, at most every ``interval`` seconds, while the
stream is a terminal; piped or redirected, it writes nothing, so scripts and logs stay clean.
Commands hand ``progress.advance`` to the operation as its per-batch callback.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from typing_extensions import Self

__all__ = ["Progress"]


class Progress:
    """``label: 12,000 of 50,000 (24%), 3,400/s`` redrawn in place on a terminal; silent otherwise.

    ``total`` may be unknown (``None``). ``enabled`` overrides the terminal check (``None``: draw only
    when ``stream.isatty()``). Use as a context manager, or call :meth:`close` to end the line.
    """

    def __init__(self, label: str, total: int | None = None, *, stream: TextIO | None = None,
                 enabled: bool | None = None, interval: float = 0.1) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = self._stream.isatty() if enabled is None else enabled
        self._interval = interval
        self._started = time.monotonic()
        self._drawn_at: float | None = None
        self._width = 0

    def advance(self, count: int = 1) -> None:
        """Count ``count`` more items done; redraw if the last drawing is older than the interval."""
        self.done += count
        now = time.monotonic()
        if self.enabled and (self._drawn_at is None or now - self._drawn_at >= self._interval):
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The text of the progress line as it stands."""
        elapsed = (time.monotonic() if now is None else now) - self._started
        text = f"{self.label}: {self.done:,}"
        if self.total:
            text += f" of {self.total:,} ({min(100, self.done * 100 // self.total)}%)"
        if elapsed >= 0.5 and self.done:
            text += f", {self.done / elapsed:,.0f}/s"
        return text

    def _draw(self, now: float) -> None:
        text = self.line(now)
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = len(text)
        self._drawn_at = now

    def close(self) -> None:
        """Draw the final count and end the line (nothing if it never drew)."""
        if self.enabled and self._drawn_at is not None:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()
            self._drawn_at = None

    def __enter__(self) -> Self:
        """Return the progress line."""
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """End the line, whatever happened."""
        self.close()
