"""Database errors read by what they are, never by searching their text.

PostgreSQL says which rule a write broke by SQLSTATE and names the constraint (``diag``). SQLite
has extended result codes but names no UNIQUE index in its errors: its message reports the table
and the columns (``UNIQUE constraint failed: bookings.customer_id``). This module parses that
message exactly (the whole of it, in SQLite's own format) and maps the columns to the name the
library gives that index or key, in one place (:func:`library_constraint`), so the store compares
names on both databases.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import CheckConstraint, Index, Table, UniqueConstraint

from ..errors import InvalidArgument
from .schema import open_customer_index_name

__all__ = ["LIFECYCLE_COLUMNS", "UNDEFINED_FUNCTION", "UNDEFINED_TABLE", "Violation", "host_input_refused",
           "library_constraint", "primary_key_name", "sqlstate", "violation"]

LIFECYCLE_COLUMNS = frozenset({"status", "customer_id", "state_changed_at", "created_at", "version",
                               "slots_requested", "slots_filled", "expires_at"})
"""The columns the library writes on a broadcasts table (the mixin's); the others are the host's."""

UNDEFINED_FUNCTION = "42883"
"""PostgreSQL's SQLSTATE for a call of a function that does not exist (the library's, dropped)."""

UNDEFINED_TABLE = "42P01"
"""PostgreSQL's SQLSTATE for a table that does not exist (the library's, not created yet)."""

_PG_RULES = {"23505": "unique", "23503": "foreign key", "23502": "not null", "23514": "check"}
"""SQLSTATEs of the integrity violations (class 23), by rule."""

_SQLITE_RULES = {"UNIQUE": "unique", "FOREIGN KEY": "foreign key", "NOT NULL": "not null", "CHECK": "check"}
_SQLITE_MESSAGE = re.compile(r"(UNIQUE|FOREIGN KEY|NOT NULL|CHECK) constraint failed(?:: (.+))?", re.DOTALL)
_SQLITE_INDEX = re.compile(r"index '(.+)'")
_SQLITE_COLUMN = re.compile(r"([^.]+)\.(.+)")


@dataclass(frozen=True, slots=True)
class Violation:
    """A constraint the database says a write broke."""

    rule: str
    """``unique``, ``foreign key``, ``not null`` or ``check``."""
    constraint: str | None
    """The constraint's name (on SQLite, the library's name for the reported columns, if it has one)."""
    table: str | None = None
    columns: tuple[str, ...] = ()

    def describe(self) -> str:
        """E.g. ``unique constraint uq_bl_history_entity_version on bl_transition_history(kind, entity_id,
        version)``, or ``not null constraint on bookings(pickup)``."""
        name = f" {self.constraint}" if self.constraint else ""
        where = f" on {self.table}" if self.table else ""
        cols = f"({', '.join(self.columns)})" if self.columns and self.table else ""
        return f"{self.rule} constraint{name}{where}{cols}"


def sqlstate(exc: BaseException | None) -> str | None:
    """The SQLSTATE of a PostgreSQL driver error (psycopg 3 ``sqlstate``, psycopg2 ``pgcode``)."""
    return getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)


def violation(exc: BaseException, tables: Mapping[str, Table], kind: str | None = None) -> Violation | None:
    """The constraint a driver error ``exc`` reports as broken, ``None`` if it is no integrity error.

    ``tables`` are the tables the statement could have written, by name (SQLite reports names;
    their ``Table`` says which index those columns are); ``kind`` is the kind being written, for the
    per-kind one-open-per-customer indexes.
    """
    state = sqlstate(exc)
    if state is not None:
        rule = _PG_RULES.get(state)
        if rule is None:
            return None
        diag = getattr(exc, "diag", None)
        column = getattr(diag, "column_name", None)
        return Violation(rule, getattr(diag, "constraint_name", None), getattr(diag, "table_name", None),
                         (column,) if column else ())
    match = _SQLITE_MESSAGE.fullmatch(str(exc)) if type(exc).__name__ == "IntegrityError" else None
    if match is None:
        return None
    rule, detail = _SQLITE_RULES[match[1]], match[2] or ""
    if rule == "check":
        return Violation(rule, detail or None)  # SQLite gives a named CHECK's name, else its expression
    if index := _SQLITE_INDEX.fullmatch(detail):
        return Violation(rule, index[1])
    pairs = [_SQLITE_COLUMN.fullmatch(part) for part in detail.split(", ")] if detail else []
    if not pairs or any(pair is None for pair in pairs) or len({pair[1] for pair in pairs if pair}) != 1:
        return Violation(rule, None)  # a foreign key (SQLite names none), or a shape this parser does not know
    table_name = pairs[0][1] if pairs[0] else None
    columns = tuple(pair[2] for pair in pairs if pair)
    table = tables.get(table_name or "")
    name = library_constraint(table, columns, kind) if rule == "unique" and table is not None else None
    return Violation(rule, name, table_name, columns)


def host_input_refused(broken: Violation, tables: Mapping[str, Table]) -> InvalidArgument | None:
    """The caller's error when ``broken`` is a NOT NULL or CHECK constraint of a host column of one of
    the broadcasts ``tables`` (the values given in ``columns=``, or the host's own row at ``adopt``);
    ``None`` for anything else (the library's own columns and checks, other tables, other rules).

    By the constraint the database names: the table and column of a NOT NULL; a CHECK by its name
    (SQLite gives an unnamed one's expression instead; PostgreSQL names an unnamed column CHECK
    ``<table>_<column>_check``), matched against the table's declared checks.
    """
    reported = tables.get(broken.table or "")
    if broken.rule == "not null" and reported is not None and len(broken.columns) == 1:
        table, (column,) = reported, broken.columns
        if column not in _host_columns(table):
            return None
        return InvalidArgument(f"{column} needs a value (not None): {table.name}.{column} "
                               f"({table.c[column].type}) is NOT NULL and has no default; give it in "
                               "create(columns=...), or set it on the row you adopt")
    if broken.rule != "check" or broken.constraint is None:
        return None
    for table in ([reported] if reported is not None else tables.values()):
        own = _host_columns(table)
        for declared_on, check in _checks(table):
            expression = str(check.sqltext)
            if broken.constraint not in (check.name, expression, f"{table.name}_{declared_on}_check"):
                continue
            named = sorted(c for c in own if re.search(rf"\b{re.escape(c)}\b", expression))
            if not named:
                return None  # the library's own check
            name = f" {check.name}" if check.name else ""
            return InvalidArgument(f"the value of {', '.join(named)} is refused by the CHECK{name} of {table.name} "
                                   f"({expression}): give a value that satisfies it (in create(columns=...), or "
                                   "on the row you adopt)")
        if broken.table in tables and broken.constraint not in _library_checks(table):
            return InvalidArgument(f"a value of a host column is refused by the CHECK constraint "
                                   f"{broken.constraint} of {table.name}: give values that satisfy it")
    return None


def _checks(table: Table) -> list[tuple[str | None, CheckConstraint]]:
    """``table``'s CHECK constraints, each with the column it was declared on (``None``: on the table)."""
    found: list[tuple[str | None, CheckConstraint]] = [
        (None, c) for c in table.constraints if isinstance(c, CheckConstraint)]
    found += [(column.name, c) for column in table.columns for c in column.constraints
              if isinstance(c, CheckConstraint)]
    return found


def _host_columns(table: Table) -> set[str]:
    """The columns of a broadcasts table the host writes: all but the key, ``kind`` and the library's."""
    return {c.name for c in table.columns if not c.primary_key} - LIFECYCLE_COLUMNS - {"kind"}


def _library_checks(table: Table) -> set[str]:
    """The names of the CHECK constraints the library declares on a broadcasts table (see BroadcastMixin)."""
    return {f"ck_{table.name}_{column}" for column in ("status", "slots_requested", "slots_filled")}


def primary_key_name(table: Table) -> str:
    """The name of ``table``'s primary key: its declared name, else the one PostgreSQL gives
    (``<table>_pkey``)."""
    name = table.primary_key.name
    return name if isinstance(name, str) and name else f"{table.name}_pkey"


def library_constraint(table: Table, columns: tuple[str, ...], kind: str | None) -> str | None:
    """The name of the unique key or index of ``table`` over exactly ``columns`` (what SQLite reports).

    The primary key, a unique index or constraint declared on the table (``None`` if it has no
    name), or (``customer_id`` alone, while writing a ``kind`` with the one-open-per-customer
    policy) that kind's index, which the library creates by DDL. ``None`` for anything else.
    """
    if columns == tuple(column.name for column in table.primary_key.columns):
        return primary_key_name(table)
    declared: list[Index | UniqueConstraint] = [
        *(index for index in table.indexes if index.unique),
        *(c for c in table.constraints if isinstance(c, UniqueConstraint))]
    for unique in declared:
        if tuple(column.name for column in unique.columns) == columns:
            return unique.name if isinstance(unique.name, str) else None
    if columns == ("customer_id",) and kind is not None:
        return open_customer_index_name(table.name, kind)
    return None
