"""The SQL store's errors, one part of it: the library's error for what the driver raised, read by
SQLSTATE and constraint name (see :mod:`._sql_errors`), the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from ..errors import BroadcastError, IdempotencyKeyReused, InvalidArgument, StoreError
from ..kinds import KindConfig
from ._sql_errors import UNDEFINED_TABLE, Violation, host_input_refused, primary_key_name, violation
from ._sql_tables import StoreTables
from .schema import idempotency_table, library_metadata, open_customer_index_name

__all__ = ["ErrorTranslator"]


class ErrorTranslator:
    """Turns database errors into the library's: :class:`StoreError` naming the constraint that refused
    a write, :class:`IdempotencyKeyReused`, or :class:`InvalidArgument` for a value of the caller's."""

    def __init__(self, dialect: Dialect, tables: StoreTables) -> None:
        self._driver_error: type[BaseException] = dialect.loaded_dbapi.Error
        self._tables = tables

    @contextmanager
    def wrap(self, what: str) -> Iterator[None]:
        """Re-raise a database error of the block as the library's (``what``: "write", "query"...)."""
        try:
            yield
        except Exception as exc:
            wrapped = self.wrapped(exc, what)
            if wrapped is None:
                raise
            raise wrapped from exc

    def wrapped(self, exc: BaseException, what: str) -> BroadcastError | None:
        """The library's error for a database error (``None`` for anything else)."""
        if isinstance(exc, DBAPIError):
            return self.database_error(exc.orig, what)
        if isinstance(exc, self._driver_error):
            return self.database_error(exc, what)
        return None

    def database_error(self, cause: BaseException | None, what: str, kind: str | None = None) -> BroadcastError:
        """The library's error for the driver's error ``cause``: a second use of an idempotency key
        (the key's primary key refused it), or a ``StoreError`` naming the constraint that refused
        the write, if one did (``kind``: the kind being written, see :func:`._sql_errors.violation`)."""
        broken = self.violation(cause, kind)
        sqlstate = getattr(cause, "sqlstate", None)
        if broken is None and what != "query" and isinstance(sqlstate, str) and sqlstate.startswith("22"):
            # A data exception (a value the column's type refuses: text in an integer, too long for
            # a VARCHAR). The library checks its own values first, so this is the caller's: a host
            # column's value given in columns= (or a host row at adopt), or an id too long for the key.
            first_line = str(cause).strip().splitlines()[0]
            return InvalidArgument(f"could not {what}: the database refused a value ({first_line}; "
                                   f"SQLSTATE {sqlstate}): give the columns= values and the id in the types and "
                                   "lengths of the table's columns")
        if broken is None:
            if sqlstate == UNDEFINED_TABLE or "no such table" in str(cause):
                return StoreError(f"could not {what}: {cause}; the library's tables are missing in this database: "
                                  "run store.create_all() once (or your migrations, see docs/persistence.md)")
            return StoreError(f"could not {what}: {cause}")
        if broken.rule == "unique" and broken.constraint == primary_key_name(idempotency_table):
            return IdempotencyKeyReused("(this command's key)", "is already recorded")
        if (refused := host_input_refused(broken, self._tables.by_name())) is not None:
            return refused
        return StoreError(f"could not {what}: {broken.describe()} refused it ({cause})", constraint=broken.constraint)

    def breaks_open_policy(self, exc: BaseException, kind: KindConfig) -> bool:
        """Whether ``exc`` (a driver error, or the library's error wrapping one) is ``kind``'s
        one-open-broadcast-per-customer index refusing a write."""
        if not kind.one_open_per_customer:
            return False
        cause = exc.__cause__ if isinstance(exc, BroadcastError) else exc
        cause = getattr(cause, "orig", cause)  # a Core error wraps the driver's
        broken = self.violation(cause, kind.name)
        index = open_customer_index_name(self._tables.entity(kind.name).table.name, kind.name)
        return broken is not None and broken.rule == "unique" and broken.constraint in (index, index[:63])

    def violation(self, cause: BaseException | None, kind: str | None) -> Violation | None:
        """The constraint a driver error reports as broken (see :func:`._sql_errors.violation`)."""
        if cause is None:
            return None
        return violation(cause, {**library_metadata.tables, **self._tables.by_name()}, kind)
