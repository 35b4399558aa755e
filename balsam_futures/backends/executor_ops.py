"""What an executor and its watcher ask of the store: storing tasks, cancelling and killing
them, reading the events that resolve their futures, and finding them again (re-attach).

    executor ──create_tasks──> bf_tasks rows (READY, or AWAITING_PARENTS) in one transaction
             ──cancel / kill──> CANCELLED now, or kill_requested for the launcher to act on
    watcher  ──read_events───> history rows after its cursor, with results and errors
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..tasks import WATCHED, TaskSpec, TaskState
from . import statements as q
from .connection import BULK_CHUNK, _blob
from .store import TaskEvent


class ExecutorOps:
    """Mixed into SqlStore."""

    def create_tasks(self, specs: Sequence[TaskSpec]) -> list[int]:
        """Store tasks in one transaction; returns their ids in order."""
        if not specs:
            return []
        now = self.clock()
        insert = self._stmt("insert_tasks", True, True)  # every column's converter
        shared: dict[int, dict[str, Any]] = {}  # per TaskOptions object: map() shares one
        rows = []
        any_cached = any(spec.cache_key is not None for spec in specs)
        any_staged = any(spec.options.stage_in or spec.options.stage_out for spec in specs)
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
                    # Run-time estimates (estimates.py): the kind= label, and the timeout
                    # as the expected run time until a claim fills in the kind's estimate.
                    "label": o.kind,
                    "expected_s": o.timeout or 0.0,
                    "max_retries": o.max_retries,
                    "num_restarts": 0,
                    "auto_timeout_retry": o.auto_timeout_retry,
                    "priority": o.priority,
                    "kill_requested": False,
                    "workdir": o.workdir,
                    "created_at": now,
                    "updated_at": now,
                }
                if any_staged:  # only then a column of the insert (lifecycle.insert_tasks)
                    common["staging"] = _staging_json(insert, o)
            if spec.depends_on:
                state = TaskState.AWAITING_PARENTS
            elif o.stage_in and spec.state is TaskState.READY:
                state = TaskState.AWAITING_STAGE_IN  # a launcher fetches its inputs first
            else:
                state = spec.state
            own = {
                "id": None, "name": spec.name, "kind": spec.kind, "state": state.value,
                "payload": spec.payload, "parent_id": spec.parent_id,
                "num_parents": len(set(spec.depends_on)),
                "allow_parent_failure": o.allow_parent_failure}
            if any_cached:
                own["cache_key"], own["cached_from"] = spec.cache_key, None
            rows.append((common, own))
        with self._raw_write() as cur:
            ids = self._allocate_task_ids(cur, len(rows))
            for (_common, own), task_id in zip(rows, ids):
                own["id"] = task_id
            follows: list[tuple[int, int]] = []
            hit_ids: set[int] = set()
            if any_cached:  # memoization (cache_ops.py): hits, followers, misses
                follows, history, hit_ids = self._plan_cached(cur, specs, rows, now)
            # No history row for creation: ``created_at`` records it, and leaving it out
            # saves two of the five pages each single submit wrote to the WAL.
            self._insert_tasks(cur, rows, any_cached, any_staged)
            self._after_create(cur)
            if any_cached:
                self._write_cache_entries(cur, now)
                if hit_ids:
                    self._copy_cached_results(cur, sorted(hit_ids))
                self._insert_history(cur, history)
            edges = [{"child_id": i, "parent_id": p}
                     for i, s in zip(ids, specs) if i not in hit_ids
                     for p in sorted(set(s.depends_on))]
            edges += [{"child_id": c, "parent_id": p} for c, p in follows]
            if edges:
                self._exec_many(cur, "insert_dependencies", edges)
                # Parents may have finished already: release what can go now.
                self._release(cur, sorted({e["child_id"] for e in edges}), now)
        return ids

    def cancel(self, task_ids: Sequence[int]) -> list[int]:
        """Cancel tasks no launcher holds; returns the ids that were cancelled."""
        if not task_ids:
            return []
        now = self.clock()
        done: list[int] = []
        with self._raw_write() as cur:
            for ids in _chunks(list(task_ids)):
                rows = self._exec_once(cur, q.lock_cancellable(ids), {}).fetchall()
                if not rows:
                    continue
                chunk_done = [r[0] for r in rows]
                self._exec_once(cur, q.set_state(chunk_done),
                                {"state": TaskState.CANCELLED.value, "now": now})
                self._insert_history(cur, [
                    {"task_id": r[0], "from_state": r[1], "to_state": TaskState.CANCELLED.value,
                     "at": now, "message": "cancelled"} for r in rows
                ])
                done += chunk_done
            if done:
                self._release_children_of(cur, done, now)
        return done

    def kill(self, task_ids: Sequence[int]) -> list[int]:
        """Kill tasks: a pending one is cancelled now; a running one is flagged, and its
        launcher stops it (KILLED) within a poll interval.  Returns the ids affected."""
        cancelled = self.cancel(task_ids)
        gone = set(cancelled)
        rest = [i for i in task_ids if i not in gone]
        if not rest:
            return cancelled
        flagged: list[int] = []
        with self._raw_write() as cur:
            now = self.clock()
            for ids in _chunks(rest):
                flagged += [r[0] for r in self._exec_once(cur, q.request_kill(ids),
                                                          {"now": now})]
            if flagged:
                self._announce_claimable(cur)  # wakes launchers, which also look for kills
        return sorted(cancelled + flagged)

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


def _staging_json(insert: Any, options: Any) -> Any:
    """The staging column of tasks with ``options``, encoded (None: no staging)."""
    if not (options.stage_in or options.stage_out):
        return None
    from ..staging import specs_to_json

    return insert.processors["staging"](specs_to_json(options.stage_in, options.stage_out))


#: Ids per IN list: under SQLite's limit of bound variables (32,766) and PostgreSQL's
#: (65,535), so that cancelling a million futures at shutdown is a few statements.
ID_CHUNK = 10_000


def _chunks(ids: list[int]) -> list[list[int]]:
    return [ids[i:i + ID_CHUNK] for i in range(0, len(ids), ID_CHUNK)]
