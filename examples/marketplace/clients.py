"""Clients of the app, as a program drives it (the demo, the tests, a bench): a Socket.IO client that
records what it receives, and a small JSON HTTP client.

Waiting without sleeping: the app emits a command's events before it answers the command's HTTP
request (the bridge is awaited after the commit), and a Socket.IO connection delivers in order, so
once :meth:`LiveClient.barrier` has had its answer from the server, every event emitted to that client
before it is in :attr:`LiveClient.received`. Events that no request waits for (an expiry by the
sweeper) are awaited with :meth:`LiveClient.wait_for`, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import socketio

__all__ = ["Api", "LiveClient", "Received", "Reply"]


@dataclass(frozen=True)
class Received:
    """One event a client got: when (monotonic seconds), its name and its payload."""

    at: float
    name: str
    payload: dict[str, Any]

    @property
    def entity(self) -> tuple[str, Any]:
        """(kind, id) of the broadcast it is about."""
        return self.payload["kind"], self.payload["entityId"]


class LiveClient:
    """A python-socketio ``AsyncClient`` that records every event it receives, in arrival order."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.received: list[Received] = []
        self.sio = socketio.AsyncClient(reconnection=False)
        self._arrived = asyncio.Event()
        self.sio.on("*", self._record)

    def _record(self, name: str, payload: dict[str, Any]) -> None:
        self.received.append(Received(time.monotonic(), name, payload))
        self._arrived.set()

    async def connect(self, url: str, token: str | None, *, timeout: float = 10.0) -> None:
        """Connect with ``token``; ``socketio.exceptions.ConnectionError`` when the app refuses it."""
        await self.sio.connect(url, auth={"token": token} if token is not None else None, transports=["websocket"],
                               wait_timeout=timeout)

    async def barrier(self, timeout: float = 10.0) -> None:
        """Return once every event the app emitted to this client before the call has been received."""
        await self.sio.call("barrier", timeout=timeout)

    async def wait_for(self, done: Callable[[Sequence[Received]], bool], timeout: float = 10.0) -> None:
        """Wait until ``done(received)`` is true; ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            self._arrived.clear()  # before the check: an event recorded after it sets the flag again
            if done(self.received):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.label}: still waiting after {timeout}s; got {self.names()}")
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                continue

    def names(self, kind: str | None = None, entity_id: Any = None) -> list[str]:
        """Names of the events received (about one broadcast, when given), in order."""
        return [r.name for r in self.about(kind, entity_id)]

    def about(self, kind: str | None = None, entity_id: Any = None) -> list[Received]:
        """The events received about ``(kind, entity_id)`` (every event when not given), in order."""
        return [r for r in self.received if kind is None or r.entity == (kind, entity_id)]

    async def close(self) -> None:
        """Disconnect."""
        await self.sio.disconnect()


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, JSON body, headers (names in lower case)."""

    status: int
    body: Any
    headers: dict[str, str]


class Api:
    """JSON over HTTP to the app, as one user (``token``)."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str | None) -> None:
        self.http = http
        self.url = url
        self.token = token

    async def request(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> Reply:
        """Send ``body`` (JSON) with the token and, when given, an ``Idempotency-Key``."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token is not None else {}
        if key is not None:
            headers["Idempotency-Key"] = key
        async with self.http.request(method, self.url + path, json=body, headers=headers) as response:
            headers = {name.lower(): value for name, value in response.headers.items()}
            return Reply(response.status, await response.json(), headers)

    async def post(self, path: str, body: Any = None, *, key: str | None = None) -> Reply:
        """``POST path``."""
        return await self.request("POST", path, body, key=key)

    async def get(self, path: str) -> Reply:
        """``GET path``."""
        return await self.request("GET", path)
