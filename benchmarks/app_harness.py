"""The parts of ``bench_app.py`` that do not know the app: a uvicorn server in a child process (with
its CPU time), many python-socketio clients on one loop that record every event with its arrival
time, and the arithmetic of the figures.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import socketio

__all__ = ["Heard", "Listener", "Listeners", "Server", "Stats", "free_port", "stats"]

HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on loopback nobody listens on now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class Server:
    """``uvicorn <target>`` in a child process on loopback, one worker, no access log.

    Started when entered, stopped (SIGINT, then SIGKILL past ``stop_timeout``) when left.
    """

    def __init__(self, target: str, *, app_dir: Path, env: Mapping[str, str] | None = None, factory: bool = False,
                 start_timeout: float = 60.0, stop_timeout: float = 10.0) -> None:
        self.target = target
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self._argv = [sys.executable, "-m", "uvicorn", target, "--app-dir", str(app_dir), "--host", HOST,
                      "--port", str(self.port), "--workers", "1", "--log-level", "info", "--no-access-log",
                      "--lifespan", "on", "--timeout-graceful-shutdown", "3", "--ws", "websockets-sansio",
                      *(["--factory"] if factory else [])]
        self._env = {**os.environ, **(env or {})}
        self._start_timeout = start_timeout
        self._stop_timeout = stop_timeout
        self._ready = threading.Event()
        self._log: list[str] = []
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Server:
        self._process = subprocess.Popen(self._argv, env=self._env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._drain, name=f"log {self.target}", daemon=True).start()
        if not self._ready.wait(self._start_timeout) or self._process.poll() is not None:
            self.__exit__()
            raise RuntimeError(f"{self.target} did not start on {self.url}:\n" + "".join(self._log[-30:]))
        return self

    def _drain(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for line in self._process.stderr:  # uvicorn logs to stderr; reading it keeps the pipe from filling
            self._log.append(line)
            if "Uvicorn running on" in line or "Application startup failed" in line:
                self._ready.set()
        self._ready.set()  # the process ended

    def __exit__(self, *exc: object) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(self._stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines the server logged."""
        return "".join(self._log[-lines:])

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server process has used so far (Linux ``/proc``)."""
        assert self._process is not None
        stat = Path(f"/proc/{self._process.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass(frozen=True)
class Heard:
    """One event a client received, with the ``perf_counter`` at its arrival."""

    event: str
    payload: dict[str, Any]
    at: float


Key = tuple[str, str, str, str]
"""(user, event name, broadcast id, status): what a waiter waits for."""


def key_of(user: str, event: str, payload: Mapping[str, Any]) -> Key:
    """The waiter key of ``payload`` heard by ``user``."""
    entity = payload.get("bookingId", payload.get("orderId"))
    return user, event, str(entity), str(payload.get("status"))


class Listener:
    """One python-socketio client, known to the app as ``user`` (its room), that records what it hears."""

    def __init__(self, user: str, waiters: dict[Key, asyncio.Future[float]], changed: asyncio.Event) -> None:
        self.user = user
        self.heard: list[Heard] = []
        self._waiters = waiters
        self._changed = changed
        self.client = socketio.AsyncClient(reconnection=False)
        self.client.on("*", self._on_event)

    async def _on_event(self, event: str, payload: dict[str, Any]) -> None:
        at = time.perf_counter()
        self.heard.append(Heard(event, payload, at))
        self._changed.set()
        waiter = self._waiters.pop(key_of(self.user, event, payload), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)


@dataclass
class Listeners:
    """Many listeners on one loop, and the waiters their events resolve."""

    users: list[str]
    waiters: dict[Key, asyncio.Future[float]] = field(default_factory=dict)
    by_user: dict[str, Listener] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def connect(self, url: str, auth: Callable[[str], dict[str, Any]], *, batch: int = 25) -> None:
        """Connect every user to ``url`` (websocket transport), ``batch`` handshakes at a time."""
        for user in self.users:
            self.by_user[user] = Listener(user, self.waiters, self.changed)
        for start in range(0, len(self.users), batch):
            chunk = self.users[start:start + batch]
            await asyncio.gather(*(self.by_user[user].client.connect(
                url, auth=auth(user), transports=["websocket"], wait_timeout=30) for user in chunk))

    async def disconnect(self) -> None:
        """Disconnect every client."""
        await asyncio.gather(*(listener.client.disconnect() for listener in self.by_user.values()))

    def expect(self, user: str, event: str, entity: object, status: str) -> asyncio.Future[float]:
        """A future resolved with the arrival time of that event at ``user`` (register before causing it)."""
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters[(user, event, str(entity), status)] = waiter
        return waiter

    def heard(self) -> dict[str, list[Heard]]:
        """Each user's events so far, in arrival order."""
        return {user: list(listener.heard) for user, listener in self.by_user.items()}

    def clear(self) -> None:
        """Forget what was heard so far."""
        for listener in self.by_user.values():
            listener.heard.clear()

    async def settle(self, expected: Callable[[], bool], *, timeout: float = 30.0) -> None:
        """Wait until ``expected()`` holds, checking it after each event heard (bounded by ``timeout``)."""
        async def until() -> None:
            while not expected():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(until(), timeout)


async def timed(send: Callable[[], Awaitable[object]], arrival: asyncio.Future[float], *,
                timeout: float = 10.0) -> float:
    """Seconds from just before ``send()`` to ``arrival`` resolving."""
    started = time.perf_counter()
    await send()
    return await asyncio.wait_for(arrival, timeout) - started


@dataclass(frozen=True)
class Stats:
    """Latency figures of one run, in milliseconds, and CPU per operation in microseconds."""

    count: int
    median_ms: float
    p99_ms: float
    cpu_us: float

    def row(self, label: str) -> str:
        """One line of the report."""
        return (f"   {label:<44} n={self.count:<4} median {self.median_ms:6.2f} ms   p99 {self.p99_ms:6.2f} ms   "
                f"server CPU {self.cpu_us:7.0f} us/op")


def stats(latencies: Iterable[float], cpu_seconds: float) -> Stats:
    """The figures of ``latencies`` (seconds) and the server CPU they cost."""
    values = sorted(latencies)
    p99 = statistics.quantiles(values, n=100, method="inclusive")[98]
    return Stats(len(values), statistics.median(values) * 1e3, p99 * 1e3, cpu_seconds / len(values) * 1e6)
