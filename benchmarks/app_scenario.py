"""What ``bench_app.py`` does to the example app (examples/marketplace): seed 100 transporters in
pairs far apart, let 100 customers each book two trucks next to one pair, time each transporter's
accept until the customer hears the state change, then check every client heard exactly its events.

Each pair stands alone within the app's search radius, so a booking is offered to exactly that pair;
the check needs no knowledge of the app beyond the event contract and the booking's history.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiohttp
from app_harness import Heard, Listeners, timed
from marketplace.auth import User, sign
from marketplace.models import Transporter

__all__ = ["Booked", "Scenario", "check_events", "pair_of", "seed_rows", "socket_auth", "token"]

STATE_CHANGED = "BROADCAST_STATE_CHANGED"
PAIR_SPACING_DEG = 0.5
"""Latitude between two pairs of transporters: 55 km, farther than the app's 25 km radius."""


def place(pair: int) -> dict[str, Any]:
    """Where pair ``pair`` stands (and its customers pick up)."""
    return {"address": f"Depot {pair}", "lat": 40.0 + pair * PAIR_SPACING_DEG, "lon": 10.0}


def seed_rows(transporters: Sequence[str]) -> list[Transporter]:
    """Transporter rows for rooms ``transporter:<id>``: two vans at each place."""
    rows = []
    for n, room in enumerate(transporters):
        spot = place(n // 2)
        rows.append(Transporter(id=room.split(":", 1)[1], name=f"Vans {n}", vehicle_type="van",
                                lat=spot["lat"], lon=spot["lon"]))
    return rows


def pair_of(customer_index: int, transporters: Sequence[str]) -> tuple[str, str]:
    """The rooms of the transporters a customer's booking is offered to."""
    pair = customer_index % (len(transporters) // 2)
    return transporters[2 * pair], transporters[2 * pair + 1]


def token(secret: bytes, room: str) -> str:
    """The token of the user whose room is ``room`` (``customer:c-000``)."""
    role, user_id = room.split(":", 1)
    return sign(User(user_id, role), secret)  # type: ignore[arg-type]


def socket_auth(secret: bytes, room: str) -> dict[str, str]:
    """The Socket.IO ``auth`` of the user in ``room``."""
    return {"token": token(secret, room)}


@dataclass(frozen=True)
class Booked:
    """One booking: its id, its customer's room and the rooms of the two transporters offered it."""

    id: int
    customer: str
    offered: tuple[str, str]


class Scenario:
    """HTTP to one node of the app as any user, with tokens signed with the app's secret."""

    def __init__(self, http: aiohttp.ClientSession, listeners: Listeners, secret: bytes,
                 customers: Sequence[str], transporters: Sequence[str]) -> None:
        self.http = http
        self.listeners = listeners
        self.secret = secret
        self.customers = customers
        self.transporters = transporters
        self.booked: list[Booked] = []

    async def call(self, room: str, method: str, path: str, body: object = None) -> Any:
        """``method path`` as that user; the JSON answer (an error status raises)."""
        headers = {"Authorization": f"Bearer {token(self.secret, room)}"}
        async with self.http.request(method, path, json=body, headers=headers) as response:
            answer = await response.json()
            if response.status >= 400:
                raise RuntimeError(f"{method} {path} as {room}: {response.status} {answer}")
            return answer

    async def book(self, count: int) -> list[Booked]:
        """``count`` bookings of two vans, customer by customer, each opened (active) before the next;
        returns once every customer heard theirs become active."""
        batch = []
        for n in range(count):
            customer = self.customers[n % len(self.customers)]
            offered = pair_of(n, self.transporters)
            spot = place(self.transporters.index(offered[0]) // 2)
            body = {"pickup": spot, "drop": {**spot, "address": "Drop"}, "vehicleType": "van", "trucks": 2}
            created = await self.call(customer, "POST", "/api/bookings", body)
            if created["status"] != "active":
                raise RuntimeError(f"booking {created['id']} is {created['status']}, not active")
            batch.append(Booked(created["id"], customer, offered))
        await self.listeners.settle(lambda: all(self._heard(b.customer, b.id, "active") for b in batch))
        self.booked.extend(batch)
        return batch

    def _heard(self, room: str, booking_id: int, status: str) -> bool:
        return any(h.payload.get("bookingId") == booking_id and h.payload.get("status") == status
                   for h in self.listeners.by_user[room].heard)

    async def accept_all(self, batch: Sequence[Booked]) -> list[float]:
        """Each booking's two transporters accept one slot each, one request at a time; the seconds
        from each request to its customer hearing the new state (partially, then fully filled)."""
        latencies = []
        for booking in batch:
            for transporter, status in zip(booking.offered, ("partially_filled", "fully_filled"), strict=True):
                arrival = self.listeners.expect(booking.customer, STATE_CHANGED, booking.id, status)
                accept = partial(self.call, transporter, "POST", f"/api/bookings/{booking.id}/accept", {"slots": 1})
                latencies.append(await timed(accept, arrival))
        return latencies

    async def histories(self) -> dict[int, list[tuple[int, str]]]:
        """Each booking's (version, status) history, read by its customer."""
        found = {}
        for booking in self.booked:
            body = await self.call(booking.customer, "GET", f"/api/bookings/{booking.id}")
            found[booking.id] = [(entry["version"], entry["to"]) for entry in body["history"]]
        return found


def check_events(booked: Sequence[Booked], heard: dict[str, list[Heard]],
                 histories: dict[int, list[tuple[int, str]]]) -> None:
    """Raise unless every client heard exactly its events, by the event contract: each event once per
    recipient; a state change to the customer only, every state in the history in version order; an
    offer to exactly the two transporters offered it; the fill to the customer and both transporters,
    once; nothing about a booking to anybody else."""
    by_id = {b.id: b for b in booked}
    recipients: dict[str, set[str]] = defaultdict(set)
    about: dict[str, tuple[str, int]] = {}
    for user, events in heard.items():
        for h in events:
            event_id, booking_id = str(h.payload.get("eventId")), h.payload.get("bookingId")
            if booking_id not in by_id:
                raise AssertionError(f"{user} heard {h.event} about an unknown booking {booking_id}")
            if user in recipients[event_id]:
                raise AssertionError(f"{user} heard event {event_id} ({h.event}) twice")
            recipients[event_id].add(user)
            about[event_id] = (h.event, booking_id)
    fills: dict[int, int] = defaultdict(int)
    for event_id, (name, booking_id) in about.items():
        b = by_id[booking_id]
        expected = {"BROADCAST_STATE_CHANGED": {b.customer}, "BOOKING_OFFERED": set(b.offered),
                    "BOOKING_FULLY_FILLED": {b.customer, *b.offered}}.get(name)
        if expected is None or recipients[event_id] != expected:
            raise AssertionError(f"{name} {event_id} of booking {booking_id} reached {sorted(recipients[event_id])}, "
                                 f"expected {sorted(expected or ())}")
        fills[booking_id] += name == "BOOKING_FULLY_FILLED"
    for b in booked:
        states = [(h.payload["version"], h.payload["status"]) for h in heard[b.customer]
                  if h.event == STATE_CHANGED and h.payload["bookingId"] == b.id]
        if states != histories[b.id]:
            raise AssertionError(f"{b.customer} heard {states} for booking {b.id}; its history is {histories[b.id]}")
        if fills[b.id] != 1:
            raise AssertionError(f"booking {b.id} announced its fill {fills[b.id]} times")
        offers = [h for h in heard[b.offered[0]] if h.event == "BOOKING_OFFERED" and h.payload["bookingId"] == b.id]
        if not offers:
            raise AssertionError(f"{b.offered[0]} was never offered booking {b.id}")
