"""Throwaway Redis server for the test suite (the Socket.IO many-nodes tests).

Runs Debian's ``redis-server`` (``apt-get install redis-server``; ``make test`` and ``.ci/run`` install
it where they can) in a temporary directory, reachable only through a Unix socket there (no TCP
port: nothing else on the machine can reach it or collide with it), without persistence.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
from temp_server import TempServer
from typing_extensions import Self

ENV_BIN = "BROADCAST_LIFECYCLE_REDIS_SERVER"
"""Set to the path of a ``redis-server`` binary to use instead of the one on ``PATH``."""


class RedisServerError(RuntimeError):
    """The server could not be started or used."""


def find_binary() -> Path | None:
    """``$BROADCAST_LIFECYCLE_REDIS_SERVER``, else ``redis-server`` on ``PATH`` (or in ``/usr/sbin``), or None."""
    env = os.environ.get(ENV_BIN)
    if env:
        if not Path(env).is_file():
            raise RedisServerError(f"${ENV_BIN}={env} is not a file")
        return Path(env)
    found = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/bin")
    return Path(found) if found else None


class RedisServer(TempServer):
    """A private ``redis-server`` on a Unix socket in a temp dir; use as a context manager (or start/stop)."""

    def __init__(self, binary: Path | None = None, start_timeout: float = 20.0) -> None:
        super().__init__()
        found = binary or find_binary()
        if found is None:
            raise RedisServerError(f"redis-server not found: apt-get install redis-server, or set ${ENV_BIN}")
        self.binary = found
        self.start_timeout = start_timeout

    @property
    def socket_path(self) -> Path:
        """The server's Unix socket."""
        if self.base is None:
            raise RedisServerError("server not started")
        return self.base / "redis.sock"

    @property
    def url(self) -> str:
        """The URL redis-py and python-socketio's Redis managers connect with (``unix://...``)."""
        return f"unix://{self.socket_path}"

    def client(self) -> redis.Redis:
        """A redis-py client of this server."""
        return redis.Redis(unix_socket_path=str(self.socket_path))

    def start(self) -> Self:
        """Start the server and wait until it answers PING."""
        if self.base is not None:
            return self
        self.base = base = Path(tempfile.mkdtemp(prefix="bl-redis-"))
        atexit.register(self.stop)
        try:
            cmd = [str(self.binary), "--port", "0", "--unixsocket", str(base / "redis.sock"),
                   "--unixsocketperm", "700", "--dir", str(base), "--save", "", "--appendonly", "no",
                   "--daemonize", "no", "--logfile", str(base / "redis.log")]
            self._proc = subprocess.Popen(cmd, cwd=base, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                          start_new_session=True)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RedisServerError(f"redis-server exited with {self._proc.returncode}\n{self.log_tail()}")
            if self.socket_path.exists():
                with contextlib.suppress(redis.ConnectionError), self.client() as client:
                    if client.ping():
                        return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=0.02)  # paces the poll, and ends it at once if the server dies
        raise RedisServerError(f"redis-server not ready after {self.start_timeout}s\n{self.log_tail()}")

    def wait_for_subscribers(self, channel: str, count: int, timeout: float = 20.0) -> None:
        """Wait until ``count`` clients listen on ``channel`` (a Socket.IO node subscribes once its first
        client connects; a message published before that would not reach it). Redis has no signal for
        this, so it is polled, bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        pause = threading.Event()
        with self.client() as client:
            while True:
                numsub: Any = client.pubsub_numsub(channel)
                if numsub[0][1] >= count:
                    return
                assert time.monotonic() < deadline, f"only {numsub[0][1]} of {count} subscribers on {channel!r}"
                pause.wait(0.01)

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the server log (for error messages)."""
        log = self.base / "redis.log" if self.base else None
        if log is None or not log.exists():
            return "(no server log)"
        return "--- redis log tail ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def _halt(self, proc: subprocess.Popen[bytes], base: Path) -> None:
        """SIGTERM (redis-server shuts down at once: nothing to save); killed if it does not stop in time."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":  # `python tests/redis_server.py`: is there a server binary?
    binary = find_binary()
    print(binary or "redis-server not found")
    sys.exit(0 if binary else 1)
