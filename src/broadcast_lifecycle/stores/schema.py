"""The tables: the library's own (history, recipients, outbox), the standalone broadcasts table,
and :class:`BroadcastMixin`, which adds the lifecycle columns to a host's declarative model.

Add :data:`library_metadata` to Alembic's ``target_metadata`` (a list is accepted) so the
library's tables are migrated with the host's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    event,
    text,
)
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from ..clock import utc_now
from ..states import BroadcastStatus
from ._outbox_row import OUTBOX_ROW
from .sql.common import (
    EXPIRABLE_SQL,
    EXPIRABLE_SQL_IN_LIST,
    STATUS_CHECK,
    TERMINAL_HISTORY_SQL,
    due_index_ddl,
    open_customer_index_ddl,
    open_customer_index_name,
)
from .sql.postgresql_functions import (
    EVERYONE_SIGNATURE,
    OUTBOX_DELIVERED_INDEX,
    drop_function,
    function_is_current,
    functions_lock,
    index_exists,
    outbox_delivered_index_ddl,
    pg_everyone_function_body,
    pg_function_ddl,
)

__all__ = [
    "STATUS_CHECK",
    "EXPIRABLE_SQL",
    "EXPIRABLE_SQL_IN_LIST",
    "OUTBOX_DELIVERED_INDEX_DDL",
    "BroadcastMixin",
    "TERMINAL_HISTORY_SQL",
    "broadcasts_table",
    "deliveries_table",
    "due_index_ddl",
    "open_customer_index_ddl",
    "open_customer_index_name",
    "postgresql_functions_ddl",
    "history_table",
    "idempotency_table",
    "library_metadata",
    "outbox_table",
    "recipients_table",
    "standalone_metadata",
]


_Tz = DateTime(timezone=True)

_Key = Text()
"""Ids of the host's records (broadcasts, transporters, actors, customers) in the library's tables:
unbounded text, so they hold every key a host's model holds (a ``String(n)`` of any ``n``, a
``Text``, a UUID's or an integer's digits). PostgreSQL stores ``text`` exactly as ``varchar`` and
SQLite ignores declared lengths, so a bound would only be a limit that PostgreSQL users alone meet."""

library_metadata = MetaData()
"""The library's own tables: history, recipients, outbox, per-receiver deliveries, idempotency keys."""

history_table = Table(
    "bl_transition_history",
    library_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("entity_id", _Key, nullable=False),
    Column("from_status", String(32)),
    Column("to_status", String(32), nullable=False),
    Column("trigger", String(32), nullable=False),
    Column("actor", _Key),
    Column("reason", Text),
    Column("meta", JSON, nullable=False),
    Column("at", _Tz, nullable=False),
    Column("version", Integer, nullable=False),
    Index("uq_bl_history_entity_version", "kind", "entity_id", "version", unique=True),
    Index("ix_bl_history_terminal", "at", sqlite_where=text(TERMINAL_HISTORY_SQL),
          postgresql_where=text(TERMINAL_HISTORY_SQL)),
)
"""One row per transition; (kind, entity_id, version) is unique, so no version is written twice.
``ix_bl_history_terminal`` holds only terminal transitions (one per finished broadcast), for pruning."""

recipients_table = Table(
    "bl_recipients",
    library_metadata,
    Column("kind", String(32), primary_key=True),
    Column("entity_id", _Key, primary_key=True),
    Column("transporter_id", _Key, primary_key=True),
    Column("notified_at", _Tz, nullable=False),
    Column("slots_held", Integer, nullable=False, server_default=text("0")),
    Column("response", String(32)),
    Column("responded_at", _Tz),
    CheckConstraint("slots_held >= 0", name="ck_bl_recipients_slots_held"),
    sqlite_with_rowid=False,
)
"""Who was notified of which broadcast, and how many slots each holds."""

outbox_table = Table(
    "bl_outbox",
    library_metadata,
    *OUTBOX_ROW.table_columns(),  # the event: described once, in outbox_row
    Column("created_at", _Tz, nullable=False),
    Column("delivered_at", _Tz),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", _Tz),
    Column("last_error", Text),
    Column("dead_at", _Tz),
    Index(
        "ix_bl_outbox_pending",
        "created_at",
        sqlite_where=text("delivered_at IS NULL AND dead_at IS NULL"),
        postgresql_where=text("delivered_at IS NULL AND dead_at IS NULL"),
    ),
)
"""Events written with their transition; the relay delivers what after-commit dispatch did not.
On PostgreSQL, :data:`OUTBOX_DELIVERED_INDEX_DDL` adds the index pruning reads."""

OUTBOX_DELIVERED_INDEX_DDL = outbox_delivered_index_ddl(outbox_table)
"""PostgreSQL: delivered outbox rows by delivery time, for pruning (``library_metadata.create_all``
makes it; an Alembic revision runs it with ``op.execute``). A row enters it when it is marked
delivered, never when it is written, so a transition pays nothing for it. SQLite has none: there an
index entry per delivered event costs about 10 us per delivery (one more page in each commit), and
pruning finds its rows by a scan in insertion order that takes no lock instead."""

deliveries_table = Table(
    "bl_deliveries",
    library_metadata,
    Column("event_id", String(36), primary_key=True),
    Column("receiver", String(200), primary_key=True),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("next_attempt_at", _Tz),
    Column("delivered_at", _Tz),
    Column("dead_at", _Tz),
    Index("ix_bl_deliveries_dead", "dead_at", sqlite_where=text("dead_at IS NOT NULL"),
          postgresql_where=text("dead_at IS NOT NULL")),
    sqlite_with_rowid=False,
)
"""Per-receiver delivery state of an outbox event, written only once a delivery pass left the event
undelivered (a receiver raised): which named receivers handled it, which failed (attempts, error,
next attempt) and which gave up (dead letters). Pruned with its event."""


idempotency_table = Table(
    "bl_idempotency",
    library_metadata,
    Column("key", String(200), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("entity_id", _Key, nullable=False),
    Column("trigger", String(32), nullable=False),
    Column("outcome", JSON, nullable=False),
    Column("created_at", _Tz, nullable=False),
    Index("ix_bl_idempotency_created", "created_at"),
)
"""Idempotency keys and the first outcome of the command that used each (by age, for pruning)."""


_PG_FUNCTIONS = ((EVERYONE_SIGNATURE, "json", pg_everyone_function_body(recipients_table)),)
"""PostgreSQL functions the library's statements call: (signature, return type, body)."""


def postgresql_functions_ddl() -> list[str]:
    """PostgreSQL: the functions the library's statements call, as ``CREATE OR REPLACE`` statements.
    ``library_metadata.create_all`` creates them (when missing or different); freeze their text
    in an Alembic revision and run each with ``op.execute``. Without them the store still works,
    with the accept that fills a broadcast on the general path; it logs a warning."""
    return [pg_function_ddl(*function) for function in _PG_FUNCTIONS]


@event.listens_for(library_metadata, "after_create")
def _create_functions(_metadata: MetaData, connection: Connection, **_: Any) -> None:
    """Create or replace each function that is missing or differs, one creator at a time (a
    transaction-scoped advisory lock), so concurrent ``create_all`` calls do not collide and a
    role that may not create functions can still run ``create_all`` once they are current."""
    if connection.dialect.name != "postgresql":
        return
    current = text(function_is_current())
    for signature, returns, body in _PG_FUNCTIONS:
        if connection.execute(current, {"body": body, "signature": signature}).scalar():
            continue
        connection.execute(text(functions_lock()))
        connection.exec_driver_sql(pg_function_ddl(signature, returns, body))


@event.listens_for(library_metadata, "after_create")
def _create_postgresql_indexes(_metadata: MetaData, connection: Connection, **_: Any) -> None:
    """Create the index when it is missing (even ``IF NOT EXISTS`` needs the table's owner, which an
    application role calling ``create_all`` at start-up is not)."""
    if connection.dialect.name != "postgresql":
        return
    if connection.execute(text(index_exists(OUTBOX_DELIVERED_INDEX))).scalar() is None:
        connection.exec_driver_sql(OUTBOX_DELIVERED_INDEX_DDL)


@event.listens_for(library_metadata, "before_drop")
def _drop_functions(_metadata: MetaData, connection: Connection, **_: Any) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(drop_function(EVERYONE_SIGNATURE))


def _table_name(cls: object) -> str:
    """The mapped class's table name, for naming its constraints (declared_attr passes the class)."""
    name = getattr(cls, "__tablename__", None)
    if not isinstance(name, str):
        raise TypeError(f"{getattr(cls, '__name__', cls)} uses BroadcastMixin without a string __tablename__")
    return name


class BroadcastMixin:
    """The lifecycle columns for a host model: ``class Booking(Base, BroadcastMixin)``.

    A host that already maps ``customer_id`` keeps its own column (it must hold a string id). The
    CHECK constraints are named ``ck_<table>_status``, ``ck_<table>_slots_requested`` and
    ``ck_<table>_slots_filled`` so a migration can replace them (adding a state) and Alembic's batch
    mode on SQLite keeps them.
    """

    @declared_attr
    def customer_id(cls) -> Mapped[str]:
        return mapped_column(String(128), nullable=False, index=True)

    @declared_attr
    def status(cls) -> Mapped[str]:
        return mapped_column(String(32), CheckConstraint(STATUS_CHECK, name=f"ck_{_table_name(cls)}_status"),
                             nullable=False, default=BroadcastStatus.CREATED.value)

    state_changed_at: Mapped[datetime] = mapped_column(_Tz, nullable=False, default=utc_now)
    created_at: Mapped[datetime] = mapped_column(_Tz, nullable=False, default=utc_now)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    @declared_attr
    def slots_requested(cls) -> Mapped[int]:
        return mapped_column(Integer, CheckConstraint("slots_requested >= 1",
                                                      name=f"ck_{_table_name(cls)}_slots_requested"),
                             nullable=False)

    @declared_attr
    def slots_filled(cls) -> Mapped[int]:
        return mapped_column(Integer, CheckConstraint("slots_filled >= 0 AND slots_filled <= slots_requested",
                                                      name=f"ck_{_table_name(cls)}_slots_filled"),
                             nullable=False, default=0)

    expires_at: Mapped[datetime | None] = mapped_column(_Tz, nullable=True)


standalone_metadata = MetaData()
"""The default broadcasts table, for hosts without their own models (``SQLAlchemyStore.from_url``)."""


def _broadcast_columns() -> list[Any]:
    return [
        Column("status", String(32), CheckConstraint(STATUS_CHECK, name="ck_bl_broadcasts_status"), nullable=False),
        Column("customer_id", _Key, nullable=False),
        Column("state_changed_at", _Tz, nullable=False),
        Column("created_at", _Tz, nullable=False),
        Column("version", Integer, nullable=False),
        Column("slots_requested", Integer,
               CheckConstraint("slots_requested >= 1", name="ck_bl_broadcasts_slots_requested"), nullable=False),
        Column("slots_filled", Integer, nullable=False),
        Column("expires_at", _Tz),
        CheckConstraint("slots_filled >= 0 AND slots_filled <= slots_requested", name="ck_bl_broadcasts_slots_filled"),
    ]


broadcasts_table = Table(
    "bl_broadcasts",
    standalone_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    *_broadcast_columns(),
    Index("ix_bl_broadcasts_customer", "kind", "customer_id"),
    Index("ix_bl_broadcasts_due", "kind", "expires_at", postgresql_where=text(EXPIRABLE_SQL),
          sqlite_where=text(EXPIRABLE_SQL)),
)
"""All kinds in one table, told apart by ``kind``."""
