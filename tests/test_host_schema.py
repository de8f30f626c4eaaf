"""A host model in a PostgreSQL schema of its own (``__table_args__ = {"schema": "app"}``): every write
path, the sweep and the policy's index name the table with its schema."""

from __future__ import annotations

from datetime import timedelta

import pytest
from conftest import ManualClock
from postgres_server import PostgresServer
from sqlalchemy import String, create_engine, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from broadcast_lifecycle import (
    BroadcastLifecycle,
    BroadcastMixin,
    KindConfig,
    OpenBroadcastExists,
    SQLAlchemyStore,
    TransitionRefused,
)
from broadcast_lifecycle.testing import EventRecorder


class Base(DeclarativeBase):
    """The host's own metadata."""


class Haul(BroadcastMixin, Base):
    """A host model in schema ``app``."""

    __tablename__ = "hauls"
    __table_args__ = {"schema": "app"}  # noqa: RUF012 (SQLAlchemy's declarative attribute)
    id: Mapped[int] = mapped_column(primary_key=True)
    cargo: Mapped[str] = mapped_column(String(40), default="boxes")


def test_a_model_in_its_own_schema_goes_through_every_path(postgres_server: PostgresServer,
                                                            clock: ManualClock) -> None:
    """Create, offer, activate, accept in place, a refusal, cancel (one statement), the sweep and
    the one-open-per-customer index all work on ``app.hauls`` (no table of that name elsewhere)."""
    url = postgres_server.create_database("host_schema")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA app"))
    Base.metadata.create_all(engine)
    store = SQLAlchemyStore(engine, {"haul": Haul})
    kind = KindConfig("haul", id_field="haulId", one_open_per_customer=True)
    store.create_all([kind])
    recorder = EventRecorder()
    lifecycle = BroadcastLifecycle(store, clock=clock, kinds=[kind])
    lifecycle.bus.connect(recorder)
    hauls = lifecycle.kind("haul")
    first = hauls.create("c1", slots=2).id
    with pytest.raises(OpenBroadcastExists):
        hauls.create("c1")
    hauls.start_broadcast(first, ["t1", "t2"])
    hauls.activate(first, ttl=timedelta(minutes=5))
    assert hauls.accept(first, "t1").snapshot.slots_filled == 1
    with pytest.raises(TransitionRefused):
        hauls.accept(first, "t9")
    assert hauls.cancel(first).snapshot.status.value == "cancelled"
    second = hauls.create("c1").id
    hauls.start_broadcast(second, ["t1"])
    hauls.activate(second, ttl=timedelta(minutes=1))
    clock.advance(timedelta(minutes=2))
    assert lifecycle.expire_due() == 1
    assert hauls.history(second)[-1].to_status.value == "expired"
    with engine.connect() as conn:
        indexes = set(conn.execute(text("SELECT indexname FROM pg_indexes WHERE schemaname = 'app'")).scalars())
    assert {"ix_hauls_due", "uq_hauls_haul_open_customer"} <= indexes
    assert any(e.name == "HAUL_EXPIRED" for e in recorder.events)
    store.close()
    engine.dispose()
