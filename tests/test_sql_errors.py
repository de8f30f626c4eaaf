"""Database errors classified by SQLSTATE and constraint name (PostgreSQL) or by SQLite's exact
message, mapped to the library's names; never by a word somewhere in the message."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from conftest import ManualClock
from sqlalchemy import CheckConstraint, Engine, ForeignKey, Integer, String, Table, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from broadcast_lifecycle import (
    AsyncSQLAlchemyStore,
    BroadcastLifecycle,
    IdempotencyKeyReused,
    InvalidArgument,
    KindConfig,
    OpenBroadcastExists,
    StoreError,
    TransitionRefused,
)
from broadcast_lifecycle.stores._sql_errors import Violation, violation
from broadcast_lifecycle.stores.schema import BroadcastMixin, library_metadata
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore


class Base(DeclarativeBase):
    """The host's declarative base."""


class Customer(Base):
    """The host's customers."""

    __tablename__ = "customers"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)


class Booking(Base, BroadcastMixin):
    """A host model whose customer_id is a foreign key to the host's customers."""

    __tablename__ = "bookings"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128), ForeignKey("customers.id"), nullable=False)


class Order(Base, BroadcastMixin):
    """A host model of a kind with the one-open-order-per-customer policy."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)


class Parcel(Base, BroadcastMixin):
    """A host model with a NOT NULL column, named like customer_id, that create does not fill."""

    __tablename__ = "parcels"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id_hash: Mapped[str] = mapped_column(String(64), nullable=False)


class Ride(Base, BroadcastMixin):
    """A host model with NOT NULL columns of its own, one with an unnamed CHECK, and a named CHECK."""

    __tablename__ = "rides"
    id: Mapped[int] = mapped_column(primary_key=True)
    pickup: Mapped[str] = mapped_column(String(200), nullable=False)
    fare_cents: Mapped[int] = mapped_column(Integer, CheckConstraint("fare_cents >= 0"), nullable=False)
    seats: Mapped[int] = mapped_column(Integer, CheckConstraint("seats BETWEEN 1 AND 8", name="ck_rides_seats"),
                                       default=1)


_KINDS = (KindConfig("booking"), KindConfig("order", one_open_per_customer=True),
          KindConfig("parcel", one_open_per_customer=True), KindConfig("ride"))


def _setup(url: str) -> tuple[Engine, BroadcastLifecycle]:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _foreign_keys(dbapi_connection: Any, _record: Any) -> None:  # the host's own setting
            dbapi_connection.execute("PRAGMA foreign_keys = ON")
    Base.metadata.create_all(engine)
    store = SQLAlchemyStore(engine, models={"booking": Booking, "order": Order, "parcel": Parcel,
                                                    "ride": Ride})
    store.create_all(_KINDS)
    with Session(engine) as session:
        session.add(Customer(id="c1"))
        session.commit()
    return engine, BroadcastLifecycle(store, clock=ManualClock(), kinds=_KINDS)


def test_a_foreign_key_is_not_the_open_broadcast_policy(database_url: str) -> None:
    """An unknown customer on a host model whose customer_id is a foreign key is a StoreError
    naming the foreign key constraint (PostgreSQL names it; SQLite names none)."""
    engine, lc = _setup(database_url)
    with pytest.raises(StoreError) as info:
        lc.kind("booking").create("nobody")
    assert not isinstance(info.value, TransitionRefused)
    assert "foreign key constraint" in str(info.value)
    if engine.dialect.name == "postgresql":
        assert info.value.constraint == "bookings_customer_id_fkey"
        assert "bookings_customer_id_fkey" in str(info.value)
    assert lc.kind("booking").create("c1").snapshot.customer_id == "c1"


def test_a_not_null_column_named_like_customer_id_is_not_the_policy(database_url: str) -> None:
    """A NOT NULL host column the create leaves empty is the caller's input (InvalidArgument naming the
    column), also on a kind with the one-open-per-customer policy."""
    _, lc = _setup(database_url)
    with pytest.raises(InvalidArgument, match=r"^customer_id_hash needs a value \(not None\): "
                                              r"parcels.customer_id_hash \(VARCHAR\(64\)\) is NOT NULL"):
        lc.kind("parcel").create("c1")


@pytest.mark.parametrize(("columns", "says"), [
    ({"fare_cents": 5}, r"pickup needs a value \(not None\): rides.pickup"),
    ({"pickup": None, "fare_cents": 5}, r"pickup needs a value \(not None\): rides.pickup"),
    ({"pickup": "Dock 4"}, r"fare_cents needs a value"),
    ({"pickup": "Dock 4", "fare_cents": -1}, r"the value of fare_cents is refused by the CHECK of rides "
                                             r"\(fare_cents >= 0\)"),
    ({"pickup": "Dock 4", "fare_cents": 5, "seats": 9}, r"the value of seats is refused by the CHECK "
                                                        r"ck_rides_seats of rides \(seats BETWEEN 1 AND 8\)"),
])
def test_a_host_column_refusing_its_value_is_the_callers_input(database_url: str, columns: dict[str, Any],
                                                                 says: str) -> None:
    """A NOT NULL or CHECK constraint of a host column refusing create(columns=...) is InvalidArgument
    naming the column and what it allows (not a StoreError a host would retry), on SQLite and
    PostgreSQL alike; nothing is written."""
    _, lc = _setup(database_url)
    rides = lc.kind("ride")
    with pytest.raises(InvalidArgument, match=says):
        rides.create("c1", columns=columns)
    assert rides.create("c1", columns={"pickup": "Dock 4", "fare_cents": 5}).id is not None


@pytest.mark.parametrize("columns", [{"pickup": "Dock 4", "fare_cents": "a lot"},
                                     {"pickup": "D" * 300, "fare_cents": 5}])
def test_a_value_the_column_type_refuses_is_the_callers_input(database_url: str, columns: dict[str, Any]) -> None:
    """Text in an integer column or a value too long for its VARCHAR: PostgreSQL refuses it (a data
    exception), and that is the caller's input (InvalidArgument naming the refusal), not a StoreError a
    host would retry. SQLite stores any value in any column, so there the create succeeds."""
    engine, lc = _setup(database_url)
    rides = lc.kind("ride")
    if engine.dialect.name == "sqlite":
        assert rides.create("c1", columns=columns).id is not None
        return
    with pytest.raises(InvalidArgument, match=r"the database refused a value \((invalid input syntax for type "
                                              r"integer|value too long for type character varying\(200\)).*"
                                              r"SQLSTATE 22"):
        rides.create("c1", columns=columns)
    assert lc.store.pending_events(10) == []


def test_adopting_a_host_row_that_breaks_a_host_check_is_the_callers_input(database_url: str) -> None:
    """adopt() flushing the host's row that breaks a CHECK of its own columns is InvalidArgument naming
    the column, and the session rolls back with nothing recorded."""
    engine, lc = _setup(database_url)
    with Session(engine) as session:
        session.add(Ride(id=7, customer_id="c1", pickup="Dock 4", fare_cents=-3, slots_requested=1))
        with pytest.raises(InvalidArgument, match="the value of fare_cents is refused"):
            lc.kind("ride").adopt(7, tx=session)
        session.rollback()
    assert lc.store.pending_events(10) == []


def test_the_librarys_own_check_stays_a_store_error(database_url: str) -> None:
    """A CHECK of the library's own columns (a row the host inserted with slots_requested 0) is not the
    caller's columns= input: it stays a StoreError naming the constraint."""
    engine, lc = _setup(database_url)
    with Session(engine) as session:
        session.add(Ride(id=8, customer_id="c1", pickup="Dock 4", fare_cents=1, slots_requested=0))
        with pytest.raises(StoreError, match="ck_rides_slots_requested") as info:
            lc.kind("ride").adopt(8, tx=session)
        assert not isinstance(info.value, InvalidArgument)


def test_the_policy_index_still_refuses_a_second_open_order(database_url: str) -> None:
    """The one-open-per-customer index is recognised by its name and worded for the customer."""
    _, lc = _setup(database_url)
    lc.kind("order").create("c1")
    with pytest.raises(OpenBroadcastExists) as info:
        lc.kind("order").create("c1")
    assert str(info.value) == ("order for customer 'c1': create refused: customer 'c1' already has an open order; "
                               "cancel or finish it before creating another")


def test_an_error_that_mentions_the_idempotency_table_is_no_reused_key(database_url: str) -> None:
    """A missing idempotency table is a StoreError, not IdempotencyKeyReused (its name in the
    message says nothing about a key)."""
    engine, lc = _setup(database_url)
    snap = lc.kind("booking").create("c1")
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE bl_idempotency")
    with pytest.raises(StoreError) as info:
        lc.kind("booking").start_broadcast(snap.id, ["t1"], actor="dispatcher", idempotency_key="k-1")
    assert not isinstance(info.value, IdempotencyKeyReused)


def _sqlite_error(statements: list[str]) -> sqlite3.Error:
    connection = sqlite3.connect(":memory:")
    try:
        for statement in statements[:-1]:
            connection.execute(statement)
        connection.execute(statements[-1])
    except sqlite3.Error as exc:
        return exc
    finally:
        connection.close()
    raise AssertionError("the last statement did not fail")


_TABLES: dict[str, Table] = {**library_metadata.tables, **Base.metadata.tables}


@pytest.mark.parametrize(("statements", "kind", "expected"), [
    (["CREATE TABLE bl_idempotency (key VARCHAR(200) PRIMARY KEY)", "INSERT INTO bl_idempotency VALUES ('k')",
      "INSERT INTO bl_idempotency VALUES ('k')"], None,
     Violation("unique", "bl_idempotency_pkey", "bl_idempotency", ("key",))),
    (["CREATE TABLE bl_transition_history (kind, entity_id, version)",
      "CREATE UNIQUE INDEX uq_bl_history_entity_version ON bl_transition_history (kind, entity_id, version)",
      "INSERT INTO bl_transition_history VALUES ('b', '1', 1)",
      "INSERT INTO bl_transition_history VALUES ('b', '1', 1)"], None,
     Violation("unique", "uq_bl_history_entity_version", "bl_transition_history", ("kind", "entity_id", "version"))),
    (["CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id, status)",
      "CREATE UNIQUE INDEX uq_orders_order_open_customer ON orders (customer_id) WHERE status = 'created'",
      "INSERT INTO orders VALUES (1, 'c1', 'created')", "INSERT INTO orders VALUES (2, 'c1', 'created')"], "order",
     Violation("unique", "uq_orders_order_open_customer", "orders", ("customer_id",))),
    (["CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id, status)",
      "CREATE UNIQUE INDEX host_index ON orders (customer_id)",
      "INSERT INTO orders VALUES (1, 'c1', 'created')", "INSERT INTO orders VALUES (2, 'c1', 'created')"], None,
     Violation("unique", None, "orders", ("customer_id",))),
    (["CREATE TABLE parcels (id INTEGER PRIMARY KEY, customer_id_hash NOT NULL)",
      "INSERT INTO parcels (id) VALUES (1)"], "parcel",
     Violation("not null", None, "parcels", ("customer_id_hash",))),
    (["CREATE TABLE t (n INTEGER CONSTRAINT ck_t_n CHECK (n > 0))", "INSERT INTO t VALUES (0)"], None,
     Violation("check", "ck_t_n")),
    (["PRAGMA foreign_keys = ON", "CREATE TABLE c (id PRIMARY KEY)", "CREATE TABLE t (c REFERENCES c (id))",
      "INSERT INTO t VALUES ('nobody')"], None, Violation("foreign key", None)),
])
def test_sqlite_errors_map_to_the_library_names(statements: list[str], kind: str | None,
                                                expected: Violation) -> None:
    """SQLite's report of the columns a unique index covers maps to the library's name for that
    index (the primary key's, a declared index's, a kind's policy index); other rules keep theirs."""
    assert violation(_sqlite_error(statements), _TABLES, kind) == expected


def test_a_message_that_mentions_a_constraint_is_no_violation() -> None:
    """Errors that are not integrity errors are not classified, whatever words they contain."""
    missing = _sqlite_error(["SELECT customer_id FROM bl_idempotency"])
    assert "customer_id" in str(missing) or "bl_idempotency" in str(missing)
    assert violation(missing, _TABLES, "order") is None


def test_missing_tables_say_to_create_them(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A store whose tables were never created: the error says so, and how to create them, on both databases;
    no warning about the missing PostgreSQL function (missing with everything else) adds noise."""
    store = SQLAlchemyStore.from_url(database_url)
    lifecycle = BroadcastLifecycle(store)
    with pytest.raises(StoreError, match=r"tables are missing in this database: run store\.create_all\(\)"):
        lifecycle.kind("booking").create("c1")
    with pytest.raises(StoreError, match=r"tables are missing in this database"):
        lifecycle.kind("booking").cancel(1)
    assert "is missing, so accept" not in caplog.text
    store.close()


def test_a_url_whose_driver_is_not_installed_names_the_supported_ones() -> None:
    """An engine URL naming a driver that is not installed: InvalidArgument naming the drivers the store runs on."""
    for from_url in (SQLAlchemyStore.from_url, AsyncSQLAlchemyStore.from_url):
        with pytest.raises(InvalidArgument, match=r"postgresql\+pg8000:// needs a driver that is not installed .*"
                                                  r"AsyncSQLAlchemyStore on .* postgresql\+psycopg://"):
            from_url("postgresql+pg8000://app@/app")
