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
the row's ``created_at``); the history ids are the event cursor.  Dialect modules (``sqlite.py``, ``postgres.py``) differ only in how they open
connections, begin write transactions, and tell that something changed.

    connection.py    per-thread DBAPI connections, compiled statements, dialect hooks
    dependencies.py  releasing tasks that wait for their parents
    querying.py      the store side of balsam_futures.query
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Engine

from .. import config
from ..errors import LauncherFenced, SchemaMismatch
from ..tasks import FINAL, WATCHED, LauncherState, TaskSpec, TaskState
from . import queries as q
from .batchjobs import BatchJobs
from .connection import BULK_CHUNK, Connections, _blob
from .dependencies import Dependencies
from .migrations import SCHEMA_VERSION, STEPS
from .querying import TaskQueries
from .store import (  # noqa: F401 - re-exported: the records callers import from here
    ClaimedTask,
    ClaimOffer,
    Exchange,
    LauncherInfo,
    TaskEvent,
    TaskOutcome,
)

log = logging.getLogger(__name__)

APP_NAME = "balsam_futures"
#: A sweep that waited longer than this for the write lock judges nobody this time: while
#: the store was blocked, live launchers could not renew their leases either.
SWEEP_LOCK_WAIT_S = 0.5

class SqlStore(Connections, Dependencies, TaskQueries, BatchJobs):
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

    # -- tasks -------------------------------------------------------------------------------

    def create_tasks(self, specs: Sequence[TaskSpec]) -> list[int]:
        """Store tasks in one transaction; returns their ids in order."""
        if not specs:
            return []
        now = self.clock()
        insert = self._stmt("insert_tasks")
        shared: dict[int, dict[str, Any]] = {}  # per TaskOptions object: map() shares one
        rows = []
        for spec in specs:
            o = spec.options
            common = shared.get(id(o))
            if common is None:
                r = o.resources
                common = shared[id(o)] = {
                    "description": o.description,
                    # Encoded once per options object, not once per task.
                    "tags": insert.processors["tags"](dict(o.tags)),
                    "data": insert.processors["data"](dict(o.data)),
                    "num_nodes": r.num_nodes,
                    "ranks_per_node": r.ranks_per_node,
                    "threads_per_rank": r.threads_per_rank,
                    "gpus_per_rank": r.gpus_per_rank,
                    "node_packing_count": r.node_packing_count,
                    "wall_time_s": o.timeout,
                    "max_retries": o.max_retries,
                    "num_restarts": 0,
                    "auto_timeout_retry": o.auto_timeout_retry,
                    "priority": o.priority,
                    "kill_requested": False,
                    "workdir": o.workdir,
                    "created_at": now,
                    "updated_at": now,
                }
            waits = bool(spec.depends_on)
            rows.append((common, {
                "id": None, "name": spec.name, "kind": spec.kind,
                "state": (TaskState.AWAITING_PARENTS if waits else spec.state).value,
                "payload": spec.payload, "parent_id": spec.parent_id,
                "num_parents": len(set(spec.depends_on)),
                "allow_parent_failure": o.allow_parent_failure}))
        with self._raw_write() as cur:
            ids = self._allocate_task_ids(cur, len(rows))
            for (_common, own), task_id in zip(rows, ids):
                own["id"] = task_id
            # No history row for creation: ``created_at`` records it, and leaving it out
            # saves two of the five pages each single submit wrote to the WAL.
            self._insert_tasks(cur, rows)
            self._after_create(cur)
            edges = [{"child_id": i, "parent_id": p}
                     for i, s in zip(ids, specs) for p in sorted(set(s.depends_on))]
            if edges:
                self._exec_many(cur, "insert_dependencies", edges)
                # Parents may have finished already: release what can go now.
                self._release(cur, sorted({e["child_id"] for e in edges}), now)
        return ids

    def _claim_rows(self, cur: Any, launcher_id: int, limit: int, offer: ClaimOffer,
                    now: float, already: Sequence[tuple] = ()) -> list[tuple]:
        """Move up to ``limit`` claimable tasks that ``offer`` accepts to CLAIMED; returns
        their CLAIM_COLUMNS rows (with the state they left) in claim order.  ``already``:
        rows this transaction claimed before, which the fit must count as placed."""
        values = {"limit": limit}
        if offer.max_wall_s is not None:
            values["max_wall"] = offer.max_wall_s
        rows = self._exec(cur, "select_claimable", values, *offer.statement_key()).fetchall()
        if offer.fit is not None and rows:
            # Resource-aware: the launcher says which of the candidates it can start, inside
            # this transaction, so it never holds work it has no room for.  Usually all the
            # first ``limit`` fit; if not, look further down the queue (backfill).
            candidates = [*already, *rows]
            chosen = offer.fit([_ClaimRow(r) for r in candidates])
            if len(chosen) < len(candidates) and offer.window and offer.window > limit:
                values["limit"] = offer.window
                rows = self._exec(cur, "select_claimable", values,
                                  *offer.statement_key()).fetchall()
                candidates = [*already, *rows]
                chosen = offer.fit([_ClaimRow(r) for r in candidates])
            rows = [candidates[i] for i in chosen if i >= len(already)][:limit]
        if rows:
            self._exec_many(cur, "mark_claimed", [
                {"b_id": r[0], "b_lid": launcher_id, "b_now": now} for r in rows
            ])
        return rows

    def claim(self, launcher_id: int, limit: int, *, max_nodes: int | None = None,
              tags: dict[str, str] | None = None, max_gpus: int | None = None,
              offer: ClaimOffer | None = None) -> list[ClaimedTask]:
        """Atomically move up to ``limit`` claimable tasks to CLAIMED under ``launcher_id``."""
        return self.record_and_claim(launcher_id, (), limit, max_nodes=max_nodes, tags=tags,
                                     max_gpus=max_gpus, offer=offer)

    def unfit_tasks(self, max_nodes: int, max_gpus: int, tags: dict[str, str] | None = None,
                    limit: int = 10) -> list[tuple[int, int, int]]:
        """Claimable tasks a launcher of ``max_nodes`` nodes with ``max_gpus`` GPUs each can
        never run: (id, nodes, GPUs per node), first ``limit``."""
        with self._raw_read() as cur:
            return [tuple(r) for r in self._exec(
                cur, "select_unfit", {"max_nodes": max_nodes, "max_gpus": max_gpus,
                                      "limit": limit},
                tuple(sorted((tags or {}).items()))).fetchall()]

    def record_outcomes(self, launcher_id: int, outcomes: Sequence[TaskOutcome]) -> int:
        """Write results of runs held by ``launcher_id`` in one transaction; returns how many
        were written.

        An outcome for a task the launcher no longer holds (its lease expired and the task
        was requeued) is dropped with a warning.
        """
        if not outcomes:
            return 0
        now = self.clock()
        with self._raw_write() as cur:
            return self._record(cur, launcher_id, outcomes, now)

    def record_and_claim(self, launcher_id: int, outcomes: Sequence[TaskOutcome], limit: int,
                         *, max_nodes: int | None = None,
                         tags: dict[str, str] | None = None,
                         max_gpus: int | None = None,
                         offer: ClaimOffer | None = None) -> list[ClaimedTask]:
        """Record outcomes and claim up to ``limit`` tasks, in one transaction (see
        :meth:`exchange`); returns the claimed tasks."""
        if offer is None:
            offer = ClaimOffer(max_nodes=max_nodes, tags=dict(tags or {}), max_gpus=max_gpus)
        return self.exchange(launcher_id, (), outcomes, limit, offer).claimed

    def exchange(self, launcher_id: int, started: Sequence[int],
                 outcomes: Sequence[TaskOutcome], limit: int,
                 offer: ClaimOffer | None = None, *, asked: float | None = None) -> Exchange:
        """One launcher round trip, in one transaction: runs that started (CLAIMED→RUNNING),
        outcomes, and a claim of up to ``limit`` tasks that ``offer`` accepts.

        A launcher's steady state is "some tasks started, some ended, claim as many": one
        commit for all three, which is also its heartbeat.  Raises ``LauncherFenced`` (after
        giving back what it holds) if the launcher is no longer alive.

        ``asked``: when the launcher began trying to reach the store (default now; earlier
        if its attempts failed meanwhile): its lease is judged then, so an outage it rode
        out is not held against it.
        """
        offer = offer or ClaimOffer()
        if not outcomes and limit <= 0 and not started:
            return Exchange([], [])
        asked = self.clock() if asked is None else asked
        fenced = False
        with self._raw_write() as cur:
            now = self.clock()  # after any wait for the write lock
            if not self._touch(cur, launcher_id, asked, now):
                self._requeue(cur, [launcher_id], _fenced_message(launcher_id), now,
                              LauncherState.EXPIRED)
                fenced = True
            else:
                # Runs that also ended are recorded by their outcome (see _record).  The history
                # rows of all three parts go in one statement, at the end.
                ended = {o.task_id for o in outcomes}
                history: list[dict[str, Any]] = []
                lost = self._started(cur, launcher_id, [i for i in started if i not in ended],
                                     now, history)
                if outcomes:
                    self._record(cur, launcher_id, outcomes, now, history,
                                 claimed_first=ended.intersection(started))
                rows = self._claim_rows(cur, launcher_id, limit, offer, now) \
                    if limit > 0 else []
                history += [{"task_id": r[0], "from_state": r[1],
                             "to_state": TaskState.CLAIMED.value, "at": now,
                             "message": f"claimed by launcher {launcher_id}"} for r in rows]
                self._insert_history(cur, history)
                parents: dict[int, dict[int, bytes | None]] = {}
                needy = [r[0] for r in rows if r[_NUM_PARENTS]]
                if needy:
                    for child, parent, result in self._exec_once(
                            cur, q.select_parent_results(needy), {}).fetchall():
                        parents.setdefault(child, {})[parent] = _blob(result)
        if fenced:
            raise LauncherFenced(f"launcher {launcher_id}'s lease expired (it was silent "
                                 "longer than its lease); its tasks were given back")
        return Exchange([self._claimed_task(r, parents) for r in rows], lost)

    def _claimed_task(self, row: tuple, parents: dict[int, dict[int, bytes | None]]
                      ) -> ClaimedTask:
        fields = dict(zip(_CLAIM_NAMES, row))
        del fields["state"]
        fields["tags"] = self._decode_json(fields["tags"])
        fields["data"] = self._decode_json(fields["data"])
        fields["payload"] = _blob(fields["payload"])
        fields["auto_timeout_retry"] = bool(fields["auto_timeout_retry"])
        fields["parent_results"] = parents.get(fields["id"], {})
        return ClaimedTask(**fields)

    def _started(self, cur: Any, launcher_id: int, ids: Sequence[int], now: float,
                 history: list[dict[str, Any]]) -> list[int]:
        """Record that runs of tasks ``ids`` started (CLAIMED→RUNNING; their history rows are
        added to ``history``); returns the ids this launcher no longer holds (cancelled or
        requeued meanwhile)."""
        ids = list(dict.fromkeys(ids))  # a resend names a task twice: one move, one row
        if not ids:
            return []
        moved = self._mark_started(cur, launcher_id, ids, now)
        history += [{"task_id": i, "from_state": TaskState.CLAIMED.value,
                     "to_state": TaskState.RUNNING.value, "at": now, "message": ""}
                    for i in ids if i in moved]
        rest = [i for i in ids if i not in moved]
        if not rest:
            return []
        # Those RUNNING here already (a run handed back and started again) are not lost.
        again = {r[0] for r in self._exec_once(
            cur, q.select_running_of(launcher_id, rest), {}).fetchall()}
        return [i for i in rest if i not in again]

    def _touch(self, cur: Any, launcher_id: int, asked: float, now: float) -> bool:
        """Heartbeat inside a write transaction; False if the launcher is not alive.

        Judged at ``asked``, when the launcher began the round trip: a launcher that waited
        for the store (another writer held SQLite's lock, paused, say) is not to blame for
        the wait, but one that was itself silent past its lease is fenced."""
        return self._exec(cur, "touch_launcher", {"lid": launcher_id, "asked": asked,
                                                  "now": now}).fetchone() is not None

    def _record(self, cur: Any, launcher_id: int, outcomes: Sequence[TaskOutcome],
                now: float, history: list[dict[str, Any]] | None = None,
                claimed_first: set[int] | frozenset[int] = frozenset()) -> int:
        """Write outcomes of runs ``launcher_id`` holds; their history rows go to ``history``
        (else they are inserted here).  ``claimed_first``: tasks known to be CLAIMED still
        (their runs started and ended since the last round trip)."""
        unique = list({o.task_id: o for o in reversed(outcomes)}.values())[::-1]
        params = [{
            "b_id": o.task_id, "b_lid": launcher_id, "b_state": o.path[-1].value,
            "b_result": o.result, "b_error": o.error, "b_rc": o.return_code,
            "b_inc": 1 if o.path[-1] is TaskState.RESTART_READY else 0, "b_now": now,
        } for o in unique]
        # An outcome means its run started: one whose task was still CLAIMED (it started and
        # ended since the last round trip, or its start was never reported) gets its
        # CLAIMED→RUNNING row first, so every history chain is unbroken.
        written = self._finish_running(cur, params, claimed_first)
        kept = [o for o in unique if o.task_id in written]
        if any(o.path[-1] is TaskState.RESTART_READY for o in kept):
            self._announce_claimable(cur)
        if len(kept) != len(outcomes):
            log.warning("launcher %s: %d outcome(s) dropped (task no longer held, or sent "
                        "twice)", launcher_id, len(outcomes) - len(kept))
        runs = [o for o in kept if o.run is not None]
        if runs:
            # Most runs of a launcher share a few placements: encode each JSON value once.
            processors = self._stmt("insert_runs").processors
            encoded: dict[tuple, tuple[str, str]] = {}
            rows = []
            for o in runs:
                key = (tuple(o.run["hosts"]), tuple(map(tuple, o.run["gpus"])))
                if key not in encoded:
                    encoded[key] = (processors["hosts"](list(key[0])),
                                    processors["gpus"]([list(g) for g in key[1]]))
                hosts, gpus = encoded[key]
                rows.append({"task_id": o.task_id, "launcher_id": launcher_id, "hosts": hosts,
                             "gpus": gpus, "num_nodes": len(key[0]), "cores": o.run["cores"],
                             "node_share": o.run["share"], "started_at": o.run["started_at"],
                             "ended_at": o.run["ended_at"], "state": o.path[0].value})
            self._exec_many(cur, "insert_runs", rows, processed=frozenset({"hosts", "gpus"}))
        rows = [
            {"task_id": o.task_id, "from_state": TaskState.CLAIMED.value,
             "to_state": TaskState.RUNNING.value, "at": now, "message": ""}
            for o in kept if written[o.task_id] == TaskState.CLAIMED.value
        ] + [
            {"task_id": o.task_id,
             "from_state": (o.path[k - 1] if k else TaskState.RUNNING).value,
             "to_state": state.value, "at": now, "message": o.message if k == 0 else ""}
            for o in kept for k, state in enumerate(o.path)
        ]
        if history is None:
            self._insert_history(cur, rows)
        else:
            history += rows
        self._release_children_of(cur, [o.task_id for o in kept if o.path[-1] in FINAL], now)
        return len(kept)

    def cancel(self, task_ids: Sequence[int]) -> list[int]:
        """Cancel tasks no launcher holds; returns the ids that were cancelled."""
        if not task_ids:
            return []
        now = self.clock()
        with self._raw_write() as cur:
            rows = self._exec_once(cur, q.lock_cancellable(list(task_ids)), {}).fetchall()
            done = [r[0] for r in rows]
            if done:
                self._exec_once(cur, q.set_state(done), {"state": TaskState.CANCELLED.value,
                                                         "now": now})
                self._insert_history(cur, [
                    {"task_id": r[0], "from_state": r[1], "to_state": TaskState.CANCELLED.value,
                     "at": now, "message": "cancelled"} for r in rows
                ])
                self._release_children_of(cur, done, now)
        return done

    def kill(self, task_ids: Sequence[int]) -> list[int]:
        """Kill tasks: a pending one is cancelled now; a running one is flagged, and its
        launcher stops it (KILLED) within a poll interval.  Returns the ids affected."""
        cancelled = self.cancel(task_ids)
        rest = [i for i in task_ids if i not in set(cancelled)]
        if not rest:
            return cancelled
        with self._raw_write() as cur:
            flagged = [r[0] for r in self._exec_once(cur, q.request_kill(rest),
                                                     {"now": self.clock()})]
            if flagged:
                self._announce_claimable(cur)  # wakes launchers, which also look for kills
        return sorted(cancelled + flagged)

    def kill_requests(self, launcher_id: int) -> list[int]:
        """Ids of the tasks ``launcher_id`` runs that were asked to be killed."""
        with self._raw_read() as cur:
            return [r[0] for r in self._exec(cur, "select_kill_requests", {"lid": launcher_id})]

    # -- events ------------------------------------------------------------------------------

    def latest_event_id(self) -> int:
        with self._raw_read() as cur:
            return self._exec(cur, "latest_event_id", {}).fetchone()[0]

    def read_events(self, after: int, limit: int = 10_000) -> tuple[list[TaskEvent], int]:
        """Watched events after cursor ``after``; returns them and the new cursor.

        The cursor advances past every history row read, watched or not.  On PostgreSQL this
        relies on history committing in id order (see ``postgres.py``).
        """
        with self._raw_read() as cur:
            rows = self._exec(cur, "select_events", {"after": after, "limit": limit}).fetchall()
        if not rows:
            return [], after
        events = [TaskEvent(r[0], r[1], state, _blob(r[3]), _blob(r[4]))
                  for r in rows if (state := TaskState(r[2])) in WATCHED]
        return events, rows[-1][0]

    # -- queries -----------------------------------------------------------------------------

    def get_tasks(self, task_ids: Sequence[int]) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(q.select_task_rows(list(task_ids))).all()
        by_id = {r.id: dict(r._mapping) for r in rows}
        return [by_id[i] for i in task_ids if i in by_id]

    def task_outcomes(self, task_ids: Sequence[int]) -> list[TaskEvent]:
        """The current state (and result or error) of each task, as events with id 0."""
        found: list[TaskEvent] = []
        ids = list(task_ids)
        with self._raw_read() as cur:
            for start in range(0, len(ids), BULK_CHUNK):
                rows = self._exec_once(cur, q.select_outcomes(ids[start:start + BULK_CHUNK]),
                                       {}).fetchall()
                found.extend(TaskEvent(0, r[0], TaskState(r[1]), _blob(r[2]), _blob(r[3]))
                             for r in rows)
        return found

    def task_ids(self, tags: dict[str, str]) -> list[int]:
        """Ids of the tasks that carry every one of ``tags``."""
        with self._raw_read() as cur:
            return [r[0] for r in self._exec_once(
                cur, q.select_ids_tagged(tuple(sorted(tags.items()))), {})]

    def history(self, task_id: int) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(q.select_history(task_id))]

    def count_by_state(self) -> dict[str, int]:
        with self._read() as conn:
            return dict(conn.execute(q.count_by_state()).all())

    # -- launchers ---------------------------------------------------------------------------

    def register_launcher(self, info: LauncherInfo) -> int:
        now = self.clock()
        lease = info.lease_s if info.lease_s is not None else config.setting("LEASE_SECONDS")
        if not (isinstance(lease, (int, float)) and math.isfinite(lease) and lease > 0):
            raise ValueError(f"a launcher's lease must be a finite number of seconds > 0, "
                             f"not {lease!r}")
        with self._raw_write() as cur:
            return self._exec(cur, "insert_launcher", {
                "hostname": info.hostname, "pid": info.pid,
                "state": LauncherState.RUNNING.value, "started_at": now, "heartbeat_at": now,
                "info": info.info, "batch_job_id": info.batch_job_id, "lease_s": float(lease),
            }).fetchone()[0]

    def list_launchers(self) -> list[dict[str, Any]]:
        """Every launcher: id, hostname, state, started_at, heartbeat_at, info (its nodes,
        cores and GPUs), batch_job_id."""
        names = [c.name for c in q.select_launchers().selected_columns]
        with self._raw_read() as cur:
            rows = self._exec(cur, "select_launchers", {}).fetchall()
        return [{**dict(zip(names, r)), "info": self._decode_json(r[names.index("info")])}
                for r in rows]

    def list_runs(self, start: float = 0.0, end: float = float("inf")) -> list[dict[str, Any]]:
        """The execution profile: runs overlapping [start, end], oldest first."""
        names = [c.name for c in q.select_runs().selected_columns]
        end = min(end, 1e18)  # a float both dialects bind
        with self._raw_read() as cur:
            rows = self._exec(cur, "select_runs", {"start": start, "end": end}).fetchall()
        out = []
        for r in rows:
            run = dict(zip(names, r))
            run["hosts"] = self._decode_json(run["hosts"])
            run["gpus"] = self._decode_json(run["gpus"])
            out.append(run)
        return out

    def heartbeat(self, launcher_id: int, *, asked: float | None = None) -> None:
        """Renew the lease of ``launcher_id``; raises ``LauncherFenced`` (after giving back
        what it holds) if it is no longer alive (``asked`` as for :meth:`exchange`)."""
        asked = self.clock() if asked is None else asked
        with self._raw_write() as cur:
            now = self.clock()
            alive = self._touch(cur, launcher_id, asked, now)
            if not alive:
                self._requeue(cur, [launcher_id], _fenced_message(launcher_id), now,
                              LauncherState.EXPIRED)
        if not alive:
            raise LauncherFenced(f"launcher {launcher_id}'s lease expired (it was silent "
                                 "longer than its lease); its tasks were given back")

    def requeue_launchers(self, launcher_ids: Sequence[int], message: str) -> list[int]:
        """Give back the tasks ``launcher_ids`` hold (CLAIMED to READY, RUNNING to
        RESTART_READY) and mark them STOPPED."""
        with self._raw_write() as cur:
            return self._requeue(cur, list(launcher_ids), message, self.clock(),
                                 LauncherState.STOPPED)

    def _requeue(self, cur: Any, launcher_ids: list[int], message: str, now: float,
                 mark: LauncherState | None) -> list[int]:
        if not launcher_ids:
            return []
        rows = self._exec_once(cur, q.lock_held_by(launcher_ids), {}).fetchall()
        if rows:
            self._exec_once(cur, q.requeue([r[0] for r in rows]), {"now": now})
            self._insert_history(cur, [
                {"task_id": i, "from_state": state,
                 "to_state": (TaskState.READY if state == TaskState.CLAIMED.value
                              else TaskState.RESTART_READY).value,
                 "at": now, "message": message}
                for i, state in rows
            ])
            self._announce_claimable(cur)
        if mark is not None:
            self._exec_many(cur, "set_launcher_state",
                            [{"lid": lid, "state": mark.value, "now": now}
                             for lid in launcher_ids])
        return [r[0] for r in rows]

    def requeue_expired(self, sweeper_id: int | None = None, *,
                        unreachable_until: float = 0.0) -> list[int]:
        """Requeue the tasks held by every launcher that is not alive: silent past its own
        lease (marked EXPIRED), or holding tasks whatever its recorded state.

        A launcher sweeping (``sweeper_id``) must be alive itself: one that was paused past
        its lease would judge the others by a stale view, so it is fenced instead
        (``LauncherFenced``).  A lease is counted from the later of a launcher's heartbeat
        and the end of the store's last blockage (a writer held SQLite's lock for long, so
        that nobody could renew a lease), and a sweep that itself waited long for the lock
        judges nobody this time.  ``unreachable_until``: when the sweeper last got through
        to the store after an outage: others may not have got through yet, so their leases
        are counted from then too.
        """
        now = self.clock()
        with self._raw_read() as cur:
            if not self._dead_holders(cur, now,
                                      max(self._blocked_until(cur), unreachable_until)):
                return []
        asked = now
        fenced = False
        with self._raw_write() as cur:
            now = self.clock()
            if sweeper_id is not None and not self._touch(cur, sweeper_id, asked, now):
                self._requeue(cur, [sweeper_id], _fenced_message(sweeper_id), now,
                              LauncherState.EXPIRED)
                fenced = True
                requeued: list[int] = []
            elif now - asked > SWEEP_LOCK_WAIT_S:
                # The store was blocked for everyone, so live launchers could not heartbeat
                # either: judge them once it is free again.
                log.info("lease sweep deferred: the store was blocked for %.1f s",
                         now - asked)
                return []
            else:
                blocked = max(self._blocked_until(cur), unreachable_until)
                # Again inside the write: a launcher may have heartbeated meanwhile.
                expired = [r[0] for r in self._exec(cur, "select_expired_launchers",
                                                    {"now": now, "blocked": blocked})]
                requeued = self._requeue(cur, expired, "launcher lease expired (no "
                                         "heartbeat within its lease)", now,
                                         LauncherState.EXPIRED)
                others = [i for i in self._dead_holders(cur, now, blocked)
                          if i not in set(expired)]
                requeued += self._requeue(cur, others, "launcher not alive (stopped or "
                                          "expired) but holding the task", now, None)
        if fenced:
            raise LauncherFenced(f"launcher {sweeper_id}'s lease expired (it was silent "
                                 "longer than its lease); its tasks were given back")
        return requeued

    def _blocked_until(self, cur: Any) -> float:
        row = self._exec(cur, "select_blocked", {}).fetchone()
        return float(row[0]) if row else 0.0

    def _dead_holders(self, cur: Any, now: float, blocked: float) -> list[int]:
        """Launchers that should lose their tasks: expired, or holding tasks while dead."""
        values = {"now": now, "blocked": blocked}
        ids = {r[0] for r in self._exec(cur, "select_expired_launchers", values)}
        ids.update(r[0] for r in self._exec(cur, "select_orphaned_launchers", values)
                   if r[0] is not None)
        return sorted(ids)

    def stop_launcher(self, launcher_id: int, message: str = "launcher stopped") -> list[int]:
        return self.requeue_launchers([launcher_id], message)


_CLAIM_NAMES = [c.name for c in q.CLAIM_COLUMNS]
#: Where num_parents sits in a claim row (a launcher fetches parents' results only if > 0).
_NUM_PARENTS = _CLAIM_NAMES.index("num_parents")


class _ClaimRow:
    """A claim candidate as ``ClaimOffer.fit`` sees it (a ``store.FitRow``): the task's id
    and resource fields, read from a claim row by column name."""

    __slots__ = _FIT_FIELDS = ("id", "num_nodes", "ranks_per_node", "threads_per_rank",
                               "gpus_per_rank", "node_packing_count", "wall_time_s")

    def __init__(self, row: tuple) -> None:
        for name, index in _FIT_INDEXES:
            setattr(self, name, row[index])


_FIT_INDEXES = tuple((name, _CLAIM_NAMES.index(name)) for name in _ClaimRow._FIT_FIELDS)


def _fenced_message(launcher_id: int) -> str:
    return (f"launcher {launcher_id} found its lease expired (it was silent longer than its "
            "lease); given back")
