"""Run the app under uvicorn on a free loopback port, in a thread (the demo and the tests) or in the
foreground (``make serve``)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from .app import create_app
from .settings import Settings

__all__ = ["RunningApp", "free_socket", "running_app"]


def free_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host`` (``port`` 0: one the system picks)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


@dataclass(frozen=True)
class RunningApp:
    """An app serving in this process."""

    url: str
    settings: Settings
    server: uvicorn.Server


class _Server(uvicorn.Server):
    """uvicorn's server, telling a thread when it has started serving (or has given up)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.settled = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.settled.set()

    def run(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            super().run(sockets=sockets)
        finally:
            self.settled.set()  # a lifespan that failed ends the server before startup() is reached


@contextlib.contextmanager
def running_app(settings: Settings, *, startup_timeout: float = 30.0, **app_options: Any) -> Iterator[RunningApp]:
    """Serve the app on a free loopback port in a thread until the block ends; yields once the
    lifespan (migrations, store, sweeper, relay) has started."""
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings, **app_options), log_level="warning", lifespan="on",
                            ws="websockets-sansio")
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="marketplace-uvicorn",
                              daemon=True)
    thread.start()
    if not server.settled.wait(startup_timeout) or not server.started:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        raise RuntimeError("the app did not start (see the log above)")
    try:
        yield RunningApp(f"http://127.0.0.1:{port}", settings, server)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
