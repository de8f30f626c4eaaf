"""The host's tables: bookings and orders on the library's mixin, with their own columns, and the
transporters with their locations.

``bookings`` and ``orders`` are the legacy tables of ``examples/migrations`` (revision 0001), taken
to the lifecycle by revision 0002; revision ``0003_marketplace`` adds the columns below. The
lifecycle columns (``status``, ``version``, slots, deadline, ``customer_id``) come from
:class:`~broadcast_lifecycle.BroadcastMixin`; the app never writes them itself.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, Index, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from broadcast_lifecycle import BroadcastMixin

__all__ = ["MODELS", "Base", "Booking", "Order", "Transporter"]


class Base(DeclarativeBase):
    """The app's metadata (Alembic's ``target_metadata`` with ``library_metadata``)."""


class _Trip:
    """Where a broadcast picks up and drops off (address and coordinates)."""

    pickup_address: Mapped[str] = mapped_column(String(200))
    pickup_lat: Mapped[float] = mapped_column(Float)
    pickup_lon: Mapped[float] = mapped_column(Float)
    drop_address: Mapped[str] = mapped_column(String(200))
    drop_lat: Mapped[float] = mapped_column(Float)
    drop_lon: Mapped[float] = mapped_column(Float)


class Booking(Base, _Trip, BroadcastMixin):
    """One request for ``slots_requested`` trucks of one vehicle type."""

    __tablename__ = "bookings"
    id: Mapped[int] = mapped_column(primary_key=True)
    vehicle_type: Mapped[str] = mapped_column(String(32))


class Order(Base, _Trip, BroadcastMixin):
    """Several truck requests (``trucks``: ``[{"vehicleType": "van", "count": 2}, ...]``); its slots
    are the trucks of all its requests together."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    trucks: Mapped[list[dict[str, Any]]] = mapped_column(JSON)


class Transporter(Base):
    """A transporter with one vehicle, where it is now."""

    __tablename__ = "transporters"
    __table_args__ = (Index("ix_transporters_position", "lat", "lon"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    vehicle_type: Mapped[str] = mapped_column(String(32))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)


MODELS: dict[str, type[Booking] | type[Order]] = {"booking": Booking, "order": Order}
"""The library's kinds on the app's models (``SQLAlchemyStore(models=...)``)."""
