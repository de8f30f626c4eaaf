"""The example marketplace app under test: served by uvicorn on loopback, driven by real clients."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from marketplace.auth import Role
from marketplace.clients import Api, LiveClient, Received
from marketplace.db import migrate, seed_transporters
from marketplace.fixtures import demo_transporters, token_for
from marketplace.server import RunningApp, running_app
from marketplace.settings import Settings

CLOSING = ("FULLY_FILLED", "CANCELLED", "EXPIRED", "COMPLETED")
NEARBY_VANS = ("t-1", "t-2", "t-3")
"""The demo transporters with a van near the pickup (t-4 drives a truck nearby, t-9 a van far away)."""


@contextlib.contextmanager
def serve(database_url: str, *, redis_url: str | None = None, redis_channel: str = "socketio",
          secret: bytes | None = None, relay_grace: float = 10.0) -> Iterator[RunningApp]:
    """The app on ``database_url`` (migrated, demo transporters seeded), with a fast sweeper; with
    ``redis_url``, behind python-socketio's Redis manager on ``redis_channel`` (several nodes share
    ``secret``)."""
    migrate(database_url)
    seed_transporters(database_url, demo_transporters())
    settings = Settings(database_url=database_url, sweep_every=0.1, relay_every=0.5, migrate=False,
                        redis_url=redis_url, redis_channel=redis_channel, relay_grace=relay_grace)
    if secret is not None:
        settings = dataclasses.replace(settings, secret=secret)
    with running_app(settings) as app:
        yield app


def role_of(user: str) -> Role:
    """Test users are named by role: ``c-...`` customers, ``t-...`` transporters."""
    return "customer" if user.startswith("c-") else "transporter"


@dataclass
class Session:
    """Connected Socket.IO clients and HTTP clients of some users."""

    app: RunningApp
    live: dict[str, LiveClient]
    api: dict[str, Api]

    async def barrier(self) -> None:
        """Every event emitted to any client so far has been received."""
        for client in self.live.values():
            await client.barrier()


@contextlib.asynccontextmanager
async def session(app: RunningApp, users: Sequence[str]) -> AsyncIterator[Session]:
    """Connect each of ``users`` over Socket.IO and give each an HTTP client; disconnect at the end."""
    secret = app.settings.secret
    live = {user: LiveClient(user) for user in users}
    async with aiohttp.ClientSession() as http:
        try:
            for user, client in live.items():
                await client.connect(app.url, token_for(user, role_of(user), secret))
            yield Session(app, live, {u: Api(http, app.url, token_for(u, role_of(u), secret)) for u in users})
        finally:
            for client in live.values():
                await client.close()


def distinct(received: Sequence[Received]) -> list[Received]:
    """``received`` without repeats of an event id, as a client de-duplicating at-least-once delivery keeps it."""
    first: dict[str, Received] = {}
    for r in received:
        first.setdefault(r.payload["eventId"], r)
    return list(first.values())


def names_and_versions(received: Sequence[Received]) -> list[tuple[str, int]]:
    """(event name, version) of each event, in arrival order."""
    return [(r.name, r.payload["version"]) for r in received]


def by_version(received: Sequence[Received]) -> list[Received]:
    """``received`` in version order, as a client orders them (the page keeps the highest version): the
    events of two commands that commit at once may be dispatched, and so arrive, in either order."""
    return sorted(received, key=lambda r: r.payload["version"])  # stable: one version's events keep their order


def assert_offered_then(received: Sequence[Received], *closing: tuple[str, int]) -> None:
    """A transporter's events about one broadcast: the offer of ``start_broadcast`` (version 2) and
    the re-offer of ``activate`` (version 3, with the deadline), then exactly ``closing``."""
    events = names_and_versions(received)
    kind = received[0].payload["kind"].upper() if received else "?"
    assert events == [(f"{kind}_OFFERED", 2), (f"{kind}_OFFERED", 3), *closing], events
    assert received[1].payload["expiresAt"] is not None and received[1].payload["status"] == "active"


def payload_keys(received: Sequence[Received]) -> set[str]:
    """Every key any of the payloads has."""
    return {key for r in received for key in r.payload}


def history_versions(body: dict[str, Any]) -> list[tuple[int, str]]:
    """(version, to-state) of each history entry of a read."""
    return [(h["version"], h["to"]) for h in body["history"]]
