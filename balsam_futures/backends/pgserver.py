"""A private PostgreSQL server in a directory, as Balsam's ``balsamactivate`` started one.

    LocalPostgres(path).start()  ->  initdb (first time), pg_ctl start on the cluster's port
                                     and a unix socket inside ``path``; returns the URL
    LocalPostgres(path).stop()   ->  pg_ctl stop

The first start picks a free port and records it in ``path/port``; every later start uses
that port again, so the URL handed to launchers and executors stays valid across a stop and a
start (they reconnect to it instead of retrying a port nobody serves).

``start(listen=Listen.parse("HOST[:PORT]"))`` listens on TCP as well (compute nodes reach the
server there): password authentication by scram-sha-256 only, from the network ``allow`` only
(pg_hba.conf is written by us on every start and never says ``trust`` for TCP), with a
generated password kept in the site's pgpass file (0600), which libpq reads through
``PGPASSFILE`` (``balsam-futures env`` sets it): no password on a command line or in a URL.
The setting is recorded in ``path/listen`` and kept by later starts.

The server binaries (``initdb``, ``pg_ctl``) come from the machine's PostgreSQL.  PostgreSQL
refuses to run as root; run as root, the server runs as ``run_as`` (e.g. ``postgres``), which
then owns the data directory and must be able to enter every directory above it.  Later
commands run as root find that user as the data directory's owner, so ``stop`` and
``running`` work without ``run_as``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import PostgresServerError
from ..sitedir import private_dir

DB_USER = "balsam"
DB_NAME = "balsam"

#: The site's files for TCP access: the recorded listen setting and the pgpass file.
LISTEN_FILE, PGPASS_FILE = "listen", "pgpass"
#: Addresses that mean "every interface": the clients they let in must be named (--allow).
_WILDCARDS = ("*", "0.0.0.0", "::")

#: ``pg_ctl status`` exit status when no server runs on the data directory (any other
#: failure, e.g. pg_ctl refusing root or unable to read the directory, is not an answer).
PG_CTL_NOT_RUNNING = 3


def _port_taken(log: str) -> bool:
    """Whether PostgreSQL's log says that its port is taken: a TCP address already bound, or
    the unix socket's lock file (``.s.PGSQL.<port>.lock``) held by another live server."""
    return any("Address already in use" in line
               or (".s.PGSQL." in line and "already exists" in line)
               for line in log.splitlines())


def _said(proc: subprocess.CompletedProcess) -> str:
    """What a failed command wrote, on one line (the CLI prints errors as one line)."""
    return " ".join((proc.stderr or proc.stdout).split())[-2000:]


def _evidence(log: str) -> str:
    """The lines of a server log that say why it stopped, on one line (for an error)."""
    lines = [line.strip() for line in log.splitlines()
             if any(word in line for word in ("FATAL", "ERROR", "PANIC", "HINT", "in use"))]
    return " | ".join(lines)[-1500:] or "(nothing logged)"


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


@dataclass(frozen=True)
class Listen:
    """Where the server listens on TCP besides its unix socket, and who may connect there."""

    host: str  # an address of this machine, a host name, or * / 0.0.0.0 / :: (all)
    port: int | None = None  # None: the cluster's recorded port
    allow: str = ""  # the clients' network (CIDR) pg_hba.conf lets in

    @classmethod
    def parse(cls, text: str, allow: str | None = None) -> Listen:
        """``HOST[:PORT]`` (``[IPV6]:PORT``) and the clients' network; ValueError naming the
        option for anything else.  ``allow`` defaults to HOST's own address; with a wildcard
        HOST it must be given."""
        host, port = text.strip(), None
        if host.startswith("["):
            inner, _, rest = host[1:].partition("]")
            host, port = inner, rest[1:] if rest.startswith(":") else (rest or None)
        elif host.count(":") == 1:
            host, port = host.split(":")
        # A host name or an address only: it goes into the server's listen_addresses.
        if not re.fullmatch(r"[A-Za-z0-9._:*-]+", host):
            raise ValueError(f"--listen must be HOST[:PORT], not {text!r}")
        if port is not None:
            if not str(port).isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"--listen: the port must be a number 1-65535, not {port!r}")
            port = int(port)
        if allow is None:
            if host in _WILDCARDS:
                raise ValueError(
                    f"--listen {text} listens on every interface: name the network allowed "
                    "to connect with --allow NETWORK (e.g. --allow 10.0.0.0/16)")
            try:
                address = socket.getaddrinfo(host, None)[0][4][0]
            except OSError as exc:
                raise ValueError(f"--listen: cannot resolve host {host!r}: {exc}") from None
            allow = address
        try:
            network = ipaddress.ip_network(allow, strict=False)
        except ValueError:
            raise ValueError(f"--allow must be an address or a network (CIDR, e.g. "
                             f"10.0.0.0/16), not {allow!r}") from None
        return cls(host, port, str(network))

    def url_host(self) -> str:
        """The host a client names to reach the server (a wildcard: this machine's name)."""
        host = socket.getfqdn() if self.host in _WILDCARDS else self.host
        return f"[{host}]" if ":" in host else host


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

    @property
    def log_file(self) -> Path:
        return self.path / "postgres.log"

    @property
    def listen_file(self) -> Path:
        return self.path / LISTEN_FILE

    @property
    def pgpass_file(self) -> Path:
        """The site's pgpass file (0600): the password of TCP connections, for libpq."""
        return self.path / PGPASS_FILE

    def listening(self) -> Listen | None:
        """The recorded TCP setting (None: the unix socket only)."""
        try:
            recorded = json.loads(self.listen_file.read_text())
        except FileNotFoundError:
            return None
        return Listen(recorded["host"], None, recorded["allow"])

    def tcp_url(self, dbname: str = DB_NAME) -> str | None:
        """The URL compute nodes use (no password: libpq reads it from PGPASSFILE)."""
        listen = self.listening()
        if listen is None:
            return None
        return f"postgresql://{DB_USER}@{listen.url_host()}:{self.port()}/{dbname}"

    def server_user(self) -> str | None:
        """The user pg_ctl runs as: None unless this process is root (then it is ``run_as``,
        else the data directory's owner, the user the server was created to run as)."""
        if os.geteuid() != 0:
            return None
        if self.run_as is not None:
            return self.run_as
        try:
            owner = self.datadir.stat().st_uid
        except FileNotFoundError:
            return None
        if owner == 0:
            return None
        try:
            return pwd.getpwuid(owner).pw_name
        except KeyError:
            raise PostgresServerError(
                f"{self.datadir} belongs to uid {owner}, which has no user name: name the "
                "server's user with --run-as USER") from None

    def _as_server_user(self, argv: list[str]) -> list[str]:
        user = self.server_user()
        return argv if user is None else ["runuser", "-u", user, "--", *argv]

    def _run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run(self._as_server_user(argv), capture_output=True, text=True, **kw)
        if proc.returncode != 0:
            raise PostgresServerError(
                f"{Path(argv[0]).name} failed (exit {proc.returncode}): {_said(proc)}")
        return proc

    def _prepare_dir(self) -> None:
        user = self.server_user()
        if user is None and os.geteuid() == 0:
            raise PostgresServerError(
                "PostgreSQL refuses to run as root: run this as an ordinary user, or name an "
                "unprivileged user to run the server as (--run-as postgres)")
        private_dir(self.path)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.path, entry.pw_uid, entry.pw_gid)
            probe = subprocess.run(["runuser", "-u", user, "--", "test", "-w",
                                    str(self.path)], capture_output=True)
            if probe.returncode != 0:
                raise PostgresServerError(
                    f"user {user} cannot enter {self.path}: make every directory above "
                    "it searchable (chmod o+x) or place the server elsewhere")

    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def port(self) -> int:
        """The cluster's port, as recorded by its first start."""
        try:
            text = self.port_file.read_text().strip()
        except FileNotFoundError:
            raise PostgresServerError(
                f"{self.port_file} is missing: the server was never started; run "
                "`balsam-futures db start`") from None
        if not text.isdigit():
            raise PostgresServerError(
                f"{self.port_file} holds {text!r}, not a port number: write the port the "
                "server's URLs name into it, or delete it to pick a new port")
        return int(text)

    def _port_for_start(self) -> int:
        # The first start records a free port; later starts must reuse it, because running
        # launchers and executors hold URLs that name it.
        if not self.port_file.exists():
            self.port_file.write_text(f"{_free_port()}\n")
        return self.port()

    def url(self, dbname: str = DB_NAME) -> str:
        return f"postgresql://{DB_USER}@/{dbname}?host={self.path}&port={self.port()}"

    def running(self) -> bool:
        """Whether the server runs; raises when pg_ctl cannot tell (rather than say no)."""
        if not self.initialized():
            return False
        argv = self._as_server_user([find_binary("pg_ctl"), "-D", str(self.datadir), "status"])
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode in (0, PG_CTL_NOT_RUNNING):
            return proc.returncode == 0
        raise PostgresServerError(
            f"cannot tell whether the server in {self.datadir} runs: pg_ctl status failed "
            f"(exit {proc.returncode}): {_said(proc)}; run "
            "this as the user that owns that directory, or name it with --run-as USER")

    def start(self, listen: Listen | None = None, *, unix_only: bool = False) -> str:
        """Create the cluster if needed and start it (if not already running); returns its
        URL: the TCP one when it listens on TCP (``listen``, or as recorded by an earlier
        start; ``unix_only`` forgets that), else the unix socket's."""
        recorded = self.listening()
        if unix_only:
            wanted = None
        elif listen is not None:
            wanted = Listen(listen.host, None, listen.allow)
        else:
            wanted = recorded
        if self.running():
            if wanted != recorded:
                raise PostgresServerError(
                    "the server runs with another listen setting: stop it first "
                    "(`balsam-futures db stop`), then start it with the new one")
            return self.tcp_url() or self.url()
        self._prepare_dir()
        if not self.initialized():
            self._run([find_binary("initdb"), "-D", str(self.datadir), "-U", DB_USER,
                       "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                       "--no-instructions"])
            with open(self.datadir / "postgresql.conf", "a") as conf:
                # Unix socket in the site (0700: only this user can connect); TCP only when
                # asked, through listen_addresses on the command line of each start.
                conf.write(f"\nlisten_addresses = ''\nunix_socket_directories = '{self.path}'\n"
                           "fsync = on\nmax_connections = 200\n"
                           "password_encryption = 'scram-sha-256'\n")
        if listen is not None and listen.port is not None:
            if self.port_file.exists() and self.port() != listen.port:
                raise PostgresServerError(
                    f"--listen names port {listen.port}, and the server's URLs name port "
                    f"{self.port()}: drop the port from --listen, or delete {self.port_file} "
                    "to move (URLs given out before then stop working)")
            self.port_file.write_text(f"{listen.port}\n")
        port = self._port_for_start()
        self._write_hba(wanted)
        if wanted is None:
            self.listen_file.unlink(missing_ok=True)
        else:
            _write_private(self.listen_file, json.dumps({"host": wanted.host,
                                                         "allow": wanted.allow}) + "\n")
        self._pg_ctl_start(port, wanted)
        self.create_database(DB_NAME, exist_ok=True)
        if wanted is not None:
            self._set_password(port)
        return self.tcp_url() or self.url()

    def _write_hba(self, listen: Listen | None) -> None:
        """pg_hba.conf, ours on every start: trust on the private unix socket only; on TCP,
        scram-sha-256 from the allowed network only (anything else is refused)."""
        lines = ["# Written by balsam-futures db start on every start: edits are lost.",
                 "local all all trust"]
        if listen is not None:
            lines.append(f"host all {DB_USER} {listen.allow} scram-sha-256")
        hba = self.datadir / "pg_hba.conf"
        _write_private(hba, "\n".join(lines) + "\n", owner=self.datadir)

    def _set_password(self, port: int) -> None:
        """Keep (or make, the first time) the site's password, and set it on the role: the
        statement carries the scram verifier only, never the password itself."""
        import psycopg2
        from psycopg2.extensions import encrypt_password

        password = None
        try:
            fields = self.pgpass_file.read_text().strip().split(":")
            if len(fields) == 5 and fields[3] == DB_USER and fields[4]:
                password = fields[4]
        except FileNotFoundError:
            pass
        if password is None:
            password = secrets.token_urlsafe(32)  # no ':' or '\\': no pgpass escapes
        # Any host, this port: compute nodes name the server by whichever of its names.
        _write_private(self.pgpass_file, f"*:{port}:*:{DB_USER}:{password}\n")
        conn = psycopg2.connect(self.url("postgres"))
        conn.autocommit = True
        try:
            verifier = encrypt_password(password, DB_USER, conn, "scram-sha-256")
            with conn.cursor() as cur:
                cur.execute(f"ALTER ROLE {DB_USER} PASSWORD %s", (verifier,))
        finally:
            conn.close()

    def _pg_ctl_start(self, port: int, listen: Listen | None = None) -> None:
        """Start the server on ``port``; a taken port is an error, never a reason to move."""
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        options = f"-p {port}"
        if listen is not None:
            options += f" -c listen_addresses='{listen.host}'"
        try:
            self._run([find_binary("pg_ctl"), "-D", str(self.datadir), "-l",
                       str(self.log_file), "-o", options, "-w", "-t", "60", "start"])
        except PostgresServerError as exc:
            log = self._log_since(log_start)
            if _port_taken(log):
                raise PostgresServerError(
                    f"port {port} of the server in {self.path} is taken by another server, "
                    f"and its URLs name that port: stop the other server and run `db start` "
                    f"again, or delete {self.port_file} to start on a new port (URLs given "
                    f"out before then stop working); server log: {_evidence(log)}") from exc
            raise PostgresServerError(f"{exc}; server log: {_evidence(log)}") from exc

    def _log_since(self, offset: int) -> str:
        """What the server logged since byte ``offset`` of its log (this start's lines)."""
        try:
            with open(self.log_file, errors="replace") as log:
                log.seek(offset)
                return log.read()
        except OSError:
            return ""

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
        self.stop()
        self._pg_ctl_start(self.port(), self.listening())


def _write_private(path: Path, text: str, owner: Path | None = None) -> None:
    """Write ``path`` readable by its owner only (0600 from its creation on); with ``owner``,
    owned by that file's owner (the server's user, when we run as root)."""
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if owner is not None:
        st = owner.stat()
        if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            os.chown(tmp, st.st_uid, st.st_gid)
    os.replace(tmp, path)
