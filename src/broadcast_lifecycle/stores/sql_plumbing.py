"""How the SQL store talks to its database: cursors in the host's transaction or in one of its own,
SQLAlchemy Core connections, after-commit hand-off, and error wrapping."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ..errors import IdempotencyKeyReused, InvalidArgument, StoreError
from .after_commit import defer_until_commit
from .base import AfterCommit, Committed
from .sql_text import EntitySql, LibrarySql

__all__ = ["LostRace", "SqlPlumbing", "session_of", "utc"]


class LostRace(Exception):
    """Internal: a conditional write matched no row; roll back and report ``None``."""


class SqlPlumbing:
    """Connection handling shared by the SQL store's parts."""

    engine: Engine
    _pg: bool
    _lib: LibrarySql

    def _entity(self, kind: str) -> EntitySql:
        """The statements for ``kind``'s table (the store provides it)."""
        raise NotImplementedError

    def _committed(self, committed: Committed, after_commit: AfterCommit, tx: object) -> Committed:
        if tx is None:
            after_commit(committed)
        else:
            defer_until_commit(session_of(tx), after_commit, committed)
        return committed

    @contextmanager
    def _cursor(self, tx: object, write: bool, single: bool = False) -> Iterator[Any]:
        """A DBAPI cursor: in the host's transaction, or in a transaction of our own for writes.

        ``single`` marks one self-contained write statement: PostgreSQL runs it in autocommit,
        which is atomic and saves the BEGIN and COMMIT round trips.
        """
        with self._wrap_errors("write" if write else "read"):
            if tx is not None:
                yield session_of(tx).connection().connection.dbapi_connection.cursor()  # type: ignore[union-attr]
                return
            fairy = self.engine.raw_connection()
            raw: Any = fairy.driver_connection
            try:
                if self._pg:
                    raw.autocommit = True
                cur = raw.cursor()
                if not write or (single and self._pg):
                    yield cur
                    return
                cur.execute("BEGIN" if self._pg else "BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
                cur.execute("COMMIT")
            finally:
                if self._pg:
                    raw.autocommit = False
                fairy.close()

    @contextmanager
    def _core(self, tx: object) -> Iterator[Any]:
        with self._wrap_errors("query"):
            if tx is not None:
                yield session_of(tx).connection()
            else:
                with self.engine.begin() as conn:
                    yield conn

    @contextmanager
    def _wrap_errors(self, what: str) -> Iterator[None]:
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        try:
            yield
        except (DBAPIError, dbapi_error) as exc:
            cause = exc.orig if isinstance(exc, DBAPIError) else exc
            if "bl_idempotency" in str(cause):
                raise IdempotencyKeyReused("(this command's key)", "is already recorded") from exc
            raise StoreError(f"could not {what}: {cause}") from exc


def session_of(tx: object) -> Session:
    if not isinstance(tx, Session):
        raise InvalidArgument(f"tx must be a sqlalchemy.orm.Session, got {type(tx).__name__}")
    return tx


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
