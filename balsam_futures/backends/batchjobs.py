"""The store side of batch jobs (``bf_batch_jobs``) and the backlog the queue service reads.

States are plain strings here; their meaning and allowed moves live in
``balsam_futures.schedulers.base`` (``BatchJobState``, ``BATCH_TRANSITIONS``), whose callers
pass the ``from_states`` that guard each update.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from . import statements as q

_JSON_COLUMNS = ("filter_tags", "options", "status_info")


@dataclass(frozen=True)
class Backlog:
    """Claimable tasks that carry a tag filter, as the queue service sizes jobs by them."""

    #: Claimable tasks (READY or RESTART_READY).
    tasks: int
    #: Nodes needed by the tasks with a node_packing_count: num_nodes / node_packing_count
    #: each.
    node_demand: float
    #: Cores needed by the tasks without one (node_packing_count 0: they share nodes while
    #: cores go round): num_nodes * ranks_per_node * threads_per_rank each.
    core_demand: int
    #: Nodes of the largest task: a job smaller than this cannot run it.
    max_task_nodes: int
    #: Claimable tasks left out of the above: larger than the ``max_nodes`` asked about.
    too_large: int = 0

    def nodes_needed(self, cores_per_node: int) -> int:
        """Whole nodes for the backlog, on nodes of ``cores_per_node`` cores (0 if none)."""
        if not self.tasks:
            return 0
        nodes = self.node_demand + self.core_demand / cores_per_node
        return max(math.ceil(nodes - 1e-9), self.max_task_nodes, 1)


class BatchJobs:
    """Mixed into SqlStore."""

    def create_batch_job(self, values: Mapping[str, Any]) -> int:
        """Store a new batch job; returns its id.  ``created_at``/``updated_at`` are set
        here; the other columns come from ``values`` (missing ones are NULL)."""
        now = self.clock()
        row = {c: None for c in q.BATCH_JOB_INSERT_COLUMNS}
        row.update(values)
        row.update(created_at=now, updated_at=now)
        with self._raw_write() as cur:
            return self._exec(cur, "insert_batch_job", row).fetchone()[0]

    def batch_jobs(self, *, ids: Iterable[int] | None = None,
                   states: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Batch job rows, oldest first (all, or those with ``ids`` and/or in ``states``)."""
        id_list = None if ids is None else sorted(set(ids))
        state_key = None if states is None else tuple(sorted(set(states)))
        if id_list == [] or state_key == ():
            return []
        with self._raw_read() as cur:
            if id_list is None:
                cur = self._exec(cur, "select_batch_jobs", {}, None, state_key)
            else:  # compiled for this call: IN lists of every length would fill the cache
                cur = self._exec_once(cur, q.select_batch_jobs(id_list, state_key), {})
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
        for row in rows:
            for key in _JSON_COLUMNS:
                row[key] = self._decode_json(row[key])
        return rows

    def update_batch_job(self, job_id: int, values: Mapping[str, Any], *,
                         from_states: Iterable[str] | None = None) -> bool:
        """Set ``values`` on batch job ``job_id`` if its state is in ``from_states`` (any
        state when None); returns whether the row was changed."""
        values = {**values, "updated_at": self.clock()}
        columns = tuple(sorted(values))
        guard = None if from_states is None else tuple(sorted(set(from_states)))
        with self._raw_write() as cur:
            self._exec(cur, "update_batch_job",
                       {"b_id": job_id, **{f"v_{c}": values[c] for c in columns}},
                       columns, guard)
            return cur.rowcount == 1

    def backlog(self, tags: Mapping[str, str] | None = None, *,
                max_nodes: int | None = None) -> Backlog:
        """The claimable tasks carrying every one of ``tags``, summed in one query; with
        ``max_nodes``, tasks of more nodes are only counted (``too_large``)."""
        with self._raw_read() as cur:
            count, nodes, cores, largest, too_large = self._exec(
                cur, "backlog_summary", {}, tuple(sorted((tags or {}).items())),
                max_nodes).fetchone()
        return Backlog(int(count), float(nodes or 0), int(cores or 0), int(largest or 0),
                       int(too_large or 0))
