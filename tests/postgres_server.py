"""Throwaway PostgreSQL server for the test suite.

Runs a private cluster in a temporary directory, reachable only through a
Unix socket in that directory, tuned for speed rather than durability.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from typing_extensions import Self

ENV_BIN = "BROADCAST_LIFECYCLE_PG_BIN"
OS_USER = "postgres"
SETTINGS = {
    "listen_addresses": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
}


class PostgresServerError(RuntimeError):
    """The server could not be initialised, started or used."""


def _has_initdb(path: Path) -> bool:
    return (path / "initdb").is_file()


def find_binaries() -> Path | None:
    """Return the directory holding ``initdb``/``postgres``/``pg_ctl``, or None.

    Order: ``$BROADCAST_LIFECYCLE_PG_BIN``, ``pg_config --bindir``, the newest
    ``/usr/lib/postgresql/*/bin`` (Debian layout), then ``initdb`` on ``PATH``.
    """
    env = os.environ.get(ENV_BIN)
    if env:
        if not _has_initdb(Path(env)):
            raise PostgresServerError(f"${ENV_BIN}={env} has no initdb in it")
        return Path(env)
    pg_config = shutil.which("pg_config")
    if pg_config:
        res = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                             check=False)
        if res.returncode == 0 and _has_initdb(Path(res.stdout.strip())):
            return Path(res.stdout.strip())
    debian = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _has_initdb(p)]
    if debian:  # newest major version first, numerically ("9.6" < "15")
        return max(debian, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)])
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


class PostgresServer:
    """A private PostgreSQL cluster; use as a context manager (or start/stop).

    When running as root, the server runs as the ``postgres`` OS user.
    """

    def __init__(self, bindir: Path | None = None, port: int = 5432,
                 start_timeout: float = 30.0) -> None:
        """Configure (but do not start) a server; ``bindir`` defaults to find_binaries()."""
        found = bindir or find_binaries()
        if found is None:
            raise PostgresServerError("PostgreSQL binaries not found; apt-get install postgresql")
        self.bindir: Path = found
        self.port = port
        self.start_timeout = start_timeout
        self.base: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._as_user: list[str] = []

    @property
    def socket_dir(self) -> Path:
        """Directory containing the server's Unix socket (also the temp root)."""
        if self.base is None:
            raise PostgresServerError("server not started")
        return self.base

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*self._as_user, str(self.bindir / args[0]), *args[1:]]
        res = subprocess.run(cmd, cwd=self.base, capture_output=True, text=True, check=False)
        if check and res.returncode != 0:
            raise PostgresServerError(
                f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}{res.stderr}"
                f"\n{self.log_tail()}"
            )
        return res

    def _prepare_user(self, base: Path) -> None:
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam(OS_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", OS_USER], check=True)
            pw = pwd.getpwnam(OS_USER)
        os.chown(base, pw.pw_uid, pw.pw_gid)
        if shutil.which("runuser"):
            self._as_user = ["runuser", "-u", OS_USER, "--"]
        else:
            self._as_user = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}",
                             "--init-groups", "--"]

    def start(self) -> Self:
        """initdb a fresh cluster, start it and wait until it accepts connections."""
        if self.base is not None:
            return self
        self.base = base = Path(tempfile.mkdtemp(prefix="bl-pg-"))
        atexit.register(self.stop)
        try:
            base.chmod(0o755)  # the socket lives here: keep it traversable
            self._prepare_user(base)
            self._run("initdb", "-D", str(base / "data"), "-U", OS_USER, "--auth=trust",
                      "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
            opts = [f"-c{k}={v}" for k, v in SETTINGS.items()]
            cmd = [*self._as_user, str(self.bindir / "postgres"), "-D", str(base / "data"),
                   "-p", str(self.port), "-k", str(base), *opts]
            with open(base / "server.log", "ab") as log:
                self._proc = subprocess.Popen(
                    cmd, cwd=base, stdout=log, stderr=log, start_new_session=True)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PostgresServerError(
                    f"postgres exited with {self._proc.returncode}\n{self.log_tail()}")
            res = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", str(self.socket_dir),
                 "-p", str(self.port), "-U", OS_USER, "-d", "postgres", "-t", "1"],
                capture_output=True,
                check=False,
            )
            if res.returncode == 0:
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=0.05)  # paces the poll, and ends it at once if postgres dies
        raise PostgresServerError(
            f"postgres not ready after {self.start_timeout}s\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """Return the last ``lines`` lines of the server log (for error messages)."""
        log = self.base / "server.log" if self.base else None
        if log is None or not log.exists():
            return "(no server log)"
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        return "--- server log tail ---\n" + "\n".join(tail)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete the temp dir; idempotent."""
        atexit.unregister(self.stop)
        base, proc = self.base, self._proc
        if base is None:
            return
        try:
            if proc is not None:
                if proc.poll() is None:
                    self._run("pg_ctl", "stop", "-D", str(base / "data"), "-m", "fast",
                              "-w", "-t", "30", check=False)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:  # kill runuser + postgres + backends
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        finally:
            self._proc = None
            self.base = None
            shutil.rmtree(base, ignore_errors=True)

    def __enter__(self) -> Self:
        """Start the server."""
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None,
                 exc: BaseException | None, tb: TracebackType | None) -> None:
        """Stop the server and remove its files, whatever happened."""
        self.stop()

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string for ``psycopg.connect``."""
        return make_conninfo(host=str(self.socket_dir), port=self.port, user=OS_USER,
                             dbname=dbname)

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) reaching ``dbname`` over the socket."""
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql+psycopg://{OS_USER}@/{quote(dbname)}?host={host}&port={self.port}"

    def create_database(self, name: str) -> str:
        """Create database ``name`` (from template1) and return its SQLAlchemy URL."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)
