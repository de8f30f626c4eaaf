"""The example app tells each user what they may do with a broadcast now (``actions`` in the reads),
from the library's transition table and the user's part, so the page shows only those buttons; the
transporter's list carries each offer's details and keeps a filled broadcast they can still release."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from marketplace.access import allowed_actions
from marketplace.auth import User
from marketplace.clients import Api
from marketplace.fixtures import DROP, PICKUP, booking_body
from marketplace.server import RunningApp
from marketplace_harness import serve, session

from broadcast_lifecycle import BroadcastLifecycle, InMemoryStore


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """The app on a fresh SQLite file, for the whole module."""
    with serve(f"sqlite:///{tmp_path_factory.mktemp('actions') / 'app.db'}") as running:
        yield running


async def actions(api: Api, booking: int) -> list[str]:
    """The ``actions`` of the read of ``booking`` by ``api``'s user."""
    read = await api.get(f"/api/bookings/{booking}")
    assert read.status == 200, read.body
    found: list[str] = read.body["actions"]
    return found


async def listed(api: Api) -> dict[int, dict[str, Any]]:
    """The transporter's ``GET /api/offers``, by booking id."""
    return {b["id"]: b for b in (await api.get("/api/offers")).body if b["kind"] == "booking"}


def test_actions_follow_the_state_and_the_users_part(app: RunningApp) -> None:
    """Through a whole lifecycle each user's read names exactly the commands they may run: the
    customer cancel, then start-trip once full, then complete; a transporter accept while slots are
    open and release only while holding one; nobody anything once it is over."""

    async def scenario() -> None:
        async with session(app, ["c-act", "t-1", "t-2", "t-3"]) as s:
            booking = (await s.api["c-act"].post("/api/bookings", booking_body(trucks=2))).body["id"]
            assert await actions(s.api["c-act"], booking) == ["cancel"]
            assert await actions(s.api["t-1"], booking) == ["accept"]

            await s.api["t-1"].post(f"/api/bookings/{booking}/accept")
            assert await actions(s.api["c-act"], booking) == ["cancel"]  # a partial fill cannot start the trip
            assert await actions(s.api["t-1"], booking) == ["accept", "release"]
            assert await actions(s.api["t-3"], booking) == ["accept"]

            await s.api["t-2"].post(f"/api/bookings/{booking}/accept")
            assert await actions(s.api["c-act"], booking) == ["cancel", "start-trip"]
            assert await actions(s.api["t-1"], booking) == ["release"]
            assert await actions(s.api["t-3"], booking) == []

            await s.api["c-act"].post(f"/api/bookings/{booking}/start-trip")
            assert await actions(s.api["c-act"], booking) == ["complete"]
            assert await actions(s.api["t-1"], booking) == []
            await s.api["c-act"].post(f"/api/bookings/{booking}/complete")
            assert await actions(s.api["c-act"], booking) == []

    asyncio.run(scenario())


def test_the_lists_carry_details_and_actions(app: RunningApp) -> None:
    """``GET /api/offers`` gives each offer's pickup, drop, vehicle, the transporter's held slots and
    actions, and keeps a fully filled booking for a transporter holding a slot (they may release it)
    but not for one holding none; ``GET /api/broadcasts`` gives the customer's actions; a cancelled
    booking is in no transporter's list and has no action left."""

    async def scenario() -> None:
        async with session(app, ["c-list", "t-1", "t-2", "t-3"]) as s:
            booking = (await s.api["c-list"].post("/api/bookings", booking_body(trucks=1))).body["id"]
            offer = (await listed(s.api["t-1"]))[booking]
            assert (offer["pickup"]["address"], offer["drop"]["address"], offer["vehicleType"]) == (
                PICKUP["address"], DROP["address"], "van")
            assert (offer["status"], offer["heldSlots"], offer["actions"]) == ("active", 0, ["accept"])

            await s.api["t-1"].post(f"/api/bookings/{booking}/accept")
            offer = (await listed(s.api["t-1"]))[booking]
            assert (offer["status"], offer["heldSlots"], offer["actions"]) == ("fully_filled", 1, ["release"])
            assert booking not in await listed(s.api["t-2"])

            mine = {b["id"]: b for b in (await s.api["c-list"].get("/api/broadcasts")).body}
            assert mine[booking]["actions"] == ["cancel", "start-trip"]
            await s.api["c-list"].post(f"/api/bookings/{booking}/cancel")
            assert booking not in await listed(s.api["t-1"])
            mine = {b["id"]: b for b in (await s.api["c-list"].get("/api/broadcasts")).body}
            assert (mine[booking]["status"], mine[booking]["actions"]) == ("cancelled", [])

    asyncio.run(scenario())


def test_no_action_once_the_deadline_has_passed() -> None:
    """Past its deadline an open booking offers nobody an action (any command would expire it), even
    before the sweeper has expired it; a minute before, the same booking offers them."""
    lifecycle = BroadcastLifecycle(InMemoryStore())
    bookings = lifecycle.kind("booking")
    booking = bookings.create("c-1", slots=2).snapshot.id
    bookings.start_broadcast(booking, ["t-1"])
    snap = bookings.activate(booking, ttl=timedelta(minutes=10)).snapshot
    assert snap.expires_at is not None
    customer, transporter = User("c-1", "customer"), User("t-1", "transporter")
    before, after = snap.expires_at - timedelta(minutes=1), snap.expires_at
    assert allowed_actions(customer, snap, bookings.config, now=before) == ["cancel"]
    assert allowed_actions(transporter, snap, bookings.config, now=before) == ["accept"]
    assert allowed_actions(customer, snap, bookings.config, now=after) == []
    assert allowed_actions(transporter, snap, bookings.config, now=after) == []
    assert allowed_actions(User("c-2", "customer"), snap, bookings.config, now=before) == []
