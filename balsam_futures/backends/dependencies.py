"""Releasing tasks that wait for others (AWAITING_PARENTS), in the store's transactions."""

from __future__ import annotations

from typing import Any

from ..tasks import TaskState
from . import statements as q

_PARENT_FAILED = frozenset(s.value for s in (TaskState.FAILED, TaskState.KILLED,
                                             TaskState.CANCELLED))
_PARENT_ENDED = _PARENT_FAILED | {TaskState.JOB_FINISHED.value}


class Dependencies:
    """Mixed into SqlStore: runs inside its write transactions (``cur``)."""


    def _release_children_of(self, cur: Any, parent_ids: list[int], now: float) -> None:
        if parent_ids and self._any_dependencies(cur):
            children = [r[0] for r in self._exec_once(cur, q.select_children_of(parent_ids), {})]
            if children:
                self._release(cur, children, now)

    def _any_dependencies(self, cur: Any) -> bool:
        """Whether any task in the store depends on another.  Until one does, finished tasks
        have no children to release, and the per-call IN-list query (compiled each time) is
        skipped: it was a quarter of the store thread's time per no-op task.  Once true it
        stays true for this store object."""
        if not getattr(self, "_has_dependencies", False):
            self._has_dependencies = self._exec(cur, "any_dependency", {}).fetchone() is not None
        return self._has_dependencies

    def _release(self, cur: Any, child_ids: list[int], now: float) -> None:
        """Move children whose parents have all ended out of AWAITING_PARENTS: to READY, or
        to FAILED (with a DependencyError naming the parent) when a parent did not finish
        and the child does not allow that.  Failures cascade to grandchildren."""
        from ..errors import DependencyError
        from ..serialization import dump_exception

        while child_ids:
            edges: dict[int, list[tuple]] = {}
            for row in self._exec_once(cur, q.select_parents_of(child_ids), {}).fetchall():
                edges.setdefault(row[0], []).append(row)
            moves, failed, finished = [], [], []
            for child, rows in edges.items():
                if rows[0][1] != TaskState.AWAITING_PARENTS.value:
                    continue
                leader = rows[0][5]
                if leader is not None:  # it follows an identical task (cache_ops.py)
                    state = next((r[4] for r in rows if r[3] == leader), None)
                    if state == TaskState.JOB_FINISHED.value:
                        moves.append((child, TaskState.JOB_FINISHED, None,
                                      f"cache hit: the result of task {leader}, which it "
                                      "followed"))
                        finished.append(child)
                        continue
                    if state is not None and state not in _PARENT_FAILED:
                        continue  # still in flight: keep waiting for it
                    # It did not succeed (or was deleted): this one runs itself.
                    self._detach_follower(cur, child, leader, rows[0][6])
                    own_rows = [r for r in rows if r[3] != leader]
                    if not own_rows:
                        moves.append((child, self._runnable(rows[0][7]), None,
                                      f"task {leader}, which it followed, ended "
                                      f"{state or 'deleted'}: runs itself"))
                        continue
                    rows = own_rows
                allow = bool(rows[0][2])
                bad = [(r[3], r[4]) for r in rows if r[4] in _PARENT_FAILED]
                if bad and not allow:
                    parent, state = bad[0]
                    err = DependencyError(f"task {child} did not run: the task it depends on, "
                                          f"{parent}, ended {state}", task_id=child,
                                          parent_id=parent)
                    moves.append((child, TaskState.FAILED,
                                  dump_exception(err, f"Task {child} (dependency check)"),
                                  f"parent {parent} ended {state}"))
                    failed.append(child)
                elif all(r[4] in _PARENT_ENDED for r in rows):
                    moves.append((child, self._runnable(rows[0][7]), None, "parents finished"))
            if not moves:
                return
            self._exec_many(cur, "release_child", [
                {"b_id": c, "b_state": st.value, "b_error": err, "b_now": now}
                for c, st, err, _m in moves if st is not TaskState.JOB_FINISHED])
            self._exec_many(cur, "finish_follower",
                            [{"b_id": c, "b_now": now} for c in finished])
            self._insert_history(cur, [
                {"task_id": c, "from_state": TaskState.AWAITING_PARENTS.value,
                 "to_state": st.value, "at": now, "message": m} for c, st, _e, m in moves])
            if any(st is TaskState.READY for _c, st, _e, _m in moves):
                self._announce_claimable(cur)
            ended = failed + finished  # their own children may go now
            child_ids = ([r[0] for r in self._exec_once(cur, q.select_children_of(ended), {})]
                         if ended else [])

    def _runnable(self, staging: Any) -> TaskState:
        """Where a released child goes: READY, or AWAITING_STAGE_IN if it has inputs to
        fetch (``staging``: its staging column)."""
        staging = self._decode_json(staging)
        return TaskState.AWAITING_STAGE_IN if staging and staging.get("in") else TaskState.READY

    def _detach_follower(self, cur: Any, child: int, leader: int, key: str | None) -> None:
        """``child`` followed ``leader``, which did not succeed: it runs itself, and the
        submissions of the same call that come later follow it instead."""
        values = {"b_id": child, "b_parent": leader}
        self._exec(cur, "delete_follow_edge", values)
        self._exec(cur, "detach_follower", values)
        if key is not None:
            self._exec(cur, "move_cache_entry", {**values, "key": key})
