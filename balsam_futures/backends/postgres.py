"""PostgreSQL: many launchers on one server.

Differences from SQLite, and only these:

* Claims take rows with ``FOR UPDATE SKIP LOCKED``, so launchers claiming at the same time
  get different tasks without waiting for each other.
* History ids come from a sequence, and concurrent transactions may commit out of id order;
  a watcher reading "ids after my cursor" would then skip a row that commits late.  Writers
  therefore take one transaction-scoped advisory lock just before inserting history rows, so
  history commits in id order (the lock is released after the commit is visible).  Only the
  history insert and the commit run under it; claims and updates proceed in parallel.
* Changes are announced with NOTIFY (``bf_events`` for state changes, ``bf_tasks`` for new
  tasks); ``notify_fd()`` gives pollers a socket to sleep on instead of polling.
* Bulk statements go through psycopg2's ``execute_batch``/``execute_values`` (a round trip
  per page, not per row).
"""

from __future__ import annotations

import contextlib
import select
import threading
from collections.abc import Iterator
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from ..errors import StoreUnavailable
from . import redact_url
from . import statements as q
from .base import ClaimOffer, SqlStore
from .estimates import claim_order_key

#: Rows per round trip in bulk statements.
PAGE_SIZE = 1000
EVENTS_CHANNEL = "bf_events"
TASKS_CHANNEL = "bf_tasks"
#: Where a claimed row holds the task's nodes (the claim order's second key).
_NUM_NODES = [c.name for c in q.CLAIM_COLUMNS].index("num_nodes")


class PostgresStore(SqlStore):
    dialect_name = "postgresql"

    def __init__(self, url: str, listen: str = "all", upgrade: bool = False) -> None:
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise StoreUnavailable(
                "PostgreSQL needs psycopg2: pip install 'balsam_futures[postgres]'") from None
        sa_url = make_url(url).set(drivername="postgresql+psycopg2")
        # libpq's own form, for the LISTEN connection made with psycopg2 directly.
        self.url = sa_url.set(drivername="postgresql").render_as_string(hide_password=False)
        # Each thread keeps its own connection for the store's life, so a pool adds nothing;
        # NullPool also means no pool limit on the number of threads.
        try:
            engine = create_engine(sa_url, poolclass=NullPool)
        except ArgumentError as exc:  # e.g. ?port=abc; its text may quote the password
            raise ValueError(f"database URL {redact_url(url)}: {redact_url(str(exc))}"
                             ) from None
        super().__init__(engine, display_url=redact_url(url), upgrade=upgrade)
        self._listen_lock = threading.Lock()
        self._listen: Any = None
        # A launcher only cares about claimable work, and must not wake on the state changes
        # its own commits announce (measured: a useless claim per result, +0.5 ms a task).
        self._channels = {"tasks": [TASKS_CHANNEL], "events": [EVENTS_CHANNEL],
                          "all": [TASKS_CHANNEL, EVENTS_CHANNEL]}[listen]

    # -- dialect hooks -----------------------------------------------------------------------

    def _exec_many(self, cur: Any, name: str, rows, *args,
                   processed: frozenset[str] = frozenset()) -> int:
        from psycopg2.extras import execute_batch, execute_values

        if not rows:
            return 0
        raw = self._stmt(name, *args)
        params = [raw.params(r, processed) for r in rows]
        head, sep, template = raw.sql.partition(" VALUES ")
        if raw.sql.startswith("INSERT") and sep and "RETURNING" not in template:
            # One multi-row INSERT per page: 5x faster than a statement per row.
            execute_values(cur, head + " VALUES %s", params, template=template,
                           page_size=PAGE_SIZE)
        else:
            execute_batch(cur, raw.sql, params, page_size=PAGE_SIZE)
        return -1  # neither adds up row counts

    def _finish_running(self, cur: Any, params: list[dict[str, Any]],
                        claimed_first: Any = frozenset()) -> dict[int, str]:
        from psycopg2.extras import execute_values

        sql, template = q.pg_finish_running_values()
        rows = execute_values(cur, sql, params, template=template, page_size=PAGE_SIZE,
                              fetch=True)
        return {r[0]: r[1] for r in rows}

    def _mark_started(self, cur: Any, launcher_id: int, ids, now: float) -> set[int]:
        from psycopg2.extras import execute_values

        sql, template = q.pg_mark_started_values()
        rows = execute_values(cur, sql, [{"b_id": i, "b_lid": launcher_id, "b_now": now}
                                         for i in ids], template=template,
                              page_size=PAGE_SIZE, fetch=True)
        return {r[0] for r in rows}

    def _allocate_task_ids(self, cur: Any, n: int) -> list[int]:
        # Also announces the new tasks on bf_tasks (see the query).
        return [r[0] for r in self._exec(cur, "pg_next_task_ids", {"n": n}).fetchall()]

    def _lock_schema(self, conn: Any) -> None:
        # Launchers and a master often open a new database at the same moment; without the
        # lock both try CREATE TABLE and one fails on the catalog's unique index.
        conn.execute(q.pg_lock_schema())

    def _insert_history(self, cur: Any, rows) -> None:
        # Lock, NOTIFY and insert in one round trip (see pg_insert_history_values).
        from psycopg2.extras import execute_values

        if rows:
            sql, template = q.pg_insert_history_values()
            execute_values(cur, sql, rows, template=template, page_size=PAGE_SIZE)

    def _insert_tasks(self, cur: Any, rows: list[tuple[dict, dict]],
                      cached: bool = False, staged: bool = False) -> None:
        # Send the fields a map() shares once per batch, and per row only what differs
        # (id, name, payload...): psycopg2 quotes every value it sends, and that quoting
        # was most of a bulk insert's time (16,000 tasks/s with every field per row).
        from psycopg2.extras import execute_values

        groups: dict[int, tuple[dict, list[dict]]] = {}
        for common, own in rows:
            groups.setdefault(id(common), (common, []))[1].append(own)
        for common, owns in groups.values():
            fields = sorted(common)
            sql, template, shared = q.pg_insert_tasks_shared(fields, cached)
            values = cur.mogrify(shared, common).decode()
            execute_values(cur, sql.format(shared=values.replace("%", "%%")), owns,
                           template=template, page_size=PAGE_SIZE)

    def _lock_cache_keys(self, cur: Any, keys: list[str]) -> None:
        if keys:
            self._exec(cur, "pg_lock_cache_keys", {"keys": keys})

    def _commit_without_flush(self, cur: Any) -> None:
        self._exec(cur, "pg_commit_without_flush", {})

    def _announce_claimable(self, cur: Any) -> None:
        super()._announce_claimable(cur)
        self._exec(cur, "pg_notify_tasks", {})

    def _claim_rows(self, cur: Any, launcher_id: int, limit: int, offer: ClaimOffer,
                    now: float) -> list[tuple]:
        # One statement instead of a SELECT and an UPDATE per row.
        values = {"limit": limit, "lid": launcher_id, "now": now}
        if offer.max_wall_s is not None:
            values["max_wall"] = offer.max_wall_s
        rows = self._exec(cur, "pg_claim", values, *offer.statement_key()).fetchall()
        # RETURNING gives no order: restore claim order (priority, widest, then longest
        # expected first unless the starvation guard asked for submission order, then id).
        rows.sort(key=lambda r: claim_order_key(r[-2], r[_NUM_NODES], r[-1], r[0],
                                                offer.by_submission))
        rows = [r[:-2] for r in rows]
        if offer.fit is None or not rows:
            return rows
        # Resource-aware: usually every task claimed fits (one statement, as above).  If some
        # do not, give those back at once and look further down the queue for ones that do
        # (SELECT ... FOR UPDATE SKIP LOCKED, fit, UPDATE), so small tasks backfill.
        from .launcher_ops import _ClaimRow

        keep = set(offer.fit([_ClaimRow(r) for r in rows]))
        if len(keep) == len(rows):
            return rows
        self._exec_many(cur, "pg_unclaim", [{"b_id": r[0], "b_state": r[1]}
                                            for k, r in enumerate(rows) if k not in keep])
        kept = [r for k, r in enumerate(rows) if k in keep]
        if len(kept) < limit:
            kept += super()._claim_rows(cur, launcher_id, limit - len(kept), offer, now,
                                        already=kept)
        return kept

    @contextlib.contextmanager
    def _raw_read(self) -> Iterator[Any]:
        # Reads run in autocommit: no BEGIN and ROLLBACK round trips around them.  Each
        # statement sees its own snapshot, which read_events allows (history commits in id
        # order, see the module docstring).
        try:
            raw = self._dbapi_connection().dbapi_connection
            raw.autocommit = True
            try:
                yield raw.cursor()
            finally:
                if not raw.closed:  # on a lost connection this would hide the real error
                    raw.autocommit = False
        except (self._dbapi_error, ValueError) as exc:
            raise self._store_error(exc) from exc

    # -- change notification -----------------------------------------------------------------

    def _listener(self) -> Any:
        if self._listen is None:
            import psycopg2

            conn = psycopg2.connect(self.url)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("; ".join(f"LISTEN {c}" for c in self._channels))
            self._listen = conn
        return self._listen

    def notify_fd(self) -> int | None:
        """A socket that becomes readable when a NOTIFY arrives."""
        with self._listen_lock:
            try:
                return self._listener().fileno()
            except Exception:
                return None

    def changed(self) -> bool:
        """True when a notification arrived since the last call (or the listener was lost)."""
        with self._listen_lock:
            try:
                conn = self._listener()
                if select.select([conn], [], [], 0)[0]:
                    conn.poll()
                if conn.notifies:
                    conn.notifies.clear()
                    return True
                return False
            except Exception:
                # Lost the listening connection: reconnect next time, and say "maybe" now.
                self._close_listener()
                return True

    def _close_listener(self) -> None:
        if self._listen is not None:
            try:
                self._listen.close()
            except Exception:
                pass
            self._listen = None

    def close(self) -> None:
        with self._listen_lock:
            self._close_listener()
        super().close()
