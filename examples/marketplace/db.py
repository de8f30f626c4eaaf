"""The database: Alembic migrations to head, and the queries on the app's own tables.

The revisions are the library's example ones (``examples/migrations``: the legacy tables, then the
lifecycle) followed by the app's (``migrations/versions`` here), one history in two folders
(Alembic's ``version_locations``), run through the example's ``env.py``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import cast, create_engine, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from broadcast_lifecycle import OPEN, Trigger, allowed_from, library_metadata

from .models import MODELS, Base, Transporter
from .settings import sync_url

__all__ = ["alembic_config", "migrate", "nearby_transporters", "open_offers", "seed_transporters"]

HERE = Path(__file__).resolve().parent
LIBRARY_MIGRATIONS = HERE.parent / "migrations"
EARTH_KM = 6371.0


def alembic_config(database_url: str) -> Config:
    """Alembic's configuration for the app's schema on ``database_url``."""
    config = Config()
    config.set_main_option("script_location", str(LIBRARY_MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations",
                           os.pathsep.join(str(p / "versions") for p in (LIBRARY_MIGRATIONS, HERE / "migrations")))
    config.set_main_option("sqlalchemy.url", sync_url(database_url).replace("%", "%%"))
    config.attributes["host_metadata"] = [Base.metadata]
    return config


def migrate(database_url: str) -> None:
    """Take the database to the newest revision (creates every table on an empty one)."""
    command.upgrade(alembic_config(database_url), "heads")


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(math.sqrt(a))


async def nearby_transporters(session: AsyncSession, lat: float, lon: float, vehicle_types: Iterable[str], *,
                              radius_km: float, limit: int) -> list[str]:
    """Ids of the ``limit`` nearest transporters with one of ``vehicle_types`` within ``radius_km`` of
    (lat, lon), nearest first: a bounding box in SQL (the position index), the exact distance here."""
    dlat = math.degrees(radius_km / EARTH_KM)
    dlon = dlat / max(math.cos(math.radians(lat)), 1e-6)
    t = Transporter
    rows = (await session.execute(
        select(t.id, t.lat, t.lon).where(t.lat.between(lat - dlat, lat + dlat), t.lon.between(lon - dlon, lon + dlon),
                                         t.vehicle_type.in_(sorted(set(vehicle_types)))))).all()
    near = sorted((distance_km(lat, lon, row.lat, row.lon), row.id) for row in rows)
    return [tid for km, tid in near if km <= radius_km][:limit]


async def open_offers(session: AsyncSession, transporter_id: str) -> list[tuple[str, int, int]]:
    """(kind, id, slots held) of what ``transporter_id`` may act on, oldest offer first: every open
    broadcast it was offered, and every closed one it can still release slots of (fully filled)."""
    recipients = library_metadata.tables["bl_recipients"]
    r = recipients.c
    releasable = [s.value for s in allowed_from(Trigger.RELEASE)]
    offers: list[tuple[datetime, str, int, int]] = []
    for kind, model in MODELS.items():
        rows = await session.execute(
            select(r.notified_at, model.id, r.slots_held)
            .join_from(model, recipients, (r.kind == kind) & (r.entity_id == cast(model.id, r.entity_id.type)))
            .where(r.transporter_id == transporter_id,
                   model.status.in_([s.value for s in OPEN]) | (model.status.in_(releasable) & (r.slots_held > 0))))
        offers.extend((notified, kind, entity_id, held) for notified, entity_id, held in rows)
    return [(kind, entity_id, held) for _, kind, entity_id, held in sorted(offers)]


def seed_transporters(database_url: str, transporters: Iterable[Transporter]) -> None:
    """Insert ``transporters`` (sync, before the app starts) unless a row with the same id is there."""
    engine = create_engine(sync_url(database_url))
    try:
        with Session(engine) as session, session.begin():
            for transporter in transporters:
                if session.get(Transporter, transporter.id) is None:
                    session.add(transporter)
    finally:
        engine.dispose()
