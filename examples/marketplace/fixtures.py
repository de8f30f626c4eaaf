"""Demo data: transporters around one pickup, and the users the demo and ``make serve`` sign tokens for."""

from __future__ import annotations

from typing import Any

from .auth import Role, User, sign
from .models import Transporter

__all__ = ["CUSTOMERS", "PICKUP", "DROP", "TRANSPORTERS", "booking_body", "demo_transporters", "token_for"]

PICKUP = {"address": "Dock 4, Westhafen", "lat": 52.5362, "lon": 13.3325}
DROP = {"address": "Warehouse 9, Tempelhof", "lat": 52.4702, "lon": 13.4036}
CUSTOMERS = ("c-1", "c-2")
TRANSPORTERS: tuple[tuple[str, str, str, float, float], ...] = (
    # id, name, vehicle type, lat, lon: three vans near the pickup, a truck near it, a van far away
    ("t-1", "Anna's Vans", "van", 52.5400, 13.3400),
    ("t-2", "Bolt Logistics", "van", 52.5200, 13.3600),
    ("t-3", "Crane & Co", "van", 52.5500, 13.3000),
    ("t-4", "Heavy Haul", "truck", 52.5300, 13.3500),
    ("t-9", "Munich Movers", "van", 48.1372, 11.5756),
)


def demo_transporters() -> list[Transporter]:
    """New Transporter rows for :data:`TRANSPORTERS`."""
    return [Transporter(id=tid, name=name, vehicle_type=vehicle, lat=lat, lon=lon)
            for tid, name, vehicle, lat, lon in TRANSPORTERS]


def token_for(user_id: str, role: Role, secret: bytes) -> str:
    """A token for a demo user."""
    return sign(User(user_id, role), secret)


def booking_body(trucks: int = 1, vehicle_type: str = "van") -> dict[str, Any]:
    """A booking request from :data:`PICKUP` to :data:`DROP`."""
    return {"pickup": PICKUP, "drop": DROP, "vehicleType": vehicle_type, "trucks": trucks}
