"""Joining the host's transaction: a write of the store's given ``tx=<Session>`` runs on that
session's connection, in a savepoint, and its events leave when the session commits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from ..errors import InvalidArgument
from ._sqlite_setup import in_transaction

__all__ = ["begin_in_host", "host_savepoint", "joined_connection", "session_of"]


def begin_in_host(conn: Connection) -> None:
    """Make sure the host's connection is inside a transaction before a savepoint: Python's sqlite3
    begins one only before a data change, and a SAVEPOINT outside a transaction would start one of
    its own, whose release would commit the host's work behind its back."""
    dbapi: Any = conn.connection.dbapi_connection  # as adapted: an aiosqlite one's calls await on the loop
    if conn.dialect.name == "sqlite" and not in_transaction(dbapi):
        dbapi.execute("BEGIN").close()


@contextmanager
def host_savepoint(conn: Connection) -> Iterator[None]:
    """A write of ours in the host's transaction runs in a savepoint: when it fails (a reused key, a
    refused insert) nothing of it stays in the host's transaction, which stays usable."""
    begin_in_host(conn)
    with conn.begin_nested():
        yield


def joined_connection(tx: object) -> Connection:
    """The connection of the host's session ``tx``, after flushing its pending changes when the session
    autoflushes (as its own queries would), so the library reads what the host has written."""
    session = session_of(tx)
    if session.autoflush and (session.new or session.dirty or session.deleted):
        session.flush()
    return session.connection()


def session_of(tx: object) -> Session:
    """``tx`` as the host's ``Session``; ``InvalidArgument`` for anything else."""
    if not isinstance(tx, Session):
        raise InvalidArgument(f"tx must be a sqlalchemy.orm.Session, got {type(tx).__name__}")
    return tx
