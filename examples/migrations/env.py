"""Alembic environment for the example migrations; copy it into your project as a starting point.

Two things make it fit for broadcast_lifecycle:

* ``target_metadata`` lists your models' metadata and the library's (``library_metadata``), so
  ``alembic revision --autogenerate`` sees the library's tables as wanted rather than as strays;
* on SQLite, operations run in batch mode (ALTER TABLE there cannot change a column or a
  constraint) and the whole upgrade is one transaction, as it is on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, Engine, MetaData, engine_from_config, event, pool

from broadcast_lifecycle import library_metadata

config = context.config

# Your models' metadata first, then the library's tables. In your project:
#     from myapp.models import Base
#     target_metadata = [Base.metadata, library_metadata]
# This example has no models of its own; a program driving Alembic (its tests do) may pass them.
host_metadata: list[MetaData] = list(config.attributes.get("host_metadata", ()))
target_metadata = [*host_metadata, library_metadata]


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Leave autogenerate away from the partial indexes the library creates by DDL: the sweeper's
    ``ix_<table>_due``, the one-open-per-customer ``uq_<table>_<kind>_open_customer`` and, on
    PostgreSQL, pruning's ``ix_bl_outbox_delivered``."""
    library_index = name is not None and name.endswith(("_due", "_open_customer", "ix_bl_outbox_delivered"))
    return not (type_ == "index" and reflected and compare_to is None and library_index)


def transactional_sqlite(engine: Engine) -> None:
    """Make a SQLite upgrade one transaction that a failure rolls back whole.

    pysqlite opens transactions only before INSERT/UPDATE/DELETE, so DDL would commit on its own;
    here the driver's handling is turned off and every transaction starts with an explicit BEGIN.
    Foreign-key enforcement stays off (SQLite's default): batch mode drops and recreates tables,
    which with enforcement on would delete or reject the rows that reference them.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys = OFF")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN")


def run_migrations_offline() -> None:
    """Write the SQL to stdout instead of running it (``alembic upgrade head --sql``; not SQLite,
    whose batch mode reads the live table)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a connection to ``sqlalchemy.url``."""
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        transactional_sqlite(engine)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=include_object,
            render_as_batch=sqlite,
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()
            if sqlite and (broken := connection.exec_driver_sql("PRAGMA foreign_key_check").all()):
                raise RuntimeError(f"the migration left rows whose foreign keys point nowhere: {broken}")
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
