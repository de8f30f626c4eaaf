"""What the suite's throwaway servers (PostgreSQL, Redis) share: a process in a temporary directory,
stopped and removed at exit or at the end of a ``with`` block, whatever happened."""

from __future__ import annotations

import atexit
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from typing_extensions import Self


class TempServer:
    """A server process living in ``base``, a temporary directory. A subclass starts it in
    :meth:`start` (setting ``base`` and ``_proc`` and registering :meth:`stop` with ``atexit``) and
    says in :meth:`_halt` how to shut it down."""

    def __init__(self) -> None:
        self.base: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        """Start the server (the subclass's)."""
        raise NotImplementedError

    def _halt(self, proc: subprocess.Popen[bytes], base: Path) -> None:
        """Shut the running server ``proc`` down and wait for it (the subclass's)."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the server and delete its temp dir; idempotent."""
        atexit.unregister(self.stop)
        base, proc = self.base, self._proc
        if base is None:
            return
        try:
            if proc is not None:
                self._halt(proc, base)
        finally:
            self._proc = None
            self.base = None
            shutil.rmtree(base, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start the server."""
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        """Stop the server and remove its files, whatever happened."""
        self.stop()
