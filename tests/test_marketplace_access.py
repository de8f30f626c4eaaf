"""The example app's edges, served for real: tokens, who may act on what (403), idempotency keys scoped
per user, and the HTTP status of each kind of error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import aiohttp
import pytest
import socketio
from marketplace.auth import User, sign
from marketplace.clients import Api, LiveClient
from marketplace.fixtures import booking_body, token_for
from marketplace.server import RunningApp
from marketplace_harness import NEARBY_VANS, serve, session


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    """The app on a fresh SQLite file, for the whole module."""
    with serve(f"sqlite:///{tmp_path_factory.mktemp('marketplace') / 'app.db'}") as running:
        yield running


def forged_token(user: str) -> str:
    """A well-formed token for ``user`` signed with another key."""
    return sign(User(user, "customer"), b"not the app's secret")


def bad_token(app: RunningApp, token: str | None) -> str | None:
    """``token``, or for "forged" a token signed with another key, for "expired" one of the app's own
    that expired a minute ago."""
    if token == "forged":
        return forged_token("c-1")
    if token == "expired":
        return sign(User("c-1", "customer"), app.settings.secret, timedelta(hours=1), now=time.time() - 3660)
    return token


@pytest.mark.parametrize("token", [None, "", "garbage", "a.b", "forged", "expired"])
def test_socket_connect_without_a_valid_token_is_refused(app: RunningApp, token: str | None) -> None:
    """A Socket.IO connection with no token, a malformed one, one signed with another key or an
    expired one is refused."""

    async def connect() -> None:
        client = LiveClient("intruder")
        with pytest.raises(socketio.exceptions.ConnectionError):
            await client.connect(app.url, bad_token(app, token))
        assert not client.sio.connected

    asyncio.run(connect())


@pytest.mark.parametrize("token", [None, "garbage", "forged", "expired"])
def test_http_without_a_valid_token_is_401(app: RunningApp, token: str | None) -> None:
    """Every endpoint answers 401 to a request with no token, a forged or an expired one, and creates nothing."""

    async def call() -> None:
        async with aiohttp.ClientSession() as http:
            api = Api(http, app.url, bad_token(app, token))
            for reply in (await api.get("/api/me"), await api.post("/api/bookings", booking_body()),
                          await api.post("/api/bookings/1/cancel")):
                assert (reply.status, reply.body["error"], reply.headers["www-authenticate"]) == (
                    401, "Unauthorized", "Bearer")

    asyncio.run(call())


def test_another_customers_cancel_is_403_and_changes_nothing(app: RunningApp) -> None:
    """A customer cancelling someone else's booking gets 403 (the host guard), the booking stays active
    and nobody hears anything; the same goes for starting its trip."""

    async def scenario() -> None:
        async with session(app, ["c-owner", "c-other", *NEARBY_VANS]) as s:
            booking = (await s.api["c-owner"].post("/api/bookings", booking_body())).body["id"]
            await s.barrier()
            before = {user: len(client.received) for user, client in s.live.items()}
            for action in ("cancel", "start-trip", "complete"):
                reply = await s.api["c-other"].post(f"/api/bookings/{booking}/{action}")
                assert (reply.status, reply.body["error"]) == (403, "Forbidden"), action
                assert "active" not in reply.body["message"]  # a 403 tells nothing of the state
            assert (await s.api["c-other"].get(f"/api/bookings/{booking}")).status == 403
            await s.barrier()
            assert {user: len(client.received) for user, client in s.live.items()} == before
            read = await s.api["c-owner"].get(f"/api/bookings/{booking}")
            assert (read.body["status"], read.body["version"]) == ("active", 3)

    asyncio.run(scenario())


def test_a_transporter_accepts_only_what_it_was_offered(app: RunningApp) -> None:
    """The far van, never offered the booking, gets 403 for accept, release and read; a customer may
    not accept at all; an offered transporter may."""

    async def scenario() -> None:
        async with session(app, ["c-offer", "t-1", "t-9"]) as s:
            booking = (await s.api["c-offer"].post("/api/bookings", booking_body(trucks=2))).body["id"]
            for path in (f"/api/bookings/{booking}/accept", f"/api/bookings/{booking}/release"):
                reply = await s.api["t-9"].post(path)
                assert (reply.status, reply.body["error"]) == (403, "Forbidden"), path
            assert (await s.api["t-9"].get(f"/api/bookings/{booking}")).status == 403
            assert (await s.api["c-offer"].post(f"/api/bookings/{booking}/accept")).status == 403
            accepted = await s.api["t-1"].post(f"/api/bookings/{booking}/accept")
            assert (accepted.status, accepted.body["slotsFilled"]) == (200, 1)
            released = await s.api["t-1"].post(f"/api/bookings/{booking}/release", {"reason": "truck broke down"})
            assert (released.status, released.body["status"]) == (200, "active")
            again = await s.api["t-1"].post(f"/api/bookings/{booking}/release")
            assert (again.status, again.body["error"]) == (409, "InvalidTransition")

    asyncio.run(scenario())


def test_idempotency_keys_are_scoped_per_user(app: RunningApp) -> None:
    """A key sent again by the same customer replays the first creation (no new broadcast, no events);
    the same key from another customer is theirs alone; a key reused for another request is 422."""

    async def scenario() -> None:
        async with session(app, ["c-key-1", "c-key-2", "t-1"]) as s:
            first = await s.api["c-key-1"].post("/api/bookings", booking_body(), key="k-1")
            await s.barrier()
            heard = len(s.live["c-key-1"].received), len(s.live["t-1"].received)
            again = await s.api["c-key-1"].post("/api/bookings", booking_body(), key="k-1")
            assert (first.status, again.status, again.headers["idempotent-replayed"]) == (201, 200, "true")
            assert again.body["id"] == first.body["id"]
            other = await s.api["c-key-2"].post("/api/bookings", booking_body(), key="k-1")
            assert other.status == 201 and other.body["id"] != first.body["id"]
            await s.barrier()
            assert len(s.live["c-key-1"].received) == heard[0]
            assert len(s.live["t-1"].received) == heard[1] + 2  # c-key-2's offer and re-offer only
            reused = await s.api["c-key-1"].post("/api/bookings", booking_body(trucks=3), key="k-1")
            assert (reused.status, reused.body["error"]) == (422, "IdempotencyKeyReused")

            booking = first.body["id"]
            accepted = await s.api["t-1"].post(f"/api/bookings/{booking}/accept", key="a-1")
            replayed = await s.api["t-1"].post(f"/api/bookings/{booking}/accept", key="a-1")
            assert (accepted.status, replayed.status, replayed.headers.get("idempotent-replayed")) == (200, 200, "true")
            assert replayed.body["slotsFilled"] == accepted.body["slotsFilled"] == 1

    asyncio.run(scenario())


def test_errors_get_their_documented_status(app: RunningApp) -> None:
    """404 for an unknown booking, 409 for a refused transition, 422 for a bad body or no transporter
    near the pickup, each with the error's name and a message."""

    async def scenario() -> None:
        async with session(app, ["c-errors", "t-1"]) as s:
            customer = s.api["c-errors"]
            missing = await customer.get("/api/bookings/999999")
            assert (missing.status, missing.body["error"]) == (404, "BroadcastNotFound")
            booking = (await customer.post("/api/bookings", booking_body())).body["id"]
            trip = await customer.post(f"/api/bookings/{booking}/start-trip")
            assert (trip.status, trip.body["error"]) == (409, "InvalidTransition")
            assert trip.body["reason"].startswith("start_trip is not allowed from active")
            for body, field in ((booking_body(trucks=0), "trucks"), ({**booking_body(), "vehicleType": "bike"},
                                                                       "vehicleType"), ({"drop": {}}, "pickup")):
                bad = await customer.post("/api/bookings", body)
                assert (bad.status, bad.body["error"]) == (422, "BadRequest")
                assert bad.body["message"].startswith(field)
            nobody = await customer.post("/api/bookings", {**booking_body(), "pickup": {"lat": 0, "lon": 0}})
            assert (nobody.status, nobody.body["message"]) == (
                422, "no transporter with a van within 25 km of the pickup")
            wrong_kind = await customer.post("/api/lorries", booking_body())
            assert (wrong_kind.status, wrong_kind.body["error"]) == (422, "BadRequest")

    asyncio.run(scenario())


def test_the_same_user_on_two_connections_hears_each_event_on_both(app: RunningApp) -> None:
    """Two tabs of one transporter (two connections, one room) both get the offer, once each."""

    async def scenario() -> None:
        second_tab = LiveClient("t-1 tab 2")
        async with session(app, ["c-tabs", "t-1"]) as s:
            await second_tab.connect(app.url, token_for("t-1", "transporter", app.settings.secret))
            booking = (await s.api["c-tabs"].post("/api/bookings", booking_body())).body["id"]
            await s.barrier()
            await second_tab.barrier()
            await second_tab.close()
            assert s.live["t-1"].names("booking", booking) == second_tab.names("booking", booking)
            assert second_tab.names("booking", booking).count("BOOKING_OFFERED") >= 1

    asyncio.run(scenario())
