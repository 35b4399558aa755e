"""A private PostgreSQL server in a directory, as Balsam's ``balsamactivate`` started one.

    LocalPostgres(path).start()  ->  initdb (first time), pg_ctl start on a free port and a
                                     unix socket inside ``path``; returns the URL
    LocalPostgres(path).stop()   ->  pg_ctl stop

The server binaries (``initdb``, ``pg_ctl``) come from the machine's PostgreSQL.  PostgreSQL
refuses to run as root; run as root, the server runs as ``run_as`` (e.g. ``postgres``), which
then owns the data directory and must be able to enter every directory above it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import BalsamFuturesError

DB_USER = "balsam"
DB_NAME = "balsam"


class PostgresServerError(BalsamFuturesError):
    """The site's PostgreSQL server could not be created, started or stopped."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(name: str) -> str:
    """Locate a PostgreSQL server program on PATH or in Debian's versioned directories."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for bindir in versions:
        if (bindir / name).exists():
            return str(bindir / name)
    raise PostgresServerError(
        f"{name} not found: install the PostgreSQL server (Debian: apt-get install "
        "postgresql) or put its bin directory on PATH")


@dataclass
class LocalPostgres:
    path: Path
    run_as: str | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path).absolute()

    @property
    def datadir(self) -> Path:
        return self.path / "pgdata"

    @property
    def port_file(self) -> Path:
        return self.path / "port"

    def _run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        if self.run_as is not None and os.geteuid() == 0:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, **kw)
        if proc.returncode != 0:
            raise PostgresServerError(
                f"{Path(argv[0]).name if self.run_as is None else argv[3]} failed "
                f"(exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc

    def _prepare_dir(self) -> None:
        if self.run_as is None and os.geteuid() == 0:
            raise PostgresServerError(
                "PostgreSQL refuses to run as root: run this as an ordinary user, or name an "
                "unprivileged user to run the server as (--run-as postgres)")
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.run_as is not None and os.geteuid() == 0:
            user = pwd.getpwnam(self.run_as)
            os.chown(self.path, user.pw_uid, user.pw_gid)
            probe = subprocess.run(["runuser", "-u", self.run_as, "--", "test", "-w",
                                    str(self.path)], capture_output=True)
            if probe.returncode != 0:
                raise PostgresServerError(
                    f"user {self.run_as} cannot enter {self.path}: make every directory above "
                    "it searchable (chmod o+x) or place the server elsewhere")

    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def url(self, dbname: str = DB_NAME) -> str:
        port = self.port_file.read_text().strip()
        return f"postgresql://{DB_USER}@/{dbname}?host={self.path}&port={port}"

    def running(self) -> bool:
        if not self.initialized():
            return False
        ctl = find_binary("pg_ctl")
        argv = [ctl, "-D", str(self.datadir), "status"]
        if self.run_as is not None and os.geteuid() == 0:
            argv = ["runuser", "-u", self.run_as, "--", *argv]
        return subprocess.run(argv, capture_output=True).returncode == 0

    def start(self) -> str:
        """Create the cluster if needed and start it (if not already running); returns its URL."""
        if self.running():
            return self.url()
        self._prepare_dir()
        if not self.initialized():
            self._run([find_binary("initdb"), "-D", str(self.datadir), "-U", DB_USER,
                       "--auth=trust", "-E", "UTF8", "--no-instructions"])
            with open(self.datadir / "postgresql.conf", "a") as conf:
                # Unix socket in the site only; no TCP: only this user can connect.
                conf.write(f"\nlisten_addresses = ''\nunix_socket_directories = '{self.path}'\n"
                           "fsync = on\nmax_connections = 200\n")
        port = _free_port()
        self.port_file.write_text(f"{port}\n")
        self._run([find_binary("pg_ctl"), "-D", str(self.datadir), "-l",
                   str(self.path / "postgres.log"), "-o", f"-p {port}", "-w", "-t", "60",
                   "start"])
        self.create_database(DB_NAME, exist_ok=True)
        return self.url()

    def create_database(self, name: str, exist_ok: bool = False) -> str:
        import psycopg2

        conn = psycopg2.connect(self.url("postgres"))
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
                elif not exist_ok:
                    raise PostgresServerError(f"database {name} exists")
        finally:
            conn.close()
        return self.url(name)

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._run([find_binary("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w",
                       "stop"])

    def restart(self) -> None:
        """Stop and start again on the same port (for outage tests and maintenance)."""
        port = self.port_file.read_text().strip()
        self.stop()
        self._run([find_binary("pg_ctl"), "-D", str(self.datadir), "-l",
                   str(self.path / "postgres.log"), "-o", f"-p {port}", "-w", "start"])
