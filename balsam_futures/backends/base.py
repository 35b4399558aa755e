"""The task store: one interface, implemented once over SQLAlchemy Core.

    executor ──create_tasks──>  bf_tasks (READY) + bf_history
    launcher ──exchange───────> started: CLAIMED→RUNNING        (one transaction per round
                                outcomes: JOB_FINISHED | RESTART_READY | FAILED ...   trip,
                                claims: READY→CLAIMED, launcher_id      each a heartbeat)
    watcher  ──read_events────> history rows after a cursor, with results and errors
    anyone   ──requeue_expired> tasks held by launchers that are not alive → READY/RESTART_READY

Fencing: every round trip of a launcher touches its row only while it is alive (RUNNING, and
its heartbeat within its own lease).  A launcher that finds itself not alive (it was paused
or cut off past its lease, and may have been swept) gives back what it still holds in that
transaction and gets ``LauncherFenced``: it claims nothing more and stops.

Every state change writes one history row in the same transaction (creation is recorded by
the row's ``created_at``); the history ids are the event cursor.  Dialect modules
(``sqlite.py``, ``postgres.py``) differ only in how they open connections, begin write
transactions, and tell that something changed.

``SqlStore`` is this module's schema check over one mixin per part:

    connection.py     per-thread DBAPI connections, compiled statements, dialect hooks
    executor_ops.py   what executors and watchers ask: create, cancel, kill, read events
    launcher_ops.py   a launcher's round trip: starts, outcomes and claims; kill requests
    leases.py         launcher registration, heartbeats, the sweep of dead launchers
    dependencies.py   releasing tasks that wait for their parents
    task_queries.py   the store side of balsam_futures.query and the CLI's reads
    batchjobs.py      batch jobs and the backlog the queue service reads
    estimates.py      run-time estimates per kind, and the claim order that uses them
    statements/       every SQL statement, by name
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

from ..errors import SchemaMismatch
from . import statements as q
from .batchjobs import BatchJobs
from .cache_ops import CacheOps
from .connection import Connections
from .dependencies import Dependencies
from .estimates import Estimates
from .executor_ops import ExecutorOps
from .launcher_ops import LauncherOps
from .leases import Leases
from .migrations import SCHEMA_VERSION, STEPS
from .staging_ops import StagingOps
from .store import (  # noqa: F401 - re-exported: the records callers import from here
    ClaimedTask,
    ClaimOffer,
    Exchange,
    LauncherInfo,
    TaskEvent,
    TaskOutcome,
)
from .task_queries import TaskQueries

log = logging.getLogger(__name__)

APP_NAME = "balsam_futures"


class SqlStore(Connections, ExecutorOps, LauncherOps, Leases, Dependencies, TaskQueries,
               BatchJobs, Estimates, CacheOps, StagingOps):
    """A task store over a SQLAlchemy engine.  Methods take and return lists."""

    dialect_name = "generic"

    def __init__(self, engine: Engine, *, display_url: str, upgrade: bool = False,
                 clock: Callable[[], float] | None = None) -> None:
        super().__init__(engine, display_url=display_url)
        #: Seconds since the epoch; every time the store writes (leases, history) comes from
        #: here, so tests can move time instead of sleeping.
        self.clock: Callable[[], float] = clock or time.time
        self._check_schema(upgrade=upgrade)

    # -- schema ------------------------------------------------------------------------------

    def _check_schema(self, upgrade: bool = False) -> None:
        from sqlalchemy import inspect

        from .schema import metadata

        with self._write() as conn:
            self._lock_schema(conn)
            names = set(inspect(conn).get_table_names())
            if "bf_meta" not in names:
                if names - {"bf_meta"}:
                    raise SchemaMismatch(
                        f"{self.display_url} holds other tables ({', '.join(sorted(names)[:5])}) "
                        "and is not a balsam_futures store; point the site or db_url elsewhere"
                    )
                # A new store is created from the current schema in one go.
                metadata.create_all(conn)
                conn.execute(q.write_meta(), [
                    {"key": "app", "value": APP_NAME},
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"key": "deletions", "value": "0"},
                    {"key": "blocked_until", "value": "0"},
                    {"key": "estimated_through", "value": "0"},
                ])
                return
            found = dict(conn.execute(q.read_meta()).all())
            if found.get("app") != APP_NAME:
                raise SchemaMismatch(f"{self.display_url} is not a balsam_futures store")
            raw_version = found.get("schema_version", "0")
            if not raw_version.isdecimal():
                raise SchemaMismatch(
                    f"{self.display_url} records schema version {raw_version!r}, not a number: "
                    "it is damaged or not a balsam_futures store; point the site or db_url "
                    "elsewhere"
                )
            version = int(raw_version)
            if version > SCHEMA_VERSION:
                raise SchemaMismatch(
                    f"{self.display_url} has schema version {version}, newer than this "
                    f"balsam_futures understands ({SCHEMA_VERSION}); upgrade balsam_futures"
                )
            if version < SCHEMA_VERSION:
                if not upgrade:
                    raise SchemaMismatch(
                        f"{self.display_url} has schema version {version}, older than this "
                        f"balsam_futures ({SCHEMA_VERSION}); run `balsam-futures db upgrade`"
                    )
                for name, step in STEPS[version:]:
                    log.info("upgrading %s: %s", self.display_url, name)
                    step(conn)
                conn.execute(q.update_meta(), {"b_key": "schema_version",
                                               "b_value": str(SCHEMA_VERSION)})
        self.schema_version = SCHEMA_VERSION
