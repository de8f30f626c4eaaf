"""Request bodies in, JSON out: the checks of what a client sends (``BadRequest`` naming the field)
and the shapes the API answers with."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from broadcast_lifecycle import BroadcastSnapshot, HistoryEntry

from .errors import BadRequest
from .models import Booking, Order

__all__ = [
    "KINDS",
    "VEHICLE_TYPES",
    "NewBroadcast",
    "broadcast_json",
    "details_json",
    "history_json",
    "parse_new",
    "parse_slots",
]

KINDS = ("booking", "order")
VEHICLE_TYPES = ("van", "truck", "trailer")
MAX_TRUCKS = 50
MAX_TTL_SECONDS = 86_400


@dataclass(frozen=True, kw_only=True)
class NewBroadcast:
    """A checked creation request: the slots, the host columns, and what to match transporters on."""

    slots: int
    columns: dict[str, Any]
    pickup: tuple[float, float]
    vehicle_types: tuple[str, ...]
    ttl: timedelta | None = None
    """How long the broadcast stays open (``ttlSeconds``); the app's default when ``None``."""


def _field(body: Mapping[str, Any], name: str) -> Any:
    if name not in body:
        raise BadRequest(f"{name} is required")
    return body[name]


def _place(body: Mapping[str, Any], name: str) -> tuple[str, float, float]:
    place = _field(body, name)
    if not isinstance(place, dict):
        raise BadRequest(f"{name} must be an object with address, lat and lon")
    address = place.get("address", "")
    lat, lon = place.get("lat"), place.get("lon")
    if not isinstance(address, str) or len(address) > 200:
        raise BadRequest(f"{name}.address must be a string of at most 200 characters")
    for key, value, limit in (("lat", lat, 90), ("lon", lon, 180)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or abs(value) > limit:
            raise BadRequest(f"{name}.{key} must be a number between -{limit} and {limit}, got {value!r}")
    return address, float(lat), float(lon)  # type: ignore[arg-type]


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TRUCKS:
        raise BadRequest(f"{name} must be an integer from 1 to {MAX_TRUCKS}, got {value!r}")
    return value


def _vehicle(value: object, name: str) -> str:
    if value not in VEHICLE_TYPES:
        raise BadRequest(f"{name} must be one of {', '.join(VEHICLE_TYPES)}, got {value!r}")
    return str(value)


def _ttl(value: object) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.1 <= value <= MAX_TTL_SECONDS:
        raise BadRequest(f"ttlSeconds must be a number from 0.1 to {MAX_TTL_SECONDS}, got {value!r}")
    return timedelta(seconds=value)


def parse_new(kind: str, body: object) -> NewBroadcast:
    """Check a creation body. A booking: ``{"pickup": {"address", "lat", "lon"}, "drop": {...},
    "vehicleType": "van", "trucks": 2}``; an order: the same with ``"trucks": [{"vehicleType": "van",
    "count": 2}, ...]`` (several truck requests, one slot per truck). Either may say how long it stays
    open: ``"ttlSeconds": 300``."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    ttl = _ttl(body.get("ttlSeconds"))
    p_address, p_lat, p_lon = _place(body, "pickup")
    d_address, d_lat, d_lon = _place(body, "drop")
    columns: dict[str, Any] = {"pickup_address": p_address, "pickup_lat": p_lat, "pickup_lon": p_lon,
                               "drop_address": d_address, "drop_lat": d_lat, "drop_lon": d_lon}
    if kind == "booking":
        vehicle = _vehicle(_field(body, "vehicleType"), "vehicleType")
        slots = _count(_field(body, "trucks"), "trucks")
        columns["vehicle_type"] = vehicle
        return NewBroadcast(slots=slots, columns=columns, pickup=(p_lat, p_lon), vehicle_types=(vehicle,), ttl=ttl)
    requests = _field(body, "trucks")
    if not isinstance(requests, list) or not requests or len(requests) > 10:
        raise BadRequest("trucks must be a list of 1 to 10 truck requests {vehicleType, count}")
    trucks: list[dict[str, Any]] = []
    for i, request in enumerate(requests):
        if not isinstance(request, dict):
            raise BadRequest(f"trucks[{i}] must be an object with vehicleType and count")
        trucks.append({"vehicleType": _vehicle(request.get("vehicleType"), f"trucks[{i}].vehicleType"),
                       "count": _count(request.get("count"), f"trucks[{i}].count")})
    columns["trucks"] = trucks
    return NewBroadcast(slots=sum(t["count"] for t in trucks), columns=columns, pickup=(p_lat, p_lon),
                        vehicle_types=tuple(sorted({t["vehicleType"] for t in trucks})), ttl=ttl)


def parse_slots(body: object) -> int:
    """The ``slots`` of an accept or release body (1 when the body has none)."""
    if body is None or body == {}:
        return 1
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return _count(body.get("slots", 1), "slots")


def broadcast_json(snap: BroadcastSnapshot) -> dict[str, Any]:
    """A broadcast's lifecycle fields, as the events carry them (camelCase, ISO-8601 UTC)."""
    return {"kind": snap.kind, "id": snap.id, **snap.to_json()}


def details_json(row: Booking | Order) -> dict[str, Any]:
    """The host's own columns of a booking or order."""
    details: dict[str, Any] = {
        "pickup": {"address": row.pickup_address, "lat": row.pickup_lat, "lon": row.pickup_lon},
        "drop": {"address": row.drop_address, "lat": row.drop_lat, "lon": row.drop_lon},
    }
    if isinstance(row, Booking):
        details["vehicleType"] = row.vehicle_type
    else:
        details["trucks"] = row.trucks
    return details


def history_json(history: tuple[HistoryEntry, ...]) -> list[dict[str, Any]]:
    """The audit trail, oldest first."""
    return [{"version": e.version, "from": e.from_status.value if e.from_status else None, "to": e.to_status.value,
             "trigger": e.trigger, "actor": e.actor, "reason": e.reason, "at": e.at.isoformat()} for e in history]
