"""Socket.IO servers on loopback for the bridge's tests, and clients that record what they hear.

- :class:`AsgiNode`: an ASGI app (a ``socketio.AsyncServer``) under uvicorn in a thread of its own,
  with its own event loop; ``setup`` runs on that loop before the node serves (connect the bridge
  there), and ``call`` runs a coroutine on it from the test's thread.
- :class:`WsgiNode`: a WSGI app (a sync ``socketio.Server``) under wsgiref's threading server.
- :class:`ProcessNode`: an app process, ``uvicorn socketio_node_app:app`` on a socket this process
  bound and hands over (``--fd``).
- :class:`AsyncListener` / :class:`Listener`: a real client that records every event it hears, and a
  *flush* handshake: the server emits :data:`FLUSH` after the events under test; since one socket's
  packets arrive in the order they were sent, a client that has heard the flush has heard everything
  sent before it, and nothing has to be waited for by time.

Every socket (a listening one included) is bound before the server starts, so a client can connect
at once: the kernel holds the connection until the server accepts it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import select
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import socketio
import uvicorn
from typing_extensions import Self

T = TypeVar("T")

FLUSH = "test:flush"
"""The event a test emits to every client after the events under test."""
TIMEOUT = 20.0
"""How long any one wait of a test may take before it fails (never reached when things work)."""

Heard = tuple[str, dict[str, Any]]
"""An event a client heard: its name and its data."""


def listening_socket() -> socket.socket:
    """A TCP socket bound to a free port on loopback, listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


class AsgiNode:
    """An ASGI app under uvicorn on loopback, in a thread with its own event loop."""

    def __init__(self, app: Any, setup: Callable[[], Awaitable[None]] | None = None) -> None:
        self._sock = listening_socket()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", ws="websockets-sansio"))
        self._setup = setup
        self._ready: concurrent.futures.Future[asyncio.AbstractEventLoop] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run, name=f"uvicorn {self.url}", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            try:
                if self._setup is not None:
                    await self._setup()
            except BaseException as exc:
                self._ready.set_exception(exc)
                return
            self._ready.set_result(asyncio.get_running_loop())
            await self._server.serve(sockets=[self._sock])

        asyncio.run(main())

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The node's event loop (once started)."""
        return self._ready.result(TIMEOUT)

    def start(self) -> Self:
        """Start serving; returns once ``setup`` has run on the node's loop."""
        self._thread.start()
        self._ready.result(TIMEOUT)
        return self

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the node's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(TIMEOUT)

    def stop(self) -> None:
        """Stop serving (open connections are closed) and wait until the loop has ended."""
        self._server.should_exit = True
        self._thread.join(TIMEOUT)
        self._sock.close()
        assert not self._thread.is_alive(), f"uvicorn on {self.url} did not stop"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class WsgiNode:
    """A WSGI app under wsgiref's threading server on loopback (long-polling only: wsgiref has no
    WebSocket upgrade)."""

    def __init__(self, app: Any) -> None:
        self._server = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer,
                                   handler_class=_QuietHandler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"wsgi {self.url}", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(TIMEOUT)


class ProcessNode:
    """``uvicorn socketio_node_app:app`` in a process of its own, on a loopback socket bound here."""

    def __init__(self, name: str, env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self._sock = listening_socket()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self.log = log_dir / f"{name}.log"
        fd = self._sock.fileno()
        self._ready, ready_w = os.pipe()  # the app writes a line to it once its startup has run
        tests = Path(__file__).resolve().parent
        try:
            with open(self.log, "wb") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "uvicorn", "socketio_node_app:app", "--fd", str(fd), "--lifespan", "on",
                     "--ws", "websockets-sansio", "--log-level", "warning"],
                    pass_fds=[fd, ready_w], cwd=tests, stdout=log, stderr=subprocess.STDOUT,
                    env={**os.environ, **env, "BL_NODE_NAME": name, "BL_NODE_READY_FD": str(ready_w),
                         "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")])})
        finally:
            os.close(ready_w)

    def wait_ready(self) -> None:
        """Wait until the app's startup has run (it then serves the socket bound here)."""
        with os.fdopen(self._ready, "rb") as ready:
            readable, _, _ = select.select([ready], [], [], TIMEOUT)
            ready_line = ready.readline() if readable else b"(timed out)"  # empty: the process ended first
        assert ready_line == b"ready\n", f"node {self.name} did not start: {ready_line!r}\n{self.log_tail()}"

    def log_tail(self, lines: int = 40) -> str:
        """The end of the node's output (for failure messages)."""
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return f"--- {self.name} log tail ---\n" + "\n".join(text[-lines:])

    def stop(self) -> None:
        """Stop the process (SIGTERM: uvicorn shuts down gracefully) and wait for it."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._sock.close()


class AsyncListener:
    """A ``socketio.AsyncClient`` (WebSocket) that records every event it hears, on the caller's loop."""

    def __init__(self, url: str, auth: dict[str, str]) -> None:
        self.url = url
        self.auth = auth
        self.heard: list[Heard] = []
        self.client = socketio.AsyncClient(reconnection=False, request_timeout=TIMEOUT)
        self._flushes = 0
        self._flushed = asyncio.Event()
        self.client.on("*", self._on_event)

    async def _on_event(self, event: str, data: Any = None) -> None:
        if event == FLUSH:
            self._flushes += 1
            self._flushed.set()
            return
        self.heard.append((event, data))

    async def connect(self) -> Self:
        """Connect (returns once the server's connect handler has put the socket in its rooms)."""
        await self.client.connect(self.url, auth=self.auth, transports=["websocket"], wait_timeout=TIMEOUT)
        return self

    async def flushed(self, count: int = 1) -> list[Heard]:
        """Wait until the ``count``-th flush has arrived; returns what was heard before it."""
        async def wait() -> None:
            while self._flushes < count:
                self._flushed.clear()
                await self._flushed.wait()

        await asyncio.wait_for(wait(), TIMEOUT)
        return list(self.heard)

    async def disconnect(self) -> None:
        """Disconnect."""
        await self.client.disconnect()


class Listener:
    """A sync ``socketio.Client`` that records every event it hears."""

    def __init__(self, url: str, auth: dict[str, str], transports: list[str] | None = None) -> None:
        self.url = url
        self.auth = auth
        self.transports = transports or ["websocket"]
        self.heard: list[Heard] = []
        self.client = socketio.Client(reconnection=False, request_timeout=TIMEOUT)
        self._flushes = 0
        self._flushed = threading.Condition()
        self.client.on("*", self._on_event)

    def _on_event(self, event: str, data: Any = None) -> None:
        if event == FLUSH:
            with self._flushed:
                self._flushes += 1
                self._flushed.notify_all()
            return
        self.heard.append((event, data))

    def connect(self) -> Self:
        """Connect (returns once the server's connect handler has put the socket in its rooms)."""
        self.client.connect(self.url, auth=self.auth, transports=self.transports, wait_timeout=int(TIMEOUT))
        return self

    def flushed(self, count: int = 1) -> list[Heard]:
        """Wait until the ``count``-th flush has arrived; returns what was heard before it."""
        with self._flushed:
            assert self._flushed.wait_for(lambda: self._flushes >= count, TIMEOUT), f"no flush at {self.auth}"
        return list(self.heard)

    def disconnect(self) -> None:
        """Disconnect."""
        self.client.disconnect()


def hear(node: AsgiNode, users: Iterable[tuple[str, str]],
         drive: Callable[[], Coroutine[Any, Any, object]]) -> dict[tuple[str, str], list[Heard]]:
    """Connect an :class:`AsyncListener` per ``(role, user)`` to ``node``, run ``drive()`` on the node's
    loop (it ends by emitting :data:`FLUSH`), and return what each heard before the flush."""
    async def scenario() -> dict[tuple[str, str], list[Heard]]:
        listeners = {(role, user): await AsyncListener(node.url, {"role": role, "user": user}).connect()
                     for role, user in users}
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(drive(), node.loop))
            return {key: await listener.flushed() for key, listener in listeners.items()}
        finally:
            for listener in listeners.values():
                await listener.disconnect()

    return asyncio.run(scenario())
