"""The general write path's statements run with their values in a declared order (stores/_positional.py):
the same rows as with named parameters, and a statement whose parameters disagree with its order never renders."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import Dialect, create_engine

from broadcast_lifecycle.stores._positional import UPDATE, Positional
from broadcast_lifecycle.stores._sql_text import EntitySql
from broadcast_lifecycle.stores.schema import broadcasts_table, recipients_table

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
