"""End to end: the example marketplace app under uvicorn on loopback, real python-socketio clients and
HTTP calls; each scenario gives exactly the contract's events at the right clients, in version order,
and nothing at the others (SQLite, and PostgreSQL for the scenarios marked so)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from marketplace.fixtures import booking_body
from marketplace.server import RunningApp
from marketplace_harness import (
    NEARBY_VANS,
    assert_offered_then,
    by_version,
    history_versions,
    names_and_versions,
    payload_keys,
    serve,
    session,
)
from postgres_server import PostgresServer

SC = "BROADCAST_STATE_CHANGED"


@pytest.fixture(scope="module")
def sqlite_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """The app on a fresh SQLite file, for the whole module."""
    with serve(f"sqlite:///{tmp_path_factory.mktemp('marketplace') / 'app.db'}") as app:
        yield app


@pytest.fixture(scope="module")
def postgres_app(postgres_server: PostgresServer) -> Iterator[RunningApp]:
    """The app on a fresh database of the suite's PostgreSQL, for the whole module."""
    with serve(postgres_server.create_database("marketplace_e2e")) as app:
        yield app


@pytest.fixture(params=["sqlite", "postgres"])
def app(request: pytest.FixtureRequest) -> RunningApp:
    """The app on SQLite, then on PostgreSQL."""
    running: RunningApp = request.getfixturevalue(f"{request.param}_app")
    return running


def test_fill_reaches_each_client_in_version_order(app: RunningApp) -> None:
    """Two accepts fill a booking: the customer hears every transition and the fill, each offered
    transporter its offer and the fill, the truck and the far van nothing."""

    async def scenario() -> None:
        async with session(app, ["c-fill", *NEARBY_VANS, "t-4", "t-9"]) as s:
            created = await s.api["c-fill"].post("/api/bookings", booking_body(trucks=2))
            assert (created.status, created.body["status"], created.body["version"]) == (201, "active", 3)
            booking = created.body["id"]
            first = await s.api["t-1"].post(f"/api/bookings/{booking}/accept")
            second = await s.api["t-2"].post(f"/api/bookings/{booking}/accept", {"slots": 1})
            assert (first.body["status"], second.body["status"]) == ("partially_filled", "fully_filled")
            await s.barrier()

            customer = s.live["c-fill"].about("booking", booking)
            assert names_and_versions(customer) == [(SC, 1), (SC, 2), (SC, 3), (SC, 4), (SC, 5),
                                                    ("BOOKING_FULLY_FILLED", 5)]
            assert [r.payload["slotsFilled"] for r in customer] == [0, 0, 0, 1, 2, 2]
            for transporter in NEARBY_VANS:
                assert_offered_then(s.live[transporter].about("booking", booking), ("BOOKING_FULLY_FILLED", 5))
            assert s.live["t-4"].received == [] and s.live["t-9"].received == []
            assert "recipients" not in payload_keys(s.live["t-1"].received)

    asyncio.run(scenario())


def test_cancel_reaches_customer_and_every_offered_transporter(app: RunningApp) -> None:
    """A cancel with a reason: the customer's state change and BOOKING_CANCELLED, the reason at every
    offered transporter; a later accept is refused with 409 and sends nothing."""

    async def scenario() -> None:
        async with session(app, ["c-cancel", *NEARBY_VANS, "t-9"]) as s:
            booking = (await s.api["c-cancel"].post("/api/bookings", booking_body(trucks=1))).body["id"]
            cancelled = await s.api["c-cancel"].post(f"/api/bookings/{booking}/cancel", {"reason": "plans changed"})
            assert (cancelled.status, cancelled.body["status"]) == (200, "cancelled")
            late = await s.api["t-1"].post(f"/api/bookings/{booking}/accept")
            assert (late.status, late.body["error"]) == (409, "InvalidTransition")
            await s.barrier()

            customer = s.live["c-cancel"].about("booking", booking)
            assert names_and_versions(customer)[3:] == [(SC, 4), ("BOOKING_CANCELLED", 4)]
            assert customer[-1].payload["reason"] == "plans changed"
            for transporter in NEARBY_VANS:
                received = s.live[transporter].about("booking", booking)
                assert_offered_then(received, ("BOOKING_CANCELLED", 4))
                assert received[-1].payload["reason"] == "plans changed"
            assert s.live["t-9"].received == []

    asyncio.run(scenario())


def test_expiry_by_the_sweeper_reaches_everyone(app: RunningApp) -> None:
    """A booking nobody accepts expires by the app's sweeper: BOOKING_EXPIRED at the customer and at
    every offered transporter, recorded as the system's doing."""

    async def scenario() -> None:
        async with session(app, ["c-expire", *NEARBY_VANS]) as s:
            created = await s.api["c-expire"].post("/api/bookings", {**booking_body(), "ttlSeconds": 0.3})
            booking = created.body["id"]
            for client in s.live.values():
                await client.wait_for(lambda got: "BOOKING_EXPIRED" in [r.name for r in got])
            await s.barrier()

            customer = s.live["c-expire"].about("booking", booking)
            assert names_and_versions(customer)[3:] == [(SC, 4), ("BOOKING_EXPIRED", 4)]
            for transporter in NEARBY_VANS:
                assert_offered_then(s.live[transporter].about("booking", booking), ("BOOKING_EXPIRED", 4))
            read = await s.api["c-expire"].get(f"/api/bookings/{booking}")
            assert read.body["history"][-1] | {"at": None} == {
                "version": 4, "from": "active", "to": "expired", "trigger": "expire", "actor": "system",
                "reason": "deadline passed", "at": None}

    asyncio.run(scenario())


def test_an_order_is_offered_to_transporters_near_the_pickup_with_its_vehicles(app: RunningApp) -> None:
    """An order for a van and a truck is offered to the nearby vans and the nearby truck, not to the
    far van; each offer names the order and nobody else; the offers list shows it until it closes."""

    async def scenario() -> None:
        async with session(app, ["c-order", *NEARBY_VANS, "t-4", "t-9"]) as s:
            body = {**booking_body(), "trucks": [{"vehicleType": "van", "count": 1},
                                                 {"vehicleType": "truck", "count": 1}]}
            created = await s.api["c-order"].post("/api/orders", body)
            assert (created.status, created.body["slotsRequested"]) == (201, 2)
            order = created.body["id"]
            await s.barrier()
            for transporter in (*NEARBY_VANS, "t-4"):
                offer = s.live[transporter].about("order", order)[0]
                assert (offer.name, offer.payload["orderId"], offer.payload["status"]) == (
                    "ORDER_OFFERED", order, "broadcasting")
                listed = await s.api[transporter].get("/api/offers")
                assert ("order", order) in [(b["kind"], b["id"]) for b in listed.body]
            assert s.live["t-9"].received == []
            assert ("order", order) not in [(b["kind"], b["id"]) for b in (await s.api["t-9"].get("/api/offers")).body]
            read = await s.api["t-4"].get(f"/api/orders/{order}")
            assert (read.body["trucks"], read.body["heldSlots"]) == (body["trucks"], 0)

            await s.api["c-order"].post(f"/api/orders/{order}/cancel")
            listed = await s.api["t-4"].get("/api/offers")
            assert ("order", order) not in [(b["kind"], b["id"]) for b in listed.body]

    asyncio.run(scenario())


def test_accept_and_cancel_racing_give_events_that_match_the_history(app: RunningApp) -> None:
    """Two transporters accept the one slot while the customer cancels, all at once, several rounds:
    at most one accept wins, the booking ends cancelled, and each client heard exactly the history's
    transitions, once each. (Ordered by version, as a client orders them: the accept's events and the
    cancel's are dispatched by two requests that finished at once, in either order.)"""

    async def one_round(round_no: int) -> set[str]:
        customer = f"c-race-{round_no}"
        async with session(app, [customer, "t-1", "t-2", "t-3"]) as s:
            booking = (await s.api[customer].post("/api/bookings", booking_body(trucks=1))).body["id"]
            commands = (("t-1", "accept"), ("t-2", "accept"), (customer, "cancel"))
            go, waiting = asyncio.Event(), [0]

            async def at_barrier(user: str, action: str) -> Any:
                waiting[0] += 1
                if waiting[0] == len(commands):  # the last one to arrive lets all of them go at once
                    go.set()
                await go.wait()
                return await s.api[user].post(f"/api/bookings/{booking}/{action}")

            first, second, cancel = await asyncio.gather(*(at_barrier(u, a) for u, a in commands))
            assert cancel.status == 200
            assert sorted([first.status, second.status]) in ([200, 409], [409, 409])
            await s.barrier()

            history = history_versions((await s.api[customer].get(f"/api/bookings/{booking}")).body)
            assert history[-1][1] == "cancelled"
            heard = by_version(s.live[customer].about("booking", booking))
            assert [(r.payload["version"], r.payload["status"]) for r in heard if r.name == SC] == history
            closing = [(r.name, r.payload["version"]) for r in heard if r.name != SC]
            for transporter in ("t-1", "t-2", "t-3"):
                assert_offered_then(by_version(s.live[transporter].about("booking", booking)), *closing)
            return {name for name, _ in closing}

    async def scenario() -> list[set[str]]:
        return [await one_round(n) for n in range(4)]

    outcomes = asyncio.run(scenario())
    assert all(o in ({"BOOKING_CANCELLED"}, {"BOOKING_FULLY_FILLED", "BOOKING_CANCELLED"}) for o in outcomes)


def test_an_order_filled_driven_and_completed_reaches_everyone(app: RunningApp) -> None:
    """Two transporters fill an order of two trucks; the customer starts and completes the trip: the
    customer hears each transition, every offered transporter the fill and the completion."""

    async def scenario() -> None:
        async with session(app, ["c-trip", *NEARBY_VANS, "t-4"]) as s:
            body = {**booking_body(), "trucks": [{"vehicleType": "van", "count": 1},
                                                 {"vehicleType": "truck", "count": 1}]}
            order = (await s.api["c-trip"].post("/api/orders", body)).body["id"]
            assert (await s.api["t-4"].post(f"/api/orders/{order}/accept")).body["status"] == "partially_filled"
            assert (await s.api["t-1"].post(f"/api/orders/{order}/accept")).body["status"] == "fully_filled"
            early = await s.api["t-1"].post(f"/api/orders/{order}/complete")
            assert (early.status, early.body["error"]) == (403, "Forbidden")  # the customer's to say
            assert (await s.api["c-trip"].post(f"/api/orders/{order}/start-trip")).body["status"] == "in_progress"
            done = await s.api["c-trip"].post(f"/api/orders/{order}/complete", {"reason": "delivered"})
            assert (done.status, done.body["status"], done.body["version"]) == (200, "completed", 7)
            await s.barrier()

            customer = s.live["c-trip"].about("order", order)
            assert [(r.name, r.payload["status"]) for r in customer][3:] == [
                (SC, "partially_filled"), (SC, "fully_filled"), ("ORDER_FULLY_FILLED", "fully_filled"),
                (SC, "in_progress"), (SC, "completed"), ("ORDER_COMPLETED", "completed")]
            for transporter in (*NEARBY_VANS, "t-4"):
                assert_offered_then(s.live[transporter].about("order", order), ("ORDER_FULLY_FILLED", 5),
                                    ("ORDER_COMPLETED", 7))

    asyncio.run(scenario())


def test_a_release_that_reopens_a_filled_booking_reaches_the_customer(app: RunningApp) -> None:
    """A transporter gives back its slot of a filled booking: the customer hears it open again, and
    every offered transporter (the one that gave it back too, holding nothing now) is offered it again
    at that version, so the page shows it again."""

    async def scenario() -> None:
        async with session(app, ["c-reopen", *NEARBY_VANS]) as s:
            booking = (await s.api["c-reopen"].post("/api/bookings", booking_body(trucks=1))).body["id"]
            assert (await s.api["t-1"].post(f"/api/bookings/{booking}/accept")).body["status"] == "fully_filled"
            await s.barrier()
            before = {user: len(client.received) for user, client in s.live.items()}
            released = await s.api["t-1"].post(f"/api/bookings/{booking}/release", {"reason": "truck broke down"})
            assert (released.status, released.body["status"], released.body["version"]) == (200, "active", 5)
            await s.barrier()

            customer = s.live["c-reopen"].received[before["c-reopen"]:]
            assert [(r.name, r.payload["status"], r.payload["version"], r.payload["reason"]) for r in customer] == [
                (SC, "active", 5, "truck broke down")]
            for transporter in NEARBY_VANS:  # every transporter holding no slot is offered it again
                heard = s.live[transporter].received[before[transporter]:]
                assert [(r.name, r.payload["status"], r.payload["version"]) for r in heard] == [
                    ("BOOKING_OFFERED", "active", 5)]

    asyncio.run(scenario())
