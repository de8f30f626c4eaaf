"""The app's settings, read once from the environment (``Settings.from_env``) or built by a test."""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

__all__ = ["Settings", "async_url", "sync_url"]


def sync_url(url: str) -> str:
    """``url`` with the sync driver SQLAlchemy should use (psycopg 3 for PostgreSQL)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if url.startswith("sqlite+aiosqlite://"):
        return "sqlite://" + url[len("sqlite+aiosqlite://"):]
    return url


def async_url(url: str) -> str:
    """``url`` with the asyncio driver: aiosqlite for SQLite, psycopg's async mode for PostgreSQL."""
    url = sync_url(url)
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url[len("sqlite://"):]
    return url


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the app reads at start-up."""

    database_url: str
    """Where the data lives: ``sqlite:///path.db`` (the default) or ``postgresql://...``."""
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    """The key tokens are signed with (a fresh one per process unless ``MARKETPLACE_SECRET`` is set)."""
    offer_ttl: timedelta = timedelta(minutes=10)
    """How long a broadcast stays open for acceptances."""
    radius_km: float = 25.0
    """How far from the pickup a transporter may be to be offered a broadcast."""
    max_offers: int = 20
    """At most this many transporters (the nearest) are offered one broadcast."""
    sweep_every: float = 1.0
    """Seconds between two passes of the expiry sweeper."""
    relay_every: float = 2.0
    """Seconds between two passes of the outbox relay."""
    relay_grace: float = 10.0
    """Seconds an event is left to its after-commit dispatch before the relay takes it (events written
    by processes without receivers, such as a worker or the CLI, reach the clients after this)."""
    migrate: bool = True
    """Run the Alembic migrations to head at start-up (turn it off when several processes start at once
    and migrate once before: ``python -m marketplace migrate``)."""
    redis_url: str | None = None
    """python-socketio's Redis manager on this URL, so several app processes reach every client."""
    redis_channel: str = "socketio"
    """The Redis channel the app's nodes publish on (python-socketio's default; nodes of one app share it)."""

    @classmethod
    def from_env(cls) -> Settings:
        """Read ``DATABASE_URL``, ``MARKETPLACE_SECRET``, ``MARKETPLACE_OFFER_TTL`` (seconds),
        ``MARKETPLACE_RADIUS_KM``, ``MARKETPLACE_SWEEP_EVERY``, ``MARKETPLACE_RELAY_EVERY``,
        ``MARKETPLACE_RELAY_GRACE``,
        ``MARKETPLACE_MIGRATE`` (``0`` to skip), ``REDIS_URL`` and ``REDIS_CHANNEL``."""
        env = os.environ.get
        default_db = Path(tempfile.gettempdir()) / "marketplace.db"
        secret = env("MARKETPLACE_SECRET")
        return cls(
            database_url=env("DATABASE_URL") or f"sqlite:///{default_db}",
            secret=secret.encode() if secret else secrets.token_bytes(32),
            offer_ttl=timedelta(seconds=float(env("MARKETPLACE_OFFER_TTL") or 600)),
            radius_km=float(env("MARKETPLACE_RADIUS_KM") or 25),
            sweep_every=float(env("MARKETPLACE_SWEEP_EVERY") or 1),
            relay_every=float(env("MARKETPLACE_RELAY_EVERY") or 2),
            relay_grace=float(env("MARKETPLACE_RELAY_GRACE") or 10),
            migrate=env("MARKETPLACE_MIGRATE", "1") != "0",
            redis_url=env("REDIS_URL") or None,
            redis_channel=env("REDIS_CHANNEL") or "socketio",
        )
