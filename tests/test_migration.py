"""The example Alembic migration takes a legacy schema with data to the library's, and back, on
SQLite and PostgreSQL; the library then runs real transitions on the migrated tables."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from conftest import START, ManualClock
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from broadcast_lifecycle import BroadcastLifecycle, BroadcastStatus
from broadcast_lifecycle.stores._sql_tables import utc
from broadcast_lifecycle.stores.schema import (
    EXPIRABLE_SQL,
    BroadcastMixin,
    library_metadata,
    postgresql_functions_ddl,
)
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore
from broadcast_lifecycle.testing import EventRecorder

MIGRATIONS = Path(__file__).resolve().parent.parent / "examples" / "migrations"
LEGACY, HEAD = "0001_legacy", "0002_broadcast_lifecycle"
TZ = sa.DateTime(timezone=True)

LEGACY_ROWS = [  # (table, status, trucks requested, created_at)
    ("bookings", "active", 1, START - timedelta(hours=1)),
    ("bookings", "completed", 1, START - timedelta(days=3)),
    ("bookings", "cancelled", 1, START - timedelta(days=2)),
    ("orders", "active", 3, START - timedelta(minutes=30)),
    ("orders", "completed", 2, START - timedelta(days=5)),
    ("orders", "cancelled", 4, START - timedelta(days=4, hours=6)),
]
KINDS = {"bookings": "booking", "orders": "order"}

Ids = dict[tuple[str, str], int]
"""(table, legacy status) -> the id the database gave the row."""


class Base(DeclarativeBase):
    """The host's models as they are after the migration."""


class Booking(Base, BroadcastMixin):
    """A booking on the migrated ``bookings`` table."""

    __tablename__ = "bookings"
    id: Mapped[int] = mapped_column(primary_key=True)


class Order(Base, BroadcastMixin):
    """An order on the migrated ``orders`` table; the legacy ``trucks_requested`` stays mapped."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    trucks_requested: Mapped[int] = mapped_column(server_default="1")


def legacy_table(name: str) -> sa.TableClause:
    """The columns a legacy row is written with."""
    columns: list[sa.ColumnClause[object]] = [
        sa.column("id", sa.Integer), sa.column("customer_id", sa.String), sa.column("status", sa.String),
        sa.column("created_at", TZ),
    ]
    if name == "orders":
        columns.append(sa.column("trucks_requested", sa.Integer))
    return sa.table(name, *columns)


def revision(engine: sa.Engine) -> str | None:
    """The revision the database is at."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def table_names(engine: sa.Engine) -> set[str]:
    """The tables in the database."""
    return set(sa.inspect(engine).get_table_names())


@pytest.fixture
def alembic_config(database_url: str) -> Config:
    """The example's alembic.ini aimed at the test database, with the host models for autogenerate."""
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["host_metadata"] = [Base.metadata]
    return config


@pytest.fixture
def engine(database_url: str) -> Iterator[sa.Engine]:
    """A plain engine on the test database, for setting up and inspecting."""
    eng = sa.create_engine(database_url)
    yield eng
    eng.dispose()


def insert_legacy_rows(engine: sa.Engine) -> Ids:
    """Write LEGACY_ROWS as the old application would have; ids come from the database."""
    ids: Ids = {}
    with engine.begin() as conn:
        for table, status, trucks, created_at in LEGACY_ROWS:
            values: dict[str, object] = {"customer_id": f"{table}-{status}", "status": status,
                                         "created_at": created_at}
            if table == "orders":
                values["trucks_requested"] = trucks
            t = legacy_table(table)
            ids[table, status] = conn.execute(sa.insert(t).values(values).returning(t.c.id)).scalar_one()
    return ids


@pytest.fixture
def migrated(alembic_config: Config, engine: sa.Engine) -> Ids:
    """A database taken to the legacy revision, filled with legacy rows, then upgraded to head."""
    command.upgrade(alembic_config, LEGACY)
    ids = insert_legacy_rows(engine)
    command.upgrade(alembic_config, "head")
    return ids


@pytest.fixture
def lifecycle(database_url: str, clock: ManualClock, recorder: EventRecorder) -> Iterator[BroadcastLifecycle]:
    """The library on the migrated tables through the host's models (own engine: the store configures it)."""
    store = SQLAlchemyStore.from_url(database_url, models={"booking": Booking, "order": Order})
    lc = BroadcastLifecycle(store, clock=clock)
    lc.bus.connect(recorder)
    yield lc
    store.engine.dispose()


def test_upgrade_keeps_every_row_and_stamps_it(migrated: Ids, engine: sa.Engine) -> None:
    """Every legacy row keeps its status, gets state_changed_at = created_at, version 1 and its slots."""
    assert revision(engine) == HEAD
    with Session(engine) as session:
        for table, status, trucks, created_at in LEGACY_ROWS:
            key = migrated[table, status]
            row = session.get_one(Booking, key) if table == "bookings" else session.get_one(Order, key)
            assert row.status == status
            assert utc(row.created_at) == created_at
            assert utc(row.state_changed_at) == created_at
            assert row.version == 1
            assert row.slots_requested == trucks
            assert row.slots_filled == (trucks if status == "completed" else 0)
            assert row.expires_at is None


def test_upgrade_adds_the_models_indexes(migrated: Ids, engine: sa.Engine) -> None:
    """Each table gets the mixin's customer index and the sweeper's partial due index."""
    for table in KINDS:
        indexes = {index["name"]: index for index in sa.inspect(engine).get_indexes(table)}
        assert {f"ix_{table}_customer_id", f"ix_{table}_due"} <= indexes.keys()
        if engine.dialect.name == "sqlite":  # SQLite uses a partial index only for a query repeating its WHERE
            assert str(indexes[f"ix_{table}_due"]["dialect_options"]["sqlite_where"]) == EXPIRABLE_SQL


def test_upgrade_starts_the_audit_trail(migrated: Ids, engine: sa.Engine) -> None:
    """Each existing broadcast gets one history row: (none) -> its status, trigger 'migrate', version 1."""
    h = library_metadata.tables["bl_transition_history"].c
    with engine.connect() as conn:
        rows = conn.execute(sa.select(h.kind, h.entity_id, h.from_status, h.to_status, h.trigger, h.version,
                                      h.meta, h.at)).all()
    expected = {(KINDS[table], str(migrated[table, status]), None, status, "migrate", 1, created_at)
                for table, status, _, created_at in LEGACY_ROWS}
    assert {(*row[:6], utc(row.at)) for row in rows} == expected
    assert len(rows) == len(LEGACY_ROWS)
    assert all(row.meta == {} for row in rows)


@pytest.mark.parametrize("table", ["bookings", "orders"])
def test_new_checks_accept_every_state_and_reject_the_unknown(migrated: Ids, engine: sa.Engine, table: str) -> None:
    """The status CHECK accepts every library state and rejects 'bogus'; the slot CHECKs refuse bad fills."""
    t = sa.table(table, sa.column("id", sa.Integer), sa.column("status", sa.String),
                 sa.column("slots_filled", sa.Integer))
    row = t.c.id == migrated[table, "active"]
    for status in BroadcastStatus:
        with engine.begin() as conn:
            conn.execute(sa.update(t).where(row).values(status=status.value))
    for bad in ({"status": "bogus"}, {"slots_filled": 99}, {"slots_filled": -1}):
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(sa.update(t).where(row).values(bad))


def test_library_runs_transitions_on_migrated_tables(migrated: Ids, lifecycle: BroadcastLifecycle,
                                                     recorder: EventRecorder, engine: sa.Engine) -> None:
    """A migrated active booking cancels (history v2, outbox events), a migrated order fills, a new one is created."""
    booking_id = migrated["bookings", "active"]
    cancelled = lifecycle.kind("booking").cancel(booking_id, actor="bookings-active", reason="changed plans")
    assert (cancelled.status, cancelled.version, cancelled.snapshot.state_changed_at) == (
        BroadcastStatus.CANCELLED, 2, START)
    history = lifecycle.kind("booking").history(booking_id)
    assert [(e.version, e.from_status, e.to_status, e.trigger) for e in history] == [
        (1, None, BroadcastStatus.ACTIVE, "migrate"),
        (2, BroadcastStatus.ACTIVE, BroadcastStatus.CANCELLED, "cancel"),
    ]
    assert recorder.names() == ["BROADCAST_STATE_CHANGED", "BOOKING_CANCELLED"]
    outbox = library_metadata.tables["bl_outbox"].c
    with engine.connect() as conn:
        names = conn.execute(sa.select(outbox.name).where(outbox.kind == "booking",
                                                          outbox.entity_id == str(booking_id))).scalars().all()
    assert sorted(names) == ["BOOKING_CANCELLED", "BROADCAST_STATE_CHANGED"]

    order_id = migrated["orders", "active"]  # migrated broadcasts have no recipients until notified
    lifecycle.kind("order").notify_more(order_id, ["t-1"])
    filled = lifecycle.kind("order").accept(order_id, "t-1")
    assert (filled.status, filled.snapshot.slots_filled, filled.snapshot.slots_requested) == (
        BroadcastStatus.PARTIALLY_FILLED, 1, 3)

    created = lifecycle.kind("booking").create(customer_id="c-new")
    assert created.id not in migrated.values()
    assert lifecycle.kind("booking").get(created.id).status is BroadcastStatus.CREATED


def test_downgrade_keeps_every_row(migrated: Ids, lifecycle: BroadcastLifecycle, alembic_config: Config,
                                   engine: sa.Engine) -> None:
    """Downgrading to the legacy revision keeps every row, maps new states to old ones, and upgrades again."""
    order_id = migrated["orders", "active"]
    lifecycle.kind("order").notify_more(order_id, ["t-1"])
    lifecycle.kind("order").accept(order_id, "t-1")
    new_order = lifecycle.kind("order").create(customer_id="c-new", slots=5)
    lifecycle.kind("booking").cancel(migrated["bookings", "active"])

    command.downgrade(alembic_config, LEGACY)

    assert revision(engine) == LEGACY
    assert table_names(engine) == {"alembic_version", "bookings", "orders"}
    assert "state_changed_at" not in {c["name"] for c in sa.inspect(engine).get_columns("orders")}
    with engine.connect() as conn:
        bookings = {row.id: row.status for row in conn.execute(sa.text("SELECT id, status FROM bookings"))}
        orders = {row.id: (row.status, row.trucks_requested) for row in
                  conn.execute(sa.text("SELECT id, status, trucks_requested FROM orders"))}
    assert bookings == {**{migrated["bookings", s]: s for s in ("completed", "cancelled")},
                        migrated["bookings", "active"]: "cancelled"}
    assert orders == {migrated["orders", "active"]: ("active", 3), migrated["orders", "completed"]: ("completed", 2),
                      migrated["orders", "cancelled"]: ("cancelled", 4), new_order.id: ("active", 5)}
    orders_t = legacy_table("orders")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(sa.update(orders_t).where(orders_t.c.id == order_id).values(status="partially_filled"))

    command.upgrade(alembic_config, "head")
    assert revision(engine) == HEAD


def test_a_failed_upgrade_changes_nothing(alembic_config: Config, engine: sa.Engine) -> None:
    """A legacy row the new CHECKs refuse (zero trucks) fails the upgrade, which rolls back whole."""
    command.upgrade(alembic_config, LEGACY)
    insert_legacy_rows(engine)
    orders = legacy_table("orders")
    with engine.begin() as conn:
        conn.execute(sa.insert(orders).values(customer_id="broken", status="active", trucks_requested=0,
                                              created_at=START))

    with pytest.raises(IntegrityError):
        command.upgrade(alembic_config, "head")

    assert revision(engine) == LEGACY
    assert table_names(engine) == {"alembic_version", "bookings", "orders"}
    for table in ("bookings", "orders"):
        assert "state_changed_at" not in {c["name"] for c in sa.inspect(engine).get_columns(table)}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM bookings")).scalar_one() == 3
        assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar_one() == 4


def test_migrated_schema_matches_the_models(migrated: Ids, alembic_config: Config) -> None:
    """`alembic check` finds nothing to change between the migrated database and the models plus library_metadata."""
    command.check(alembic_config)


def _everyone_function_source(engine: sa.Engine) -> str | None:
    """The whole definition (body, volatility, types), or None when the function is missing."""
    with engine.connect() as conn:
        return conn.execute(sa.text(
            "SELECT pg_get_functiondef(to_regprocedure('bl_everyone_json(text, text, text)'))")).scalar()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_migrated_postgresql_has_the_library_functions(migrated: Ids, alembic_config: Config,
                                                       engine: sa.Engine) -> None:
    """On PostgreSQL the revision creates the function the one-statement fill calls, as the library
    defines it today (`alembic check` does not compare functions), and the downgrade drops it."""
    migrated_source = _everyone_function_source(engine)
    with engine.begin() as conn:
        for ddl in postgresql_functions_ddl():
            conn.exec_driver_sql(ddl)
    assert migrated_source is not None
    assert migrated_source == _everyone_function_source(engine)
    command.downgrade(alembic_config, LEGACY)
    assert _everyone_function_source(engine) is None


def test_offline_mode_renders_postgresql_sql() -> None:
    """`alembic upgrade --sql` writes the PostgreSQL script: CHECK replaced, tables created, history seeded."""
    out = io.StringIO()
    config = Config(str(MIGRATIONS / "alembic.ini"), output_buffer=out)
    config.set_main_option("sqlalchemy.url", "postgresql+psycopg://offline/none")
    command.upgrade(config, "head", sql=True)
    script = out.getvalue()
    assert "ALTER TABLE bookings DROP CONSTRAINT ck_bookings_status" in script
    assert "CREATE TABLE bl_transition_history" in script
    assert "INSERT INTO bl_transition_history" in script
    assert "CREATE OR REPLACE FUNCTION bl_everyone_json" in script
    assert "COMMIT" in script

