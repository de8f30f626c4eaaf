"""SQLite done right: WAL, a busy timeout, and write transactions that take the write lock up front.

A deferred SQLite transaction that reads and then writes cannot upgrade its lock when another
writer is active and fails with "database is locked" however long the busy timeout is. Every
transaction on a configured engine starts with ``BEGIN IMMEDIATE`` instead, so writers queue on the
busy timeout rather than fail.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event

__all__ = ["configure_sqlite"]

_CONFIGURED = "broadcast_lifecycle_sqlite_configured"


def configure_sqlite(engine: Engine, *, synchronous: str = "NORMAL", busy_timeout_ms: int = 30_000,
                     cache_kib: int = 32_768) -> None:
    """Install the connection and transaction hooks on a SQLite ``engine`` (once; later calls do nothing).

    ``synchronous=NORMAL`` in WAL mode survives application crashes but may lose the last commits
    on power loss; pass ``"FULL"`` to fsync every commit. ``cache_kib`` is each connection's page
    cache (SQLite's default, 2 MiB, makes a sweep over 100,000 rows read pages back from the OS).
    """
    if engine.dialect.name != "sqlite" or getattr(engine, _CONFIGURED, False):
        return
    setattr(engine, _CONFIGURED, True)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Python's sqlite3 would otherwise BEGIN (deferred) on its own; we issue BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute(f"PRAGMA synchronous = {synchronous}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA temp_store = MEMORY")  # the sweeper's scratch table never touches disk
        cursor.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
