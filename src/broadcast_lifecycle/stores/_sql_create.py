"""The INSERT of a new broadcast row as a pre-rendered statement for the DBAPI cursor, with the host
model's Python-side column defaults filled in as SQLAlchemy would fill them.

SQLite writes a creation in one ``BEGIN IMMEDIATE`` transaction on the store's own connection:
this INSERT, then the history, outbox and key rows (a statement that breaks a constraint fails
alone in SQLite, so no SAVEPOINT is needed). A model with a default only SQLAlchemy can compute (a
SQL expression, a sequence) is inserted through SQLAlchemy Core instead (:attr:`RowInsert.renders`).
PostgreSQL's one statement fills the Python-side defaults here too (:func:`with_python_defaults`):
SQLAlchemy gives no row to a context-sensitive default of an INSERT inside a WITH.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Dialect, Table
from sqlalchemy.dialects import sqlite

from .sql.common import insert_broadcast

__all__ = ["RowInsert", "with_python_defaults"]


class _DefaultContext:
    """What a context-sensitive default function reads (SQLAlchemy's documented part of its
    execution context): the values of the row being inserted."""

    __slots__ = ("current_column", "current_parameters")

    def __init__(self, parameters: dict[str, Any]) -> None:
        self.current_parameters = parameters
        self.current_column: Column[Any] | None = None

    def get_current_parameters(self, isolate_multiinsert_groups: bool = True) -> dict[str, Any]:
        del isolate_multiinsert_groups  # one row per statement here
        return self.current_parameters


def with_python_defaults(table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` plus the value of every other column of ``table`` with a Python-side default (a
    value or a function, given the row so far as SQLAlchemy gives it). SQL-expression and sequence
    defaults are left to the statement."""
    row = dict(values)
    context = _DefaultContext(row)
    for column in table.c:
        default: Any = column.default
        if default is not None and column.name not in row and (default.is_scalar or default.is_callable):
            context.current_column = column
            row[column.name] = default.arg(context) if default.is_callable else default.arg
    return row


class RowInsert:
    """``INSERT INTO <table> ... ON CONFLICT (<key>) DO NOTHING RETURNING <key>`` for one broadcasts
    table, rendered once per set of columns given."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        (self._pk,) = table.primary_key.columns
        self._table = table
        self._dialect = dialect
        self.renders = all(c.default.is_scalar or c.default.is_callable for c in table.c if c.default is not None)
        """Whether every Python-side default is a value or a function (else use SQLAlchemy Core)."""
        self._defaults = any(c.default is not None for c in table.c)
        self._statements: dict[tuple[str, ...], tuple[str, list[tuple[str, Any]]]] = {}

    def statement(self, values: Mapping[str, Any]) -> tuple[str, list[Any], Any]:
        """The statement and its parameters for a row of ``values`` (plus the defaults of the other
        columns), and the row's key when known before the insert (given, or a Python-side default)."""
        row = with_python_defaults(self._table, values) if self._defaults else dict(values)
        names = tuple(row)
        rendered = self._statements.get(names)
        if rendered is None:
            rendered = self._statements[names] = self._render(names)
        sql, binds = rendered
        # Every value goes through its type's processor, None included, as SQLAlchemy sends it (a JSON column
        # stores None as JSON null, a TypeDecorator may map it).
        params = [bind(row[name]) if bind is not None else row[name] for name, bind in binds]
        return sql, params, row.get(self._pk.name)

    def _render(self, names: tuple[str, ...]) -> tuple[str, list[tuple[str, Any]]]:
        sql = insert_broadcast(self._table, names, self._dialect)
        binds = [(name, _bind_processor(self._table.c[name], self._dialect)) for name in names]
        return sql, binds


def _bind_processor(column: Column[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """The type's bind processor of ``column``; for SQLite's default DATETIME text, one that writes a
    datetime with ``datetime.isoformat`` (the same text, its wall time, a third of the cost)."""
    impl = column.type.dialect_impl(dialect)
    generic = impl.bind_processor(dialect)
    if (generic is None or not isinstance(impl, sqlite.DATETIME) or getattr(impl, "_reg", None)
            or impl._storage_format != sqlite.DATETIME._storage_format):
        return generic

    def bind(value: Any) -> Any:
        return value.isoformat(" ", "microseconds")[:26] if type(value) is datetime else generic(value)

    return bind
