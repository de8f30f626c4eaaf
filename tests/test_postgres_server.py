"""Tests for the throwaway PostgreSQL harness in ``tests/postgres_server.py``."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from postgres_server import PostgresServer, find_binaries

pytestmark = pytest.mark.skipif(
    find_binaries() is None,
    reason="PostgreSQL server binaries not found: `apt-get install postgresql` "
    "(or set BROADCAST_LIFECYCLE_PG_BIN to the directory holding initdb)",
)


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    """One server shared by the tests in this module."""
    with PostgresServer() as srv:
        yield srv


def test_socket_only_and_fast_settings(server: PostgresServer) -> None:
    """The server answers on its socket, with the test-friendly settings."""
    assert (server.socket_dir / f".s.PGSQL.{server.port}").is_socket()
    with psycopg.connect(server.dsn()) as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            (["listen_addresses", "fsync", "max_connections", "server_encoding"],),
        ).fetchall()
    assert dict(rows) == {
        "listen_addresses": "",
        "fsync": "off",
        "max_connections": "200",
        "server_encoding": "UTF8",
    }


def test_create_database_and_query_via_sqlalchemy(server: PostgresServer) -> None:
    """create_database() returns a working SQLAlchemy URL for a fresh database."""
    url = server.create_database("harness_check")
    assert url.startswith("postgresql+psycopg://postgres@/harness_check?host=/")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (id int PRIMARY KEY, v text)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1, 'é')"))
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == (
                "harness_check"
            )
            assert conn.execute(sa.text("SELECT v FROM t WHERE id = 1")).scalar() == "é"
    finally:
        engine.dispose()


def test_two_concurrent_connections_see_each_other(server: PostgresServer) -> None:
    """A second connection is served while the first holds a lock and a transaction."""
    server.create_database("harness_concurrency")
    dsn = server.dsn("harness_concurrency")
    with psycopg.connect(dsn, autocommit=True) as a, psycopg.connect(dsn) as b:
        a.execute("CREATE TABLE c (n int)")
        assert a.info.backend_pid != b.info.backend_pid
        with b.transaction():
            b.execute("LOCK TABLE c IN ACCESS EXCLUSIVE MODE")
            b.execute("INSERT INTO c VALUES (1)")
            blocked = threading.Event()
            done = threading.Event()

            def reader() -> None:
                with psycopg.connect(dsn) as r:
                    blocked.set()
                    r.execute("SELECT count(*) FROM c")  # waits for b's lock
                    done.set()

            t = threading.Thread(target=reader)
            t.start()
            assert blocked.wait(10)
            assert not done.wait(0.3), "reader should wait for the table lock"
        t.join(10)
        assert done.is_set()
        assert a.execute("SELECT count(*) FROM c").fetchone() == (1,)


def test_stop_removes_everything() -> None:
    """Leaving the context stops the server and deletes its temporary directory."""
    with PostgresServer() as srv:
        base = srv.socket_dir
        pid = int((base / "data" / "postmaster.pid").read_text().split()[0])
    assert not base.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
