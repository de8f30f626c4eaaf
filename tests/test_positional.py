"""The general write path's statements run with their values in a declared order (stores/_positional.py):
the same rows as with named parameters, and a statement whose parameters disagree with its order never renders."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Dialect, create_engine

from broadcast_lifecycle import BroadcastLifecycle
from broadcast_lifecycle.stores._positional import UPDATE, Positional
from broadcast_lifecycle.stores._sql_text import EntitySql
from broadcast_lifecycle.stores.schema import broadcasts_table, recipients_table
from broadcast_lifecycle.stores.sqlalchemy import SQLAlchemyStore

_SQLITE = create_engine("sqlite://").dialect
_PG = create_engine("postgresql+psycopg://").dialect


def test_sqlite_numbers_each_parameter_by_its_place_in_the_order() -> None:
    """On SQLite each ``:name`` becomes ``?N`` for its place, repeats and unused names included, and a tuple
    in that order writes what the dict of names writes."""
    statement = "INSERT INTO t (a, b, c) VALUES (:first, :third, :first || :third)"
    positional = Positional(statement, ("first", "unused", "third"), _SQLITE)
    assert positional.text == "INSERT INTO t (a, b, c) VALUES (?1, ?3, ?1 || ?3)"
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a, b, c)")
    conn.execute(positional.text, positional.params(("x", "ignored", "z")))
    conn.execute(statement, {"first": "x", "third": "z"})
    assert conn.execute("SELECT a, b, c FROM t").fetchall() == [("x", "z", "xz")] * 2


def test_postgresql_keeps_the_named_statement_and_gets_the_names() -> None:
    """On PostgreSQL the rendered ``%(name)s`` statement stays as it is and takes the values by name."""
    positional = Positional("UPDATE t SET a = %(a)s WHERE id = %(id)s", ("a", "id"), _PG)
    assert positional.text == "UPDATE t SET a = %(a)s WHERE id = %(id)s"
    assert positional.params(("x", 7)) == {"a": "x", "id": 7}


@pytest.mark.parametrize("dialect", [_SQLITE, _PG], ids=["sqlite", "postgresql"])
def test_a_parameter_missing_from_the_order_refuses_to_render(dialect: Dialect) -> None:
    """A statement parameter the order does not name is an error when the statement is prepared, not a wrong row."""
    statement = EntitySql(broadcasts_table, dialect, kind_column=True, recipients=recipients_table).update
    with pytest.raises(ValueError, match="parameters version are not in the declared order"):
        Positional(statement, UPDATE[:-1], dialect)


def test_sqlite_refuses_an_order_whose_last_name_the_statement_does_not_use() -> None:
    """sqlite3 counts parameters up to the highest number used: a trailing unused name would fail every call."""
    with pytest.raises(ValueError, match="the last declared parameter, extra, is not in the statement"):
        Positional("SELECT :a", ("a", "extra"), _SQLITE)


def test_the_update_without_a_kind_column_binds_the_same_order() -> None:
    """A host table has no kind column: its update skips ``kind`` yet takes the values in the same order."""
    host = EntitySql(broadcasts_table, _SQLITE, kind_column=False, recipients=recipients_table)
    positional = Positional(host.update, UPDATE, _SQLITE)
    assert "kind" not in positional.text and positional.text.endswith("WHERE id = ?6 AND version = ?8")


def test_a_command_by_no_transporter_reads_the_row_without_a_holding(tmp_path: Path) -> None:
    """The read for a command by no transporter is the read with a transporter minus the holding: the same
    columns, NULL for the holding, one row for the broadcast."""
    sql = EntitySql(broadcasts_table, _SQLITE, kind_column=True, recipients=recipients_table)
    store = SQLAlchemyStore.from_url(f"sqlite:///{tmp_path / 'load.db'}")
    store.create_all()
    bookings = BroadcastLifecycle(store).kind("booking")
    entity_id = bookings.create("c1", slots=2).id
    bookings.start_broadcast(entity_id, ["t1"])
    with store.engine.connect() as conn:
        by_id = {"id": entity_id, "kind": "booking", "key": str(entity_id)}
        with_holding = conn.exec_driver_sql(sql.load, {**by_id, "transporter": "t1"}).one()
        without = conn.exec_driver_sql(sql.load_row, by_id).one()
    store.close()
    assert with_holding[-1] == 0 and without[-1] is None and without[:-1] == with_holding[:-1]
