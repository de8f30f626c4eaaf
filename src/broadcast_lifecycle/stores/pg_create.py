"""PostgreSQL: a creation in one statement (the row, its history row, its events and its key).

Without a host transaction the store sends this single statement in autocommit: one round trip,
atomic on its own, no SAVEPOINT. Every step after the INSERT reads the inserted row (``FROM ins``),
so a taken id (``ON CONFLICT DO NOTHING`` on the key) writes nothing and returns no row.

The broadcast's INSERT is SQLAlchemy Core, so the host model's Python-side column defaults are
filled as for any insert. The library's own rows are textual steps: SQLAlchemy computes the
Python-side defaults of only one INSERT construct per statement (a second one in the same WITH
drops the first one's), and those tables have none. Each statement is built once per table and
set of columns, with bound parameters, so SQLAlchemy compiles it once; the store sends it rendered
(:meth:`PgCreate.rendered`) on its own cursor, as its other one-statement writes, rather than through
Core, whose execution of it (a connection, its autocommit isolation level set and reset, the
statement's cache key) cost as much as the database's work on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import CTE, JSON, Dialect, Select, Table, bindparam, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from .sql.postgresql import create_step

__all__ = ["PgCreate"]

Rows = Sequence[tuple[Table, Mapping[str, Any]]]
"""The library's rows of a creation: each a table and its values (``entity_id`` comes from the insert)."""
Rendered = tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]
"""A statement as SQL text, and what binds its parameters."""


class PgCreate:
    """The one-statement creation on one broadcasts table (see the module's docstring)."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        self._table = table
        self._dialect = dialect
        self._statements: dict[tuple[Any, ...], Select[tuple[Any]]] = {}
        self._rendered: dict[int, Rendered | None] = {}

    def statement(self, values: Mapping[str, Any], rows: Rows) -> tuple[Select[tuple[Any]], dict[str, Any]]:
        """The statement for inserting ``values`` and then ``rows``, and its parameters; it returns
        the new key, or no row when the key was taken."""
        shape = (tuple(values), *((target.name, tuple(row)) for target, row in rows))
        statement = self._statements.get(shape)
        if statement is None:
            statement = self._statements[shape] = self._build(tuple(values), rows)
        params = {f"v_{column}": value for column, value in values.items()}
        for number, (target, row) in enumerate(rows):
            for column, value in row.items():
                if column != "entity_id":
                    json_column = isinstance(target.c[column].type, JSON) and value is not None
                    params[f"w{number}_{column}"] = json.dumps(value) if json_column else value
        return statement, params

    def rendered(self, statement: Select[tuple[Any]]) -> Rendered | None:
        """``statement`` (one of :meth:`statement`'s) as SQL text for the DBAPI cursor and a function that
        binds its parameters as SQLAlchemy would (each typed value through its type's bind processor);
        ``None`` when only SQLAlchemy can run it (a default it computes while executing, an escaped name)."""
        key = id(statement)
        if key not in self._rendered:
            compiled: Any = statement.compile(dialect=self._dialect)
            if compiled.insert_prefetch or compiled.postfetch or compiled.escaped_bind_names:
                self._rendered[key] = None
            else:
                processors = {name: processor for name, bind in compiled.binds.items()
                              if (processor := bind.type.dialect_impl(self._dialect).bind_processor(self._dialect))}

                def bind(params: dict[str, Any]) -> dict[str, Any]:
                    values = compiled.construct_params(params)
                    for name, processor in processors.items():
                        if name in values:  # None too, as SQLAlchemy sends it (JSON null, a TypeDecorator's mapping)
                            values[name] = processor(values[name])
                    return values  # type: ignore[no-any-return]

                self._rendered[key] = (str(compiled), bind)
        return self._rendered[key]

    def _build(self, columns: tuple[str, ...], rows: Rows) -> Select[tuple[Any]]:
        (pk,) = self._table.primary_key.columns
        values = {column: bindparam(f"v_{column}", type_=self._table.c[column].type) for column in columns}
        ins = (pg_insert(self._table).values(values).on_conflict_do_nothing(index_elements=[pk])
               .returning(pk.label("id")).cte("ins"))
        steps = [self._step(target, tuple(row), f"w{number}") for number, (target, row) in enumerate(rows)]
        return select(ins.c.id).add_cte(ins, *steps)  # ins first: the steps read it

    def _step(self, target: Table, columns: tuple[str, ...], name: str) -> CTE:
        """``INSERT INTO target SELECT ... FROM ins``: each value a typed parameter, ``entity_id``
        the inserted key as text."""
        sql = create_step(target, columns, name, self._dialect)
        return text(sql).columns().cte(name)
