"""SQLite, the embedded default: one file, WAL journal, write transactions that take the lock
up front.

Why ``BEGIN IMMEDIATE`` for every write: a deferred transaction that reads and then writes
cannot wait for the lock when another connection committed in between; SQLite fails it at
once with SQLITE_BUSY, whatever the busy timeout (https://sqlite.org/lang_transaction.html).
Taking the write lock at BEGIN makes writers queue on the busy timeout instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from ..errors import SchemaMismatch, SiteError
from .base import SqlStore

#: How long a writer waits for the lock before failing.  Claims and result writes hold the
#: lock for milliseconds; a long wait means a stuck process, which should surface as an error.
BUSY_TIMEOUT_MS = 30_000


def _on_connect(dbapi_conn, _record) -> None:
    # Let SQLAlchemy's "begin" hook below emit BEGIN, not pysqlite's own heuristics.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA journal_mode = WAL")
    # NORMAL in WAL mode: a commit survives a crash of any process, and only an OS crash or
    # power loss may lose the last transactions (https://sqlite.org/pragma.html#pragma_synchronous).
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def _on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


#: A wait for the write lock longer than this is recorded as a blockage of the store (see
#: SqliteStore._raw_write); shorter waits are ordinary contention, far below any lease.
BLOCKED_S = 0.5


class SqliteStore(SqlStore):
    dialect_name = "sqlite"

    def __init__(self, path: Path, upgrade: bool = False) -> None:
        self.path = Path(path)
        new = not self.path.exists()
        if new:
            try:
                # Create it private before SQLite opens it: payloads are code to run.
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            except OSError as exc:
                raise SiteError(f"cannot create the database {self.path}: {exc}") from exc
        # Each thread keeps its own connection (see SqlStore._dbapi_connection); NullPool
        # lets short-lived reads open and close theirs with no pool limit on threads.
        engine = create_engine(f"sqlite:///{self.path}", poolclass=NullPool)
        event.listen(engine, "connect", _on_connect)
        event.listen(engine, "begin", _on_begin)
        try:
            super().__init__(engine, display_url=str(self.path), upgrade=upgrade)
        except SchemaMismatch:
            engine.dispose()
            raise
        except Exception as exc:
            engine.dispose()
            if "not a database" in str(exc) or "file is encrypted" in str(exc):
                raise SchemaMismatch(
                    f"{self.path} is not a SQLite database, so not a balsam_futures store; "
                    "point the site elsewhere or move the file away"
                ) from exc
            raise
        self._lock_path = str(self.path) + ".writelock"
        self._lock_fds: list[int] = []
        self._fds_lock = threading.Lock()

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._translate(), self.engine.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def _raw_write(self) -> Iterator:
        # Writers queue on an flock first.  SQLite's own busy handler polls with sleeps of
        # 1, 2, 5, 10... ms (sqliteDefaultBusyCallback), so two busy writers (a submitting
        # master and a launcher) lost milliseconds per collision; a blocking flock hands the
        # lock over as soon as it is released.  Writers that do not take it (the sqlite3
        # shell) still work, through the busy timeout.
        fd = getattr(self._local, "lock_fd", None)
        if fd is None:
            fd = self._local.lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            with self._fds_lock:
                self._lock_fds.append(fd)
        asked = time.monotonic()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            with super()._raw_write() as cur:
                if time.monotonic() - asked > BLOCKED_S:
                    # Another writer held the lock this long (paused, or a huge batch): no
                    # launcher could renew its lease meanwhile.  Say so, so that lease sweeps
                    # count leases from now (see statements/leases.py, _alive).
                    self._exec(cur, "mark_blocked", {"now_text": repr(self.clock())})
                yield cur
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _raw_begin(self, cur, write: bool = True) -> None:
        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _allocate_task_ids(self, cur, n: int) -> list[int]:
        # Under BEGIN IMMEDIATE no other writer runs, so the next n ids are ours; inserting
        # them explicitly advances sqlite_sequence.
        row = self._exec(cur, "sqlite_task_sequence", {}).fetchone()
        last = row[0] if row else 0
        return list(range(last + 1, last + n + 1))

    def changed(self) -> bool:
        """True when another connection committed since this thread last asked (``PRAGMA
        data_version``, on this thread's own connection).

        The pragma reads a counter in the WAL index, so a poller can call this every
        millisecond for a few microseconds each.  Commits made on the same connection do
        not count: a launcher's store thread, asking through a connection of its own, took
        each of its own round trips for news and claimed again for nothing (a round trip
        more per task when tasks come one at a time).
        """
        try:
            cur = self._dbapi_connection().cursor()
            try:
                version = cur.execute("PRAGMA data_version").fetchone()[0]
            finally:
                cur.close()
        except sqlite3.Error as exc:
            self._drop_connection()
            raise self._store_error(exc) from exc
        last = getattr(self._local, "data_version", None)
        self._local.data_version = version
        return version != last

    def close(self) -> None:
        with self._fds_lock:
            for fd in self._lock_fds:
                os.close(fd)
            self._lock_fds.clear()
        super().close()
