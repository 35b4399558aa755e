"""Simulated execution (``launcher --simulate``): a simulated campaign leaves the rows a real
one of the same shape leaves, with no process started per run."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading

import pytest

from balsam_futures.backends import open_store
from balsam_futures.launcher.config import LauncherConfig
from balsam_futures.launcher.nodes import NodeSpec
from balsam_futures.launcher.pilot import Pilot
from balsam_futures.launcher.simulate import SimulatedPool, simulated_run
from balsam_futures.serialization import dump_call, dump_callable, load_exception
from balsam_futures.tasks import Resources, TaskOptions, TaskSpec, TaskState

pytestmark = pytest.mark.timeout(120)

NODES = [NodeSpec(f"vnode{i}", 2, ("0", "1")) for i in range(2)]


def _specs(simulated: bool) -> list[TaskSpec]:
    """Four tasks that return their number, two that fail once each and then for good, and
    one that takes a whole node: the same in both campaigns, save for how each runs."""
    specs = []
    for i in range(4):
        data = {"sim_seconds": 0.01 * i, "sim_result": i} if simulated else {}
        specs.append(TaskSpec("python", dump_call(dump_callable(abs), (i,), {}),
                              TaskOptions(data=data), name=f"ok{i}"))
    for i in range(2):
        data = {"sim_fail": "invalid literal"} if simulated else {}
        specs.append(TaskSpec("python", dump_call(dump_callable(int), ("x",), {}),
                              TaskOptions(data=data, max_retries=1), name=f"bad{i}"))
    whole = Resources(ranks_per_node=2)
    specs.append(TaskSpec("python", dump_call(dump_callable(abs), (7,), {}),
                          TaskOptions(data={"sim_result": 7} if simulated else {},
                                      resources=whole), name="whole"))
    return specs


def _campaign(tmp_path, name: str, simulated: bool) -> dict:
    url = f"sqlite:///{tmp_path}/{name}.db"
    store = open_store(url)
    ids = store.create_tasks(_specs(simulated))
    cfg = LauncherConfig(num_workers=4, idle_timeout=0.3, nodes=NODES, local_nodes=True,
                         agents=False, simulate=simulated,
                         worker_env={"PYTHONPATH": os.pathsep.join(sys.path)})
    pilot = Pilot(url, cfg, store=store)
    thread = threading.Thread(target=pilot.run)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    events = {e.task_id: e for e in store.task_outcomes(ids)}
    runs: dict[int, list] = {}
    for run in store.list_runs():
        runs.setdefault(run["task_id"], []).append(
            (run["num_nodes"], run["cores"], run["node_share"], run["state"], run["launcher_id"]))
    out = {
        "finished": pilot.finished,
        "states": [events[i].state for i in ids],
        "results": [pickle.loads(events[i].result) if events[i].result else None for i in ids],
        "errors": [type(load_exception(events[i].error)).__name__ if events[i].error else None
                   for i in ids],
        "history": [[h["to_state"] for h in store.history(i)] for i in ids],
        "runs": [sorted(runs.get(i, [])) for i in ids],
        "launcher": store.list_launchers()[0]["state"],
    }
    store.close()
    return out


def test_a_simulated_campaign_leaves_the_rows_of_a_real_one(tmp_path):
    real = _campaign(tmp_path, "real", simulated=False)
    sim = _campaign(tmp_path, "sim", simulated=True)
    assert real["results"][:4] == [0, 1, 2, 3] and real["results"][6] == 7
    for key in ("finished", "states", "results", "history", "runs", "launcher"):
        assert sim[key] == real[key], key
    assert real["errors"][4:6] == ["ValueError", "ValueError"]
    assert sim["errors"][4:6] == ["RuntimeError", "RuntimeError"]  # a simulated failure
    assert sim["history"][4] == ["CLAIMED", "RUNNING", "RUN_ERROR", "RESTART_READY", "CLAIMED",
                                 "RUNNING", "RUN_ERROR", "FAILED"]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _task(task_id: int, data: dict, wall_time_s: float | None = None):
    from balsam_futures.backends.store import ClaimedTask

    return ClaimedTask(task_id, "t", "python", b"", {}, data, 1, 1, 1, 0, 0, wall_time_s, 0, 0,
                       True, None)


def test_runs_end_on_the_pool_clock_in_end_order_and_past_their_timeout():
    clock = _Clock()
    pool = SimulatedPool(3, launcher_id=1, clock=clock)
    try:
        assert pool.dispatch(_task(1, {"sim_seconds": 5, "sim_result": "a"}), {}, None)
        assert pool.dispatch(_task(2, {"sim_seconds": 2}), {}, None)
        assert pool.dispatch(_task(3, {"sim_seconds": 60}, wall_time_s=10), {}, None)
        assert not pool.dispatch(_task(4, {}), {}, None)  # three slots
        assert pool.capacity() == 0 and pool.next_deadline() == 102.0
        assert pool.collect(0)[0] == []
        clock.now = 105.0
        done = pool.collect(0)[0]
        assert [o.task_id for o in done] == [2, 1]
        assert pickle.loads(done[1].result) == "a"
        assert done[0].path == (TaskState.RUN_DONE, TaskState.JOB_FINISHED)
        clock.now = 110.0
        (late,) = pool.collect(0)[0]
        assert late.path[0] is TaskState.RUN_TIMEOUT
        assert pool.idle()
    finally:
        pool.stop()


def test_a_killed_run_ends_now_and_its_timer_is_dropped():
    clock = _Clock()
    pool = SimulatedPool(2, launcher_id=1, clock=clock)
    pool.dispatch(_task(1, {"sim_seconds": 5}), {}, None)
    (killed,) = pool.kill({1})
    assert killed.path[0] is TaskState.KILLED
    assert pool.next_deadline() is None and pool.idle()
    pool.stop()


@pytest.mark.parametrize("bad", [-1, "ten", True, float("nan")])
def test_a_bad_duration_is_refused_naming_the_field(bad):
    with pytest.raises(ValueError, match="sim_seconds"):
        simulated_run({"sim_seconds": bad})
    clock = _Clock()
    pool = SimulatedPool(1, launcher_id=1, clock=clock)
    pool.dispatch(_task(1, {"sim_seconds": bad}), {}, None)
    (failed,) = pool.collect(0)[0]  # fails alone, at once, with the reason
    assert failed.path[0] is TaskState.RUN_ERROR
    assert "sim_seconds" in str(load_exception(failed.error))
    pool.stop()


def test_the_command_line_runs_a_simulated_launcher(tmp_path):
    site = tmp_path / "site"
    url = f"sqlite:///{tmp_path}/cli.db"
    store = open_store(url)
    ids = store.create_tasks([TaskSpec("python", b"not a payload", TaskOptions(
        data={"sim_seconds": 0.05, "sim_result": [1, 2]},
        resources=Resources(gpus_per_rank=1)), name="g") for _ in range(16)])
    store.close()
    proc = subprocess.run(
        [sys.executable, "-m", "balsam_futures", "launcher", "--site", str(site), "--db-url",
         url, "--simulate", "--nodes", "2", "--cores-per-node", "4", "--gpus-per-node", "4",
         "--idle-timeout", "0.5"], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    assert "launcher finished 16 task(s)" in proc.stdout
    store = open_store(url)
    try:
        events = store.task_outcomes(ids)
        assert {e.state for e in events} == {TaskState.JOB_FINISHED}
        assert all(pickle.loads(e.result) == [1, 2] for e in events)
        gpus = {tuple(r["gpus"][0]) for r in store.list_runs()}
        assert gpus == {("0",), ("1",), ("2",), ("3",)}  # placed on the virtual nodes' GPUs
    finally:
        store.close()
