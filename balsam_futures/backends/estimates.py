"""Run-time estimates: learned from finished runs, read by every claim.

    launcher ──exchange──> outcomes: RUN_DONE durations → bf_kinds (per kind: a window of
                           recent durations, its median and 90th percentile)
                           claim: fill expected_s of tasks created since the last claim,
                           then take them widest first, then longest expected first
                           (ix_bf_tasks_order)

A task's kind (its estimate key) is its ``kind=`` option, else its name: a Python task's
default name is the callable's qualified name, a ShellApp's is its ``name`` or its program.
Its expected run time is its kind's 90th percentile, else its timeout, else 0 (unknown,
claimed last within its priority).  New tasks are filled in by the first claim after they
were created, from the bf_meta watermark on: one UPDATE of the new ids per round trip, so a
submit writes nothing more.  When a kind's estimate moves by more than REFRESH_FACTOR, its
claimable tasks are set to the new value.  Everything runs in the launcher's own round trip.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import setting
from ..tasks import TaskState
from . import statements as q
from .store import ClaimOffer, TaskOutcome

log = logging.getLogger(__name__)

#: Durations kept per kind: enough for a steady 90th percentile, small enough to rewrite in
#: every round trip; a sliding window, so a kind whose run time drifts is followed.
RESERVOIR = 64
#: Refresh the claimable tasks of a kind when its estimate moves by more than this factor and
#: by at least REFRESH_MIN_S: each refresh rewrites every claimable task of the kind, so a
#: smaller factor costs writes, a larger one leaves the order stale for longer.
REFRESH_FACTOR = 1.5
#: Sub-second kinds never refresh: their order hardly matters for packing.
REFRESH_MIN_S = 1.0
#: Tasks of a kind refreshed at once, the first in claim order (the rest keep the estimate
#: they had until the kind's next refresh): a bound on the rows one round trip rewrites.
REFRESH_ROWS = 5_000
#: How often at most the estimate of a sub-second kind is written (see _learn).
SHORT_WRITE_S = 1.0
#: Task ids whose expected run times one round trip fills in.
FILL_CHUNK = 20_000


def quantile(values: Sequence[float], q_: float) -> float:
    """The ``q_`` quantile of ``values`` (linear interpolation between order statistics)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q_
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def updated_window(samples: list[float], durations: Sequence[float]) -> list[float]:
    """The window of ``samples`` after ``durations`` ended (oldest dropped first)."""
    return [*samples, *durations][-RESERVOIR:]


def claim_order_key(priority: int, num_nodes: int, expected_s: float, task_id: int,
                    by_submission: bool = False) -> tuple:
    """A task's place in claim order, as ix_bf_tasks_order sorts it: higher priority first,
    then the most nodes, then longest expected run first (0, unknown, last), then
    submission; ``by_submission`` (the starvation guard): priority, then submission.  The
    PostgreSQL claim restores its rows' order with it, and benchmarks/packing.py orders its
    queue with it.

    Widest first: a run of many nodes waits for whole nodes, and left to the end of a
    campaign it runs with nothing narrower left to fill around it (benchmarks/README.md,
    "Claim order from run-time estimates": longest expected first alone measured 95.8-98.5 %
    of the lower bound on mixed MPI and GPU campaigns, widest first 97.2-99.5 %)."""
    if by_submission:
        return (-priority, 0, 0.0, task_id)
    return (-priority, -num_nodes, -(expected_s or 0.0), task_id)


def moved(old: float | None, new: float) -> bool:
    """Whether an estimate moved enough to refresh its tasks' expected run times."""
    old = old or 0.0
    if abs(new - old) < REFRESH_MIN_S:
        return False
    return old <= 0 or not (1 / REFRESH_FACTOR <= new / old <= REFRESH_FACTOR)


@dataclass(frozen=True)
class BacklogWork:
    """The backlog in work, as the queue service sizes jobs by it."""

    #: Node-seconds of the tasks whose run time is expected (estimate or timeout).
    node_seconds: float
    #: Nodes of the tasks whose run time is unknown (each needs its share for a whole job).
    unknown_nodes: float
    #: The longest expected run time among them (0: none known).
    longest_s: float

    def nodes_for(self, wall_time_s: float) -> float:
        """Nodes that would finish this work in ``wall_time_s``."""
        return self.node_seconds / wall_time_s + self.unknown_nodes


class Estimates:
    """Mixed into SqlStore."""

    _estimate_keys: dict[int, str]
    _starvation_s: float | None = None

    @property
    def starvation_s(self) -> float:
        """Seconds a task may wait before it is claimed in submission order."""
        if self._starvation_s is None:
            self._starvation_s = setting("STARVATION_SECONDS")
        return self._starvation_s

    @starvation_s.setter
    def starvation_s(self, value: float) -> None:
        if not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"starvation_s must be a number of seconds > 0, not {value!r}")
        self._starvation_s = float(value)

    # -- claims --------------------------------------------------------------------------

    def _prepare_claim(self, cur: Any, offer: ClaimOffer, now: float) -> ClaimOffer:
        """Before a claim: fill in expected run times of new tasks, and apply the starvation
        guard (returns the offer to claim with)."""
        watermark, newest, oldest, long_kinds = self._exec(
            cur, "claim_probe", {"min_s": REFRESH_MIN_S}).fetchone()
        low = int(watermark or 0)
        # While every kind is sub-second there is nothing worth filling in (their order hardly
        # matters, as for refreshes), and the watermark stays: once a long kind appears, the
        # tasks since are filled FILL_CHUNK at a time.  A stream of short tasks pays the
        # probe alone.
        if long_kinds and newest is not None and newest > low and self._may_fill(cur):
            # At most FILL_CHUNK ids per round trip: a map of a million tasks is filled in
            # over several round trips, none of them long.
            high = min(newest, low + FILL_CHUNK)
            self._exec(cur, "fill_expected", {"lo": low, "hi": high}, self._skip_locked)
            self._exec(cur, "set_watermark", {"hi_text": str(high)})
        if oldest is not None and now - oldest > self.starvation_s:
            return dataclasses.replace(offer, by_submission=True)
        return offer

    @property
    def _skip_locked(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def _may_fill(self, cur: Any) -> bool:
        # PostgreSQL runs launchers' round trips side by side: only one fills at a time, the
        # others claim without waiting for it (their new tasks sort as their timeouts say
        # until then).  SQLite has one writer at a time anyway.
        if self.engine.dialect.name != "postgresql":
            return True
        return bool(self._exec(cur, "pg_try_fill_lock", {}).fetchone()[0])

    def _remember_keys(self, rows: Sequence[tuple], name_at: int, label_at: int) -> None:
        """Keep the estimate key of each claimed task, to learn its run without a read."""
        keys = self.__dict__.setdefault("_estimate_keys", {})
        for r in rows:
            keys[r[0]] = r[label_at] or r[name_at]

    # -- outcomes ------------------------------------------------------------------------

    def _learn(self, cur: Any, outcomes: Sequence[TaskOutcome], now: float) -> None:
        """Add the durations of runs that ended RUN_DONE to their kinds' estimates."""
        done = [o for o in outcomes if o.run is not None and o.path[0] is TaskState.RUN_DONE]
        keys = self.__dict__.setdefault("_estimate_keys", {})
        for o in outcomes:  # runs that failed teach nothing, and their keys are not needed
            if o.path[0] is not TaskState.RUN_DONE:
                keys.pop(o.task_id, None)
        if not done:
            return
        missing = [o.task_id for o in done if o.task_id not in keys]
        if missing:
            # Claimed by another process (or before a restart): one read for all of them.
            keys.update(self._exec_once(cur, q.select_estimate_keys(missing), {}).fetchall())
        durations: dict[str, list[float]] = {}
        for o in done:
            key = keys.pop(o.task_id, None)
            if key is not None:
                durations.setdefault(key, []).append(
                    max(0.0, o.run["ended_at"] - o.run["started_at"]))
        # A sub-second kind written less than SHORT_WRITE_S ago keeps its new durations here
        # until then: a stream of short tasks would otherwise cost two statements per round
        # trip for estimates that change nothing (the order of sub-second kinds hardly
        # matters; see REFRESH_MIN_S).  What is held is at most SHORT_WRITE_S of samples.
        held = self.__dict__.setdefault("_short_kinds", {})
        for key in list(durations):
            last = held.get(key)
            if last is not None and now - last[0] < SHORT_WRITE_S:
                last[1].extend(durations.pop(key))
        # Sorted: two PostgreSQL launchers writing the same kinds lock them in one order.
        for key in sorted(durations):
            if self._skip_locked and not self._exec(
                    cur, "pg_try_kind_lock", {"lock_key": f"bf_kind:{key}"}).fetchone()[0]:
                # Another launcher is writing this kind: keep these durations for the next
                # round trip rather than wait for its whole transaction.
                last = held.setdefault(key, (now - SHORT_WRITE_S, []))
                last[1].extend(durations[key])
                continue
            pending = held.pop(key, (0.0, []))[1]
            row = self._exec(cur, "select_kind", {"key": key}).fetchone()
            count, samples, old = (row[0], json.loads(row[1]), row[2]) if row else (0, [], None)
            durations[key] = pending + durations[key]
            window = updated_window(samples, durations[key])
            p90 = quantile(window, 0.9)
            if p90 < REFRESH_MIN_S:
                held[key] = (now, [])
            self._exec(cur, "upsert_kind", {
                "key": key, "count": count + len(durations[key]),
                "median": quantile(window, 0.5), "p90": p90,
                "samples": json.dumps([round(s, 6) for s in window]), "now": now})
            if moved(old, p90):
                self._exec(cur, "refresh_expected",
                           {"key": key, "new_expected": p90, "limit": REFRESH_ROWS},
                           self._skip_locked)

    # -- reads ---------------------------------------------------------------------------

    def kind_estimates(self) -> list[dict[str, Any]]:
        """Every kind's estimate: key, count, median_s, p90_s, updated_at."""
        with self._raw_read() as cur:
            return [dict(zip(("key", "count", "median_s", "p90_s", "updated_at"), r))
                    for r in self._exec(cur, "select_kinds", {}).fetchall()]

    def backlog_work(self, tags: dict[str, str] | None = None, *, max_nodes: int | None = None,
                     cores_per_node: int = 64) -> BacklogWork:
        """The claimable tasks carrying ``tags`` (of at most ``max_nodes`` nodes) as work: see
        :class:`BacklogWork`; tasks without a packing count are counted in cores, on nodes
        of ``cores_per_node``."""
        with self._raw_read() as cur:
            known, unknown, longest = self._exec(
                cur, "backlog_work", {"cores": float(cores_per_node)},
                tuple(sorted((tags or {}).items())), max_nodes).fetchone()
        return BacklogWork(float(known), float(unknown), float(longest))

    def explain_facts(self, task_id: int) -> dict[str, Any] | None:
        """What ``balsam_futures.explain`` needs about task ``task_id``, in one read
        transaction: the task, its parents (id, state), the live launchers (id, info,
        started_at, heartbeat_at, lease_s) and the claimable tasks ahead of it; None if there
        is no such task."""
        names = ("id", "name", "kind", "state", "priority", "num_nodes", "ranks_per_node",
                 "gpus_per_rank", "tags", "expected_s", "wall_time_s", "launcher_id",
                 "created_at")
        with self._raw_read() as cur:
            row = self._exec(cur, "select_explained_task", {"id": task_id}).fetchone()
            if row is None:
                return None
            task = dict(zip(names, row))
            task["tags"] = self._decode_json(task["tags"])
            parents = [(r[3], r[4]) for r in self._exec_once(
                cur, q.select_parents_of([task_id]), {}).fetchall()]
            live = [{"id": r[0], "info": self._decode_json(r[1]), "started_at": r[2],
                     "heartbeat_at": r[3], "lease_s": r[4]}
                    for r in self._exec(cur, "select_live_launchers", {}).fetchall()]
            ahead = self._exec(cur, "count_ahead", {
                "priority": task["priority"], "nodes": task["num_nodes"],
                "expected": task["expected_s"], "id": task_id}).fetchone()[0]
        return {"task": task, "parents": sorted(parents), "launchers": live,
                "ahead": int(ahead), "now": self.clock()}

    def too_long_tasks(self, max_wall_s: float, tags: dict[str, str] | None = None,
                       limit: int = 10) -> list[tuple[str, int, float]]:
        """Kinds of claimable tasks expected to run longer than ``max_wall_s``: (key, how
        many, shortest expected run time), first ``limit`` kinds."""
        with self._raw_read() as cur:
            return [tuple(r) for r in self._exec(
                cur, "select_too_long", {"max_wall": max_wall_s, "limit": limit},
                tuple(sorted((tags or {}).items()))).fetchall()]
