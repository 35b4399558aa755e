"""How a store talks to its database: statements compiled once and run on each thread's own
DBAPI connection, with the hooks a dialect module overrides.

The hot paths (submit, claim, record, read events) skip SQLAlchemy's per-execution work and
run the compiled text directly on a DBAPI cursor: measured on SQLite, one submit took 310 us
through ``engine.begin()`` + Core and 52 us this way.  The statements themselves are still
built by the named functions in ``statements/`` and compiled by the engine's own dialect.
"""

from __future__ import annotations

import contextlib
import json
import select
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from ..errors import StoreError, StoreRejected, StoreUnavailable
from ..tasks import TaskState
from . import statements as q

#: Rows per statement in bulk writes.  Larger batches mean fewer round trips but longer write
#: locks; SQLite holds its one writer lock for the whole batch.
BULK_CHUNK = 5000


class RawStatement:
    """A statement from ``statements/`` compiled once for one dialect, run on a DBAPI cursor
    (why: see the module docstring)."""

    def __init__(self, stmt: Any, dialect: Any) -> None:
        compiled = stmt.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        self.sql = compiled.string
        self.defaults = dict(compiled.params)
        self.order = list(compiled.positiontup) if dialect.positional else None
        # The type conversions SQLAlchemy would apply (JSON to text, JSON paths, booleans).
        # ``_bind_processors`` is the compiled statement's own table of them (stable since 1.4).
        self.processors = dict(compiled._bind_processors)
        #: Positional drivers: (name, default, conversion) of each parameter in order.
        self._plan = None if self.order is None else [
            (k, self.defaults.get(k), self.processors.get(k)) for k in self.order]

    def params(self, values: dict[str, Any], processed: frozenset[str] = frozenset()) -> Any:
        """Bind values in the driver's form; keys in ``processed`` are converted already."""
        if self._plan is not None:
            # Positional (SQLite): one pass over the statement's parameters (merging dicts
            # first cost more than the statement on the launcher's per-task writes).
            get = values.get
            out = []
            for key, default, process in self._plan:
                value = get(key, default)
                if value is not None and process is not None and key not in processed:
                    value = process(value)
                out.append(value)
            return out
        merged = {**self.defaults, **values}
        for key, process in self.processors.items():
            if key in merged and merged[key] is not None and key not in processed:
                merged[key] = process(merged[key])
        return merged

    def params_shared(self, rows: Sequence[tuple[dict[str, Any], dict[str, Any]]],
                      processed: frozenset[str] = frozenset()) -> list[Any]:
        """``params`` of many rows, each given as (values shared with other rows, its own):
        the shared values are converted once per shared dict, not once per row (a bulk
        insert of one ``map`` converts its options once)."""
        procs = {k: p for k, p in self.processors.items() if k not in processed}
        order = self.order
        converted: dict[int, dict[str, Any]] = {}
        out = []
        for common, own in rows:
            base = converted.get(id(common))
            if base is None:
                base = converted[id(common)] = _converted({**self.defaults, **common}, procs)
            merged = {**base, **_converted(own, procs)}
            out.append(merged if order is None else [merged[k] for k in order])
        return out


def _converted(values: dict[str, Any], procs: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for key, value in values.items():
        process = procs.get(key)
        if process is not None and value is not None:
            out[key] = process(value)
    return out


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _blob(value: Any) -> bytes | None:
    # psycopg2 returns bytea as memoryview; everything above the store sees bytes.
    return None if value is None else bytes(value)


_ENCODED = frozenset({"tags", "data", "staging"})
#: Raised by drivers while binding a value they cannot send (sqlite3: an int over 64 bits;
#: psycopg2: a NUL in a string): the statement is refused, not the store lost.
_BINDING_ERRORS = (OverflowError, ValueError)


def _closed_while_idle(dbapi_conn: Any) -> bool:
    """Whether a kept-open connection, idle between transactions, is known to be dead.

    A server that restarts (or ends the session) sends its clients a last message and closes
    their sockets, so an idle socket with anything to read is one the server has left; psycopg2
    only notices at the next statement, which then fails (``server closed the connection
    unexpectedly``, or ``connection already closed`` once it has).  A poll costs a system call,
    not a round trip.  SQLite connections have no socket, and nothing closes them under us.
    """
    if getattr(dbapi_conn, "closed", 0):  # psycopg2: the loss was seen already
        return True
    fileno = getattr(dbapi_conn, "fileno", None)
    if fileno is None:
        return False
    try:
        poller = select.poll()  # not select.select: fds above 1023 are common in launchers
        poller.register(fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except Exception:  # no socket to ask about: treat it as gone, a new one costs little
        return True


class Connections:
    """Per-thread DBAPI connections, compiled statements and the dialect hooks."""

    def __init__(self, engine: Engine, *, display_url: str) -> None:
        self.engine = engine
        self.display_url = display_url
        self._compiled: dict[tuple, RawStatement] = {}
        self._local = threading.local()
        self._raw_lock = threading.Lock()
        self._raw_conns: list[Any] = []
        self._dbapi_error = engine.dialect.dbapi.Error

    # -- connections -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except (sa_exc.OperationalError, self._dbapi_error) as exc:
            raise StoreUnavailable(
                f"task store {self.display_url} is unavailable: {_first_line(exc)}"
            ) from exc
        except sa_exc.SQLAlchemyError as exc:
            raise StoreError(f"task store {self.display_url}: {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (dialects override to take the write lock up front)."""
        with self._translate(), self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._translate(), self.engine.connect() as conn:
            yield conn

    def _stmt(self, name: str, *args: Any) -> RawStatement:
        key = (name, args)
        raw = self._compiled.get(key)
        if raw is None:
            stmt = getattr(q, name)(*args)
            raw = self._compiled[key] = RawStatement(stmt, self.engine.dialect)
        return raw

    def _dbapi_connection(self) -> Any:
        """This thread's own DBAPI connection, kept open for the life of the store."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and _closed_while_idle(conn.dbapi_connection):
            # The server restarted since this thread's last transaction: open a new connection
            # now, so that this transaction's first statement does not fail on the dead one.
            self._drop_connection()
            conn = None
        if conn is None:
            conn = self._local.conn = self.engine.raw_connection()
            with self._raw_lock:
                self._raw_conns.append(conn)
        return conn

    def release_connection(self) -> None:
        """Close this thread's kept connection; its next call opens another."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._raw_lock:
                if conn in self._raw_conns:
                    self._raw_conns.remove(conn)
            try:
                conn.close()
            except Exception:
                pass

    def _drop_connection(self) -> None:
        """Forget this thread's connection after an error; the next call opens a new one."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._raw_lock:
                if conn in self._raw_conns:
                    self._raw_conns.remove(conn)
            try:
                conn.invalidate()  # the pool's way to close a connection known to be broken
            except Exception:
                pass

    @contextlib.contextmanager
    def _raw_write(self) -> Iterator[Any]:
        """A write transaction on this thread's DBAPI connection, yielding a cursor."""
        try:
            conn = self._dbapi_connection()
            cur = conn.cursor()
            self._raw_begin(cur)
            try:
                yield cur
            except BaseException:
                self._rollback_after(conn)
                raise
            conn.commit()
        except (self._dbapi_error, sa_exc.DBAPIError, *_BINDING_ERRORS) as exc:
            raise self._store_error(exc) from exc

    @contextlib.contextmanager
    def _raw_read(self) -> Iterator[Any]:
        try:
            conn = self._dbapi_connection()
            cur = conn.cursor()
            self._raw_begin(cur, write=False)
            try:
                yield cur
            finally:
                conn.rollback()
        except (self._dbapi_error, sa_exc.DBAPIError, *_BINDING_ERRORS) as exc:
            raise self._store_error(exc) from exc

    def _store_error(self, exc: BaseException) -> StoreError:
        """Translate a driver error: the database *refused* the statement (a value out of
        range, a missing row it refers to; retrying cannot help, the connection is fine), or
        the store is *unavailable* (drop this connection; retrying later may work)."""
        if self._is_rejection(getattr(exc, "orig", None) or exc):
            return StoreRejected(f"task store {self.display_url} refused the statement: "
                                 f"{_first_line(exc)}")
        self._drop_connection()
        return StoreUnavailable(f"task store {self.display_url} is unavailable: "
                                f"{_first_line(exc)}")

    def _is_rejection(self, exc: BaseException) -> bool:
        dbapi = self.engine.dialect.dbapi
        if isinstance(exc, (dbapi.IntegrityError, dbapi.DataError, dbapi.NotSupportedError)):
            return True
        if isinstance(exc, dbapi.ProgrammingError):
            # sqlite3 says "closed database" this way; that one is an outage.
            return "closed" not in str(exc)
        return isinstance(exc, _BINDING_ERRORS) and not isinstance(exc, dbapi.Error)

    def _rollback_after(self, conn: Any) -> None:
        """Roll back after a failed statement.  On a lost connection the rollback fails too
        (``connection already closed``) and would hide the statement's own error, which says
        what happened: drop the connection instead and let that error through."""
        try:
            conn.rollback()
        except (self._dbapi_error, sa_exc.DBAPIError):
            self._drop_connection()

    def _raw_begin(self, cur: Any, write: bool = True) -> None:
        """Start a transaction (DBAPI drivers that begin implicitly need nothing)."""

    def _exec(self, cur: Any, name: str, values: dict[str, Any], *args: Any) -> Any:
        raw = self._stmt(name, *args)
        cur.execute(raw.sql, raw.params(values))
        return cur

    def _exec_many(self, cur: Any, name: str, rows: Sequence[dict[str, Any]], *args,
                   processed: frozenset[str] = frozenset()) -> int:
        if not rows:
            return 0
        raw = self._stmt(name, *args)
        cur.executemany(raw.sql, [raw.params(r, processed) for r in rows])
        return cur.rowcount

    def _exec_once(self, cur: Any, stmt: Any, values: dict[str, Any]) -> Any:
        """Run a statement compiled for this call only (IN lists of varying length)."""
        raw = RawStatement(stmt, self.engine.dialect)
        cur.execute(raw.sql, raw.params(values))
        return cur

    def _insert_history(self, cur: Any, rows: Sequence[dict[str, Any]]) -> None:
        """Insert history rows; every state change of every task goes through here."""
        if rows:
            self._before_history(cur)
            self._exec_many(cur, "insert_history", rows)

    def _commit_without_flush(self, cur: Any) -> None:
        """Dialect hook: this transaction writes nothing that a crash of the database server
        may not forget (claims and starts: see LauncherOps.exchange), so its commit need not
        wait for the disk.  SQLite never waits for it (synchronous = NORMAL in WAL mode)."""

    def _before_history(self, cur: Any) -> None:
        """Dialect hook, run in the transaction before history rows are inserted."""

    def _insert_tasks(self, cur: Any, rows: list[tuple[dict, dict]],
                      cached: bool = False, staged: bool = False) -> None:
        """Insert new task rows, each given as (fields shared with other rows, its own; with
        the cache fields if ``cached``, the staging field if ``staged``)."""
        raw = self._stmt("insert_tasks", cached, staged)
        cur.executemany(raw.sql, raw.params_shared(rows, _ENCODED))

    def _lock_schema(self, conn: Connection) -> None:
        """Dialect hook: serialize schema creation between processes opening a new store."""

    def _after_create(self, cur: Any) -> None:
        """Dialect hook, run in the transaction that inserted new tasks."""

    def _announce_claimable(self, cur: Any) -> None:
        """Tasks became claimable again (retries, requeues) in this transaction; launchers
        waiting for work should look (dialects also tell the other processes)."""
        self._local.released = True

    def notify_fd(self) -> int | None:
        """A file descriptor that becomes readable when the store changes, if the backend
        has one (PostgreSQL LISTEN); pollers then sleep on it instead of polling."""
        return None

    def _finish_running(self, cur: Any, params: list[dict[str, Any]],
                        claimed_first: set[int] | frozenset[int] = frozenset()
                        ) -> dict[int, str]:
        """Write outcomes; returns the ids of the rows actually updated, each with the state
        it left (RUNNING, or CLAIMED for a run whose start was not recorded yet).

        One statement per outcome, so each row count says whether this launcher still held
        that task (an executemany only reports the total, which cannot tell which).  Each
        is tried from the state it is most likely in (CLAIMED for ``claimed_first``, else
        RUNNING), then from the other only if that missed.
        """
        running, claimed = TaskState.RUNNING.value, TaskState.CLAIMED.value
        from_running = (running, self._stmt("finish_running", running))
        from_claimed = (claimed, self._stmt("finish_running", claimed))
        written: dict[int, str] = {}
        for p in params:
            order = (from_claimed, from_running) if p["b_id"] in claimed_first else \
                (from_running, from_claimed)
            for from_state, raw in order:
                cur.execute(raw.sql, raw.params(p))
                if cur.rowcount == 1:
                    written[p["b_id"]] = from_state
                    break
        return written

    def _mark_started(self, cur: Any, launcher_id: int, ids: Sequence[int],
                      now: float) -> set[int]:
        """Move tasks ``ids`` from CLAIMED to RUNNING while ``launcher_id`` holds them;
        returns the ids moved (one statement each, for the same reason as above)."""
        raw = self._stmt("mark_started")
        moved = set()
        for task_id in ids:
            cur.execute(raw.sql, raw.params({"b_id": task_id, "b_lid": launcher_id,
                                             "b_now": now}))
            if cur.rowcount == 1:
                moved.add(task_id)
        return moved

    def _allocate_task_ids(self, cur: Any, n: int) -> list[int]:
        """Reserve ``n`` task ids inside the current write transaction (dialect-specific)."""
        raise NotImplementedError

    def _decode_json(self, value: Any) -> Any:
        if value == "{}":  # most tasks' tags and data: a claim decodes two per task
            return {}
        return json.loads(value) if isinstance(value, str) else value

    def changed(self) -> bool:
        """Whether anything may have changed since the last call (cheap; for pollers)."""
        return True

    def close(self) -> None:
        with self._raw_lock:
            for conn in self._raw_conns:
                try:
                    conn.close()
                except Exception:  # closing a connection from another thread may fail
                    pass
            self._raw_conns.clear()
        self._local = threading.local()
        self.engine.dispose()

