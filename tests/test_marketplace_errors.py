"""The example app's error-to-HTTP table, its tokens and its request checks, without a server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from marketplace.auth import Unauthorized, User, sign, verify
from marketplace.errors import STATUS, BadRequest, Forbidden, error_response, status_of
from marketplace.payloads import parse_new, parse_slots

import broadcast_lifecycle.errors as library_errors
from broadcast_lifecycle import (
    BroadcastNotFound,
    ConcurrentUpdate,
    CorruptState,
    DuplicateBroadcast,
    IdempotencyKeyReused,
    InvalidArgument,
    InvalidTransition,
    OpenBroadcastExists,
    StoreError,
    TransitionRefused,
)

SECRET = b"test secret"


@pytest.mark.parametrize(("error", "status"), [
    (Unauthorized("missing token"), 401),
    (Forbidden("not yours"), 403),
    (BroadcastNotFound("booking", 1), 404),
    (TransitionRefused("booking", 1, "active", "accept", "no"), 409),
    (InvalidTransition("booking", 1, "expired", "accept", ["active"]), 409),
    (OpenBroadcastExists("booking", "c-1"), 409),
    (DuplicateBroadcast("booking", 1), 409),
    (BadRequest("trucks must be ..."), 422),
    (InvalidArgument("slots must be ..."), 422),
    (IdempotencyKeyReused("k", "was first used by another actor"), 422),
    (ConcurrentUpdate("booking", 1, "accept", 16), 503),
    (StoreError("database is locked"), 503),
    (CorruptState("bookings", 1, "bogus", ["active"]), 500),
])
def test_each_error_has_one_status(error: Exception, status: int) -> None:
    """Every error the app can meet is answered with the status the table documents."""
    assert status_of(error) == status
    response = error_response(error)
    assert response.status_code == status
    assert (response.headers.get("retry-after") == "1") is (status == 503)


def test_every_library_error_is_in_the_table() -> None:
    """Each class in broadcast_lifecycle.errors maps to a status of its own entry (a new error fails here)."""
    for name in library_errors.__all__:
        cls = getattr(library_errors, name)
        assert cls in STATUS, name


def test_a_refusal_body_names_the_error_and_reason() -> None:
    """A 409 body has the error's name, its message and the guard's reason."""
    response = error_response(TransitionRefused("booking", 7, "active", "accept", "2 of 2 slots already filled"))
    assert response.body == (b'{"error":"TransitionRefused","message":"booking 7: accept refused in state active: '
                             b'2 of 2 slots already filled","reason":"2 of 2 slots already filled"}')


def test_tokens_round_trip_and_forgeries_fail() -> None:
    """A signed token names its user and role; another key's, a tampered or a malformed one is refused."""
    token = sign(User("t-1", "transporter"), SECRET)
    assert verify(token, SECRET) == User("t-1", "transporter")
    payload, _, signature = token.partition(".")
    other = sign(User("c-1", "customer"), SECRET).partition(".")[0]
    for bad in (sign(User("t-1", "transporter"), b"other"), f"{other}.{signature}", payload, "", None, 42):
        with pytest.raises(Unauthorized):
            verify(bad, SECRET)


def test_a_token_is_accepted_until_it_expires() -> None:
    """A token is accepted up to the second before its expiry and refused from then on, with a message
    that says so; a non-positive lifetime is refused when signing."""
    signed_at = 1_800_000_000.0
    token = sign(User("c-1", "customer"), SECRET, timedelta(minutes=5), now=signed_at)
    assert verify(token, SECRET, now=signed_at + 299) == User("c-1", "customer")
    with pytest.raises(Unauthorized, match="expired token"):
        verify(token, SECRET, now=signed_at + 300)
    with pytest.raises(ValueError, match="ttl must be positive"):
        sign(User("c-1", "customer"), SECRET, timedelta(0))


def test_a_booking_body_becomes_columns_and_slots() -> None:
    """A booking body's places and vehicle go to the model's columns; its trucks are the slots."""
    new = parse_new("booking", {"pickup": {"address": "A", "lat": 1, "lon": 2}, "drop": {"lat": 3, "lon": 4},
                                "vehicleType": "van", "trucks": 3, "ttlSeconds": 60})
    assert (new.slots, new.vehicle_types, new.pickup, new.ttl and new.ttl.total_seconds()) == (3, ("van",),
                                                                                                (1.0, 2.0), 60.0)
    assert new.columns == {"pickup_address": "A", "pickup_lat": 1.0, "pickup_lon": 2.0, "drop_address": "",
                           "drop_lat": 3.0, "drop_lon": 4.0, "vehicle_type": "van"}


def test_an_order_body_sums_its_truck_requests() -> None:
    """An order's slots are the trucks of all its requests; it matches every vehicle type it asks for."""
    new = parse_new("order", {"pickup": {"lat": 1, "lon": 2}, "drop": {"lat": 3, "lon": 4},
                              "trucks": [{"vehicleType": "van", "count": 2}, {"vehicleType": "truck", "count": 1}]})
    assert (new.slots, new.vehicle_types) == (3, ("truck", "van"))


@pytest.mark.parametrize(("body", "field"), [
    ([], "the body"),
    ({"drop": {"lat": 0, "lon": 0}, "vehicleType": "van", "trucks": 1}, "pickup is required"),
    ({"pickup": {"lat": 91, "lon": 0}, "drop": {"lat": 0, "lon": 0}, "vehicleType": "van", "trucks": 1},
     "pickup.lat"),
    ({"pickup": {"lat": 0, "lon": True}, "drop": {"lat": 0, "lon": 0}, "vehicleType": "van", "trucks": 1},
     "pickup.lon"),
    ({"pickup": {"lat": 0, "lon": 0}, "drop": {"lat": 0, "lon": 0}, "vehicleType": "van", "trucks": 51}, "trucks"),
    ({"pickup": {"lat": 0, "lon": 0}, "drop": {"lat": 0, "lon": 0}, "vehicleType": "van", "trucks": 1,
      "ttlSeconds": 0}, "ttlSeconds"),
])
def test_bad_booking_bodies_name_the_field(body: object, field: str) -> None:
    """A body the app cannot use is a BadRequest whose message starts with the field."""
    with pytest.raises(BadRequest) as refused:
        parse_new("booking", body)
    assert str(refused.value).startswith(field)


def test_slots_default_to_one_and_are_checked() -> None:
    """An accept without a body takes one slot; a bad count is refused naming slots."""
    assert (parse_slots(None), parse_slots({}), parse_slots({"slots": 2})) == (1, 1, 2)
    with pytest.raises(BadRequest, match=r"^slots"):
        parse_slots({"slots": "2"})
