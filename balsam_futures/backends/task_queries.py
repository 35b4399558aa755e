"""What users and the command line ask of the store (``balsam_futures.query``, ``cli/``):
tasks selected, counted, updated and deleted by filters; rows, histories, counts by state,
launchers and runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..tasks import CLAIMABLE, FINAL, HELD, TaskState, sources
from . import statements as q
from .connection import BULK_CHUNK, _blob
from .statements import task_queries as tq


class TaskQueries:
    """Mixed into SqlStore."""

    def query(self, filters: tuple, order: tuple[str, ...] = (), limit: int | None = None
              ) -> list[dict[str, Any]]:
        """Task rows (without payloads) matching ``filters``: (field, op, value) triples."""
        with self._raw_read() as cur:
            cur = self._exec_once(cur, q.query_select(filters, order, limit), {})
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
        for row in rows:
            row["tags"] = self._decode_json(row["tags"])
            row["data"] = self._decode_json(row["data"])
            if row.get("staging") is not None:
                row["staging"] = self._decode_json(row["staging"])
            for key in ("result", "error"):
                row[key] = _blob(row[key])
        return rows

    def histories(self, task_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
        """The state changes of each of tasks ``task_ids``, oldest first, as ``history()``
        gives them for one task: one query per ``BULK_CHUNK`` ids.  Tasks with no change
        (or none at all) are left out."""
        out: dict[int, list[dict[str, Any]]] = {}
        ids = sorted(set(task_ids))
        with self._raw_read() as cur:
            for start in range(0, len(ids), BULK_CHUNK):
                cur = self._exec_once(cur, q.select_histories(ids[start:start + BULK_CHUNK]),
                                      {})
                names = [d[0] for d in cur.description][1:]
                for task_id, *values in cur.fetchall():
                    out.setdefault(task_id, []).append(dict(zip(names, values)))
        return out

    def query_count_by_state(self, filters: tuple) -> dict[str, int]:
        with self._raw_read() as cur:
            return dict(self._exec_once(cur, q.query_count_by_state(filters), {}).fetchall())

    def query_update(self, filters: tuple, values: dict[str, Any], message: str) -> list[int]:
        """Update the matching tasks; a new ``state`` applies only to tasks allowed to move
        to it (see TRANSITIONS), with a history row each.  Returns the ids changed."""
        now = self.clock()
        values = dict(values)
        state = values.pop("state", None)
        with self._raw_write() as cur:
            # Never from a state a launcher holds: it would go on running the task while
            # another launcher claims it.
            allowed = sources(state) - HELD if state is not None else None
            rows = self._exec_once(cur, q.query_lock_ids(filters, allowed), {}).fetchall()
            ids = [r[0] for r in rows]
            if ids and state is not None:
                values["state"] = state.value
                if state in CLAIMABLE:
                    # Claimable again: no launcher holds it (READY too, since CLAIMED->READY).
                    values["launcher_id"] = None
            if ids and values:
                for start in range(0, len(ids), BULK_CHUNK):
                    self._exec_once(cur, q.query_update(ids[start:start + BULK_CHUNK], values),
                                    {"now": now})
            if ids and state is not None:
                self._insert_history(cur, [
                    {"task_id": r[0], "from_state": r[1], "to_state": state.value, "at": now,
                     "message": message} for r in rows])
                if state in CLAIMABLE:
                    self._announce_claimable(cur)
                if state in FINAL:
                    self._release_children_of(cur, ids, now)
        return ids

    def query_delete(self, filters: tuple, *, running: bool = False) -> list[int]:
        """Delete the matching tasks with their history; those a launcher holds (CLAIMED or
        RUNNING) only if ``running``."""
        states = None if running else [s for s in TaskState if s not in HELD]
        with self._raw_write() as cur:
            ids = [r[0] for r in
                   self._exec_once(cur, q.query_lock_ids(filters, states), {}).fetchall()]
            followers = self._followers_of(cur, ids) if ids else []  # cache_ops.py
            for start in range(0, len(ids), BULK_CHUNK):
                self._exec_once(cur, q.delete_tasks(ids[start:start + BULK_CHUNK]), {})
            self._release_orphaned_followers(cur, followers, self.clock())
            if ids:
                # Watchers compare this count to tell that futures may have lost their rows.
                self._exec(cur, "count_deletions", {"n": len(ids)})
        return ids

    def deletions(self) -> int:
        """How many tasks were ever deleted from this store (a watcher's cheap probe)."""
        with self._raw_read() as cur:
            row = self._exec(cur, "select_deletions", {}).fetchone()
        return int(row[0]) if row else 0

    def get_tasks(self, task_ids: Sequence[int]) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(q.select_task_rows(list(task_ids))).all()
        by_id = {r.id: dict(r._mapping) for r in rows}
        return [by_id[i] for i in task_ids if i in by_id]

    def history(self, task_id: int) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [dict(r._mapping) for r in conn.execute(q.select_history(task_id))]

    def count_by_state(self) -> dict[str, int]:
        with self._read() as conn:
            return dict(conn.execute(q.count_by_state()).all())

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
        # Most runs share a few placements: decode each distinct JSON text once (a fresh
        # copy per run, so a caller may change its own).
        decoded: dict[Any, Any] = {}
        for r in rows:
            run = dict(zip(names, r))
            for key in ("hosts", "gpus"):
                raw = run[key]
                if not isinstance(raw, str):  # a driver that decodes JSON itself
                    run[key] = self._decode_json(raw)
                    continue
                if raw not in decoded:
                    decoded[raw] = self._decode_json(raw)
                value = decoded[raw]
                run[key] = [list(v) if isinstance(v, list) else v for v in value]
            out.append(run)
        return out

    def task_payload(self, task_id: int) -> tuple[str, bytes] | None:
        """(kind, payload) of task ``task_id``, None if there is no such task."""
        with self._raw_read() as cur:
            row = self._exec_once(cur, tq.select_payload(task_id), {}).fetchone()
        return None if row is None else (row[0], _blob(row[1]))

    def failed_page(self, filters: tuple, after: int, limit: int) -> list[dict[str, Any]]:
        """FAILED tasks matching ``filters`` with id > ``after``, the first ``limit`` by id:
        id, error (packed), updated_at.  The failure triage reads them page by page."""
        with self._raw_read() as cur:
            rows = self._exec_once(cur, tq.query_failed_page(filters, limit),
                                   {"after": after}).fetchall()
        return [{"id": r[0], "error": _blob(r[1]), "updated_at": r[2]} for r in rows]

    def slowest_names(self, since: float, limit: int = 10) -> list[dict[str, Any]]:
        """Task names whose runs that ended since ``since`` took longest on average: name,
        runs, mean_s, max_s."""
        with self._raw_read() as cur:
            rows = self._exec_once(cur, tq.select_slowest_names(),
                                   {"since": since, "limit": limit}).fetchall()
        return [{"name": r[0], "runs": r[1], "mean_s": r[2], "max_s": r[3]} for r in rows]
