"""``make demo``: the app on a temporary SQLite file, one customer and three transporters as real
python-socketio clients, and what each of them received.

The script: booking 1 (2 vans) is filled by two accepts, and a third transporter is too late;
booking 2 is cancelled by the customer; booking 3 is open for one second and the app's sweeper
expires it. After each step every client's new events are printed; at the end, each client's whole
list. It exits 1 if a client misses an event it should get.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import aiohttp

from .auth import Role
from .clients import Api, LiveClient, Reply
from .db import migrate, seed_transporters
from .fixtures import booking_body, demo_transporters, token_for
from .server import running_app
from .settings import Settings

__all__ = ["main", "run_scenario"]

CUSTOMER = "c-1"
TRANSPORTERS = ("t-1", "t-2", "t-3")
OUTSIDER = "t-4"
"""A transporter that drives a truck: never offered these van bookings, so it must hear nothing."""
USERS: tuple[tuple[str, Role], ...] = ((CUSTOMER, "customer"), *((t, "transporter") for t in TRANSPORTERS),
                                       (OUTSIDER, "transporter"))


def describe(event_name: str, payload: dict[str, object]) -> str:
    """One received event as a line of the timeline."""
    reason = f' "{payload["reason"]}"' if payload.get("reason") else ""
    return (f"{event_name:<24} {payload['kind']} {payload['entityId']:<3} {payload['status']:<17} "
            f"v{payload['version']:<2} {payload['slotsFilled']}/{payload['slotsRequested']} "
            f"({payload['trigger']}{reason})")


def outcome(reply: Reply) -> str:
    """An HTTP answer in a few words."""
    body = reply.body
    if reply.status < 400:
        return f"{reply.status} {body['status']} v{body['version']}"
    return f"{reply.status} {body['error']}: {body.get('reason') or body['message']}"


class Script:
    """The clients, and how far into each one's events the timeline has printed."""

    def __init__(self, clients: dict[str, LiveClient], apis: dict[str, Api]) -> None:
        self.clients = clients
        self.apis = apis
        self.printed = dict.fromkeys(clients, 0)

    async def step(self, title: str, reply: Reply | None = None) -> None:
        """Print the step and, once every client has all events emitted so far, the new ones."""
        print(f"\n* {title}" + (f": {outcome(reply)}" if reply is not None else ""))
        await asyncio.gather(*(client.barrier() for client in self.clients.values()))
        for label, client in self.clients.items():
            for received in client.received[self.printed[label]:]:
                print(f"    {client.label:<16} <- {describe(received.name, received.payload)}")
            self.printed[label] = len(client.received)


async def run_scenario(url: str, secret: bytes) -> dict[str, LiveClient]:
    """Run the script against the app at ``url``; returns the clients with what they received."""
    clients = {user: LiveClient(f"{role} {user}") for user, role in USERS}
    for user, role in USERS:
        await clients[user].connect(url, token_for(user, role, secret))
    async with aiohttp.ClientSession() as http:
        apis = {user: Api(http, url, token_for(user, role, secret)) for user, role in USERS}
        customer = apis[CUSTOMER]
        script = Script(clients, apis)
        print(f"Connected over Socket.IO: customer {CUSTOMER}; transporters {', '.join(TRANSPORTERS)} "
              f"(vans near the pickup) and {OUTSIDER} (a truck: no van booking is offered to it)")

        first = await customer.post("/api/bookings", booking_body(trucks=2), key="demo-booking-1")
        await script.step("c-1 books 2 vans (booking 1)", first)
        b1 = first.body["id"]
        await script.step("t-1 accepts booking 1", await apis["t-1"].post(f"/api/bookings/{b1}/accept"))
        await script.step("t-2 accepts booking 1", await apis["t-2"].post(f"/api/bookings/{b1}/accept"))
        await script.step("t-3 accepts booking 1, too late", await apis["t-3"].post(f"/api/bookings/{b1}/accept"))
        again = await customer.post("/api/bookings", booking_body(trucks=2), key="demo-booking-1")
        await script.step("c-1 retries the first request (same Idempotency-Key): replayed, nothing sent", again)

        second = await customer.post("/api/bookings", booking_body(trucks=1))
        await script.step("c-1 books 1 van (booking 2)", second)
        b2 = second.body["id"]
        cancel = await customer.post(f"/api/bookings/{b2}/cancel", {"reason": "found another truck"})
        await script.step("c-1 cancels booking 2", cancel)

        third = await customer.post("/api/bookings", {**booking_body(trucks=1), "ttlSeconds": 1})
        await script.step("c-1 books 1 van for one second (booking 3); nobody accepts", third)
        b3 = third.body["id"]
        expired = "BOOKING_EXPIRED"
        for user, client in clients.items():
            if user == OUTSIDER:
                continue
            await client.wait_for(lambda got: expired in [r.name for r in got if r.entity == ("booking", b3)])
        await script.step("the app's sweeper expires booking 3")
    for client in clients.values():
        await client.close()
    return clients


def summary(clients: dict[str, LiveClient]) -> None:
    """Each client's events, in the order it received them."""
    print("\n== what each client received, in order")
    for client in clients.values():
        print(f"{client.label} ({len(client.received)} events)")
        for received in client.received:
            print(f"    {describe(received.name, received.payload)}")


def main() -> int:
    """Start the app on a temporary SQLite file, run the script, print the timeline."""
    with tempfile.TemporaryDirectory(prefix="marketplace-demo-") as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'marketplace.db'}"
        migrate(database_url)
        seed_transporters(database_url, demo_transporters())
        settings = Settings(database_url=database_url, sweep_every=0.2, relay_every=1.0, migrate=False)
        with running_app(settings) as app:
            print(f"The marketplace app runs at {app.url} (uvicorn, Starlette, python-socketio) on {database_url}")
            try:
                clients = asyncio.run(run_scenario(app.url, settings.secret))
            except TimeoutError as exc:
                print(f"\nFAILED: {exc}", file=sys.stderr)
                return 1
        summary(clients)
    return 0


if __name__ == "__main__":
    sys.exit(main())
