"""Short work queued inside busy workers (workers/pool.py): a worker whose runs of a kind end
quickly may hold the next such task, which it begins as it sends its result; that task counts
as started only then, a kill of it is carried out when it begins, and a task queued behind a
killed run goes back to the launcher unrun.  Real worker processes; a real store and launcher
for the end-to-end check."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from balsam_futures.backends import open_store
from balsam_futures.backends.store import ClaimedTask, TaskOutcome
from balsam_futures.launcher.config import LauncherConfig
from balsam_futures.launcher.pilot import Pilot
from balsam_futures.launcher.workers import WorkerPool
from balsam_futures.launcher.workers import pool as pool_module
from balsam_futures.serialization import dump_call, dump_callable, load_result
from balsam_futures.tasks import TaskOptions, TaskSpec, TaskState

pytestmark = pytest.mark.timeout(60)
S = TaskState


def nap(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def _python_path() -> str:
    return os.pathsep.join(p for p in sys.path if p)


def task(task_id: int, seconds: float = 0.0, name: str = "nap", **fields) -> ClaimedTask:
    payload = dump_call(dump_callable(nap), (seconds, task_id), {})
    values = dict(num_nodes=1, ranks_per_node=1, threads_per_rank=1, gpus_per_rank=0,
                  node_packing_count=1, wall_time_s=None, max_retries=0, num_restarts=0,
                  auto_timeout_retry=True, workdir=None)
    values.update(fields)
    return ClaimedTask(task_id, name, "python", payload, {}, {}, **values)


@pytest.fixture
def pool():
    p = WorkerPool(1, launcher_id=1, env={**os.environ, "PYTHONPATH": _python_path()})
    p.start()
    yield p
    p.stop()


def collect_until(p: WorkerPool, count: int) -> tuple[list[TaskOutcome], list[ClaimedTask]]:
    outcomes: list[TaskOutcome] = []
    handback: list[ClaimedTask] = []
    deadline = time.monotonic() + 30
    while len(outcomes) < count and time.monotonic() < deadline:
        got, back, _ = p.collect(0.5)
        outcomes += got
        handback += back
    return outcomes, handback


def run_one(p: WorkerPool, t: ClaimedTask) -> TaskOutcome:
    assert p.dispatch(t, {}, None)
    (outcome,), _ = collect_until(p, 1)
    return outcome


def warm(p: WorkerPool, name: str = "nap", first_id: int = 100) -> int:
    """Quick runs of ``name`` until the pool calls it short (the first run of a fresh worker
    may wait for its start-up); returns how many it took."""
    for k in range(3 * pool_module.PREFETCH_AFTER):
        if p.short(task(0, name=name)):
            return k
        assert run_one(p, task(first_id + k, name=name)).path[0] is S.RUN_DONE
    raise AssertionError(f"{name} never counted as short")


def queue_behind(p: WorkerPool, head_seconds: float, queued_seconds: float = 0.0) -> None:
    """Warm ``p`` up, start task 1 (``head_seconds`` long) and queue task 2 behind it."""
    warm(p)
    head = task(1, seconds=head_seconds)
    assert p.dispatch(head, {}, None)
    queued = task(2, seconds=queued_seconds)
    assert p.prefetch(p.prefetch_target(queued), head.id, queued, {})


def test_a_kind_is_short_only_after_enough_quick_runs_in_a_row(pool):
    t = task(1)
    assert not pool.short(t)
    assert warm(pool) >= pool_module.PREFETCH_AFTER
    assert pool.short(t)
    # One run longer than PREFETCH_MAX_S starts the count again.
    run_one(pool, task(2, seconds=pool_module.PREFETCH_MAX_S + 0.05))
    assert not pool.short(t)


def test_nothing_is_queued_behind_work_not_known_to_be_short(pool):
    assert pool.dispatch(task(1), {}, None)
    assert pool.prefetch_target(task(2)) is None  # the kind has no quick runs yet
    collect_until(pool, 1)
    warm(pool)
    assert pool.dispatch(task(3, name="other"), {}, None)
    assert pool.prefetch_target(task(4)) is None  # the run ahead is of an unknown kind
    assert pool.prefetch_target(task(5, threads_per_rank=2)) is None
    collect_until(pool, 1)


def test_queued_task_begins_when_the_run_ahead_ends(pool):
    warm(pool)
    head = task(1, seconds=0.3)
    assert pool.dispatch(head, {}, None)
    w = pool.prefetch_target(task(2))
    assert w is not None and pool.prefetch(w, head.id, task(2), {})
    assert pool.prefetch_target(task(3)) is None  # one queued task a worker, no more
    assert pool.capacity() == 0 and pool.running() == 1
    # Not begun while the run ahead goes on: it is claimed, not running.
    assert pool.collect(0.05)[0] == [] and pool.take_begun() == []
    outcomes, handback = collect_until(pool, 2)
    assert [o.task_id for o in outcomes] == [1, 2] and not handback
    assert [load_result(o.result) for o in outcomes] == [1, 2]
    assert [(ended, t.id) for ended, t in pool.take_begun()] == [(1, 2)]


def test_kill_of_a_queued_task_is_carried_out_when_it_begins(pool):
    queue_behind(pool, head_seconds=0.3, queued_seconds=5.0)
    assert pool.kill({2}) == []  # the run ahead is not touched
    outcomes, _ = collect_until(pool, 2)
    assert [(o.task_id, o.path[0]) for o in outcomes] == [(1, S.RUN_DONE), (2, S.KILLED)]
    assert pool.idle() and pool.capacity() == 1  # a fresh worker took the killed one's place


def test_task_queued_behind_a_killed_run_goes_back_unrun(pool):
    queue_behind(pool, head_seconds=5.0)
    killed = pool.kill({1})
    assert [(o.task_id, o.path[0]) for o in killed] == [(1, S.KILLED)]
    outcomes, handback, _ = pool.collect(0.0)
    assert outcomes == [] and [t.id for t in handback] == [2]
    assert pool.take_begun() == []


def test_tasks_queued_behind_running_ones_are_unfinished_at_stop(pool):
    queue_behind(pool, head_seconds=5.0)
    assert [t.id for t in pool.stop()] == [1, 2]


def test_launcher_queues_short_tasks_and_records_each_start_when_it_began(tmp_path):
    """End to end: a one-worker launcher runs a stream of quick tasks; each run's recorded
    start is at or after the end of the run before it on that worker (a queued task is not
    running while it waits), and every history reads CLAIMED -> RUNNING -> RUN_DONE."""
    url = f"sqlite:///{tmp_path}/balsam.db"
    store = open_store(url)
    specs = [TaskSpec("python", dump_call(dump_callable(nap), (0.005, i), {}), TaskOptions(),
                      name="nap") for i in range(60)]
    ids = store.create_tasks(specs)
    cfg = LauncherConfig(num_workers=1, idle_timeout=0.5,
                         worker_env={"PYTHONPATH": _python_path()})
    pilot = Pilot(url, cfg, store=store)
    queued = []
    real_prefetch = WorkerPool.prefetch

    def counting(self, w, head_id, t, extra):
        ok = real_prefetch(self, w, head_id, t, extra)
        if ok:
            queued.append(t.id)
        return ok

    WorkerPool.prefetch = counting
    try:
        thread = threading.Thread(target=pilot.run)
        thread.start()
        thread.join(30)
    finally:
        WorkerPool.prefetch = real_prefetch
    assert not thread.is_alive() and pilot.finished == 60
    assert len(queued) > 20, queued  # most of the stream went through the queue
    runs = sorted((r["started_at"], r["ended_at"], r["task_id"]) for r in store.list_runs())
    assert len(runs) == 60
    for (_s0, end0, _a), (start1, _e1, b) in zip(runs, runs[1:]):
        assert start1 >= end0 - 1e-6, f"task {b} recorded as started before the run ahead ended"
    for tid in ids:
        states = [h["to_state"] for h in store.history(tid)]
        assert states[:3] == ["CLAIMED", "RUNNING", "RUN_DONE"], (tid, states)
    store.close()


def test_a_queued_task_killed_then_handed_back_ends_killed_unrun(pool):
    queue_behind(pool, head_seconds=5.0)
    assert pool.kill({2}) == []  # queued: to be killed when it begins
    killed = pool.kill({1})  # then the run ahead is killed, and 2 comes back unrun
    outcomes, handback, _ = pool.collect(0.0)
    assert [o.task_id for o in killed] == [1] and handback == []
    assert [(o.task_id, o.path[0], o.message) for o in outcomes] == [
        (2, S.KILLED, "killed before it started")]
