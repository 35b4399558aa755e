"""Memoization in the store: a submission with a cache key is answered from the task that
last computed the same key (bf_cache), follows that task while it runs, or runs and becomes
the one answering.

    create_tasks(specs with cache_key) ── in the transaction that stores them:
        entry's task JOB_FINISHED      -> stored JOB_FINISHED with its result (a hit)
        entry's task still in flight   -> AWAITING_PARENTS after it, cached_from = it
        no entry, or its task failed   -> stored to run (a miss): the entry points to it
        cache="refresh"                -> stored to run, and the entry points to it
    a followed task ends (dependencies.py): succeeded -> its followers take its result;
        else the first follower runs on its own, and the others follow that one

Only successes are reused: a failed, killed or cancelled task answers nobody.  Submitters of
the same keys are serialized (PostgreSQL: an advisory lock per key; SQLite has one writer),
so two identical submissions run once whoever makes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..tasks import TaskSpec, TaskState
from . import statements as q
from .connection import BULK_CHUNK

_FAILED = frozenset(s.value for s in (TaskState.FAILED, TaskState.KILLED, TaskState.CANCELLED))


class CacheOps:
    """Mixed into SqlStore."""

    def _lock_cache_keys(self, cur: Any, keys: list[str]) -> None:
        """Dialect hook: serialize transactions that look up the same cache keys."""

    def _plan_cached(self, cur: Any, specs: Sequence[TaskSpec], rows: list[tuple[dict, dict]],
                     now: float) -> tuple[list[tuple[int, int]], list[dict[str, Any]], set[int]]:
        """Decide, inside create_tasks' transaction, what each submission with a cache key
        becomes; updates its row (state, cached_from, num_parents) and the cache index.
        Returns the (follower, leader) dependency edges to add, the history rows, and the
        ids of the hits (stored finished: their own dependencies are not needed)."""
        keyed = [(spec, own) for spec, (_c, own) in zip(specs, rows) if spec.cache_key]
        keys = sorted({spec.cache_key for spec, _own in keyed})
        self._lock_cache_keys(cur, keys)
        entries: dict[str, tuple[int, str]] = {}
        for start in range(0, len(keys), BULK_CHUNK):
            for key, task_id, state in self._exec_once(
                    cur, q.select_cache_entries(keys[start:start + BULK_CHUNK]), {}):
                entries[key] = (task_id, state)
        follow_edges: list[tuple[int, int]] = []
        history: list[dict[str, Any]] = []
        hits: dict[str, int] = {}
        hit_ids: set[int] = set()
        leaders: dict[str, tuple[int, str]] = {}  # entries to (re)write: key -> (id, kind)
        for spec, own in keyed:
            key = spec.cache_key
            entry = entries.get(key)
            if spec.options.cache == "refresh" and key not in leaders:
                entry = None  # runs again, and answers the next ones
            if entry is None or entry[1] in _FAILED:
                entries[key] = (own["id"], own["state"])
                leaders[key] = (own["id"], spec.options.kind or spec.name)
                continue
            leader, state = entry
            own["cached_from"] = leader
            if state == TaskState.JOB_FINISHED.value:
                own["state"] = TaskState.JOB_FINISHED.value
                own["num_parents"] = 0
                hit_ids.add(own["id"])
                hits[key] = hits.get(key, 0) + 1
                history.append({"task_id": own["id"], "from_state": TaskState.CREATED.value,
                                "to_state": TaskState.JOB_FINISHED.value, "at": now,
                                "message": f"cache hit: the result of task {leader}"})
            else:
                # Its own parents stay: should the leader fail, it runs itself and needs them.
                own["state"] = TaskState.AWAITING_PARENTS.value
                own["num_parents"] += 1
                follow_edges.append((own["id"], leader))
                history.append({"task_id": own["id"], "from_state": TaskState.CREATED.value,
                                "to_state": TaskState.AWAITING_PARENTS.value, "at": now,
                                "message": f"follows task {leader} (the same call, in flight: "
                                           "one run for both)"})
        self._cache_writes = (leaders, hits)
        return follow_edges, history, hit_ids

    def _write_cache_entries(self, cur: Any, now: float) -> None:
        """The cache index changes ``_plan_cached`` decided, once the tasks are inserted."""
        leaders, hits = self._cache_writes
        self._cache_writes = ({}, {})
        if leaders:
            keys = sorted(leaders)
            for start in range(0, len(keys), BULK_CHUNK):
                self._exec_once(cur, q.delete_cache_entries(keys[start:start + BULK_CHUNK]),
                                {})
            self._exec_many(cur, "insert_cache_entry", [
                {"key": k, "task_id": i, "kind": kind, "now": now}
                for k, (i, kind) in leaders.items()])
        if hits:
            self._exec_many(cur, "count_cache_hit",
                            [{"key": k, "n": n, "now": now} for k, n in hits.items()])

    def _followers_of(self, cur: Any, ids: list[int]) -> list[tuple[int, Any]]:
        """(id, staging) of the tasks that follow any of ``ids`` and are not among them."""
        gone = set(ids)
        found = []
        for start in range(0, len(ids), BULK_CHUNK):
            found += [tuple(r) for r in self._exec_once(
                cur, q.select_followers_of(ids[start:start + BULK_CHUNK]), {}).fetchall()
                if r[0] not in gone]
        return found

    def _release_orphaned_followers(self, cur: Any, followers: list[tuple[int, Any]],
                                    now: float) -> None:
        """The tasks they followed were deleted: each runs itself (once its own parents, if
        any, have ended)."""
        if not followers:
            return
        self._exec_many(cur, "orphan_follower", [{"b_id": i} for i, _s in followers])
        ids = [i for i, _s in followers]
        with_parents = {r[0] for r in self._exec_once(cur, q.select_parents_of(ids), {})}
        self._release(cur, sorted(with_parents), now)
        alone = [(i, st) for i, st in followers if i not in with_parents]
        moves = [(i, self._runnable(st)) for i, st in alone]
        self._exec_many(cur, "release_child", [
            {"b_id": i, "b_state": state.value, "b_error": None, "b_now": now}
            for i, state in moves])
        self._insert_history(cur, [
            {"task_id": i, "from_state": TaskState.AWAITING_PARENTS.value,
             "to_state": state.value, "at": now,
             "message": "the task it followed was deleted: runs itself"} for i, state in moves])
        if moves:
            self._announce_claimable(cur)

    def _copy_cached_results(self, cur: Any, ids: list[int]) -> None:
        for start in range(0, len(ids), BULK_CHUNK):
            self._exec_once(cur, q.copy_cached_results(ids[start:start + BULK_CHUNK]), {})

    # -- the cache, for the CLI and users ------------------------------------------------------

    def cache_entries(self, *, kind: str | None = None, older_than: float | None = None
                      ) -> list[dict[str, Any]]:
        """The cache index, newest first: key, kind, task id and state, when made, hits,
        size of the stored result (bytes)."""
        values = _entry_values(kind, older_than, self.clock())
        names = ("key", "kind", "task_id", "state", "created_at", "hits", "last_hit_at",
                 "result_bytes")
        with self._raw_read() as cur:
            return [dict(zip(names, r)) for r in self._exec(
                cur, "select_cache_list", values, kind is not None, older_than is not None)]

    def clear_cache(self, *, kind: str | None = None, older_than: float | None = None) -> int:
        """Forget cached results (of ``kind``; made more than ``older_than`` seconds ago):
        later submissions run again.  The tasks and their results stay.  Returns how many
        entries were dropped."""
        values = _entry_values(kind, older_than, self.clock())
        with self._raw_write() as cur:
            return self._exec(cur, "clear_cache", values, kind is not None,
                              older_than is not None).rowcount

    def cache_counts(self) -> dict[str, int]:
        """Submissions with cache=: hits (answered from the store), following (waiting for an
        identical task in flight), misses (ran, or will run, themselves)."""
        with self._raw_read() as cur:
            hits, following, misses = self._exec(cur, "cache_counts", {}).fetchone()
        return {"hits": hits or 0, "following": following or 0, "misses": misses or 0}

    def cache_keys(self, task_ids: Sequence[int]) -> dict[int, str | None]:
        """The cache key of each task (None: submitted without cache=)."""
        found: dict[int, str | None] = {}
        ids = list(task_ids)
        with self._raw_read() as cur:
            for start in range(0, len(ids), BULK_CHUNK):
                found.update(self._exec_once(
                    cur, q.select_cache_keys(ids[start:start + BULK_CHUNK]), {}).fetchall())
        return found


def _entry_values(kind: str | None, older_than: float | None, now: float) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if kind is not None:
        values["kind"] = kind
    if older_than is not None:
        values["before"] = now - older_than
    return values
