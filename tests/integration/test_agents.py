"""Per-node agents: one-rank tasks on the other nodes run in warm workers of an agent per node.

A launcher with the local platform's virtual nodes (``--nodes 3 --agents``) plays the head on
local0 and starts agents for local1 and local2 with the real hydra ``mpiexec`` of the ``mpich``
wheel; they all run on this machine, so the tests can see every process.  The execution
profile (``list_runs``) says where each run was placed; the task itself reports the process
that ran it, that process's parent, ``BALSAM_FUTURES_AGENT`` and its GPUs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import alive, wait_for_file

from balsam_futures import Resources, TaskKilled
from balsam_futures.errors import WorkerCrashed

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]

AGENT_NODES = {"local1", "local2"}


def report(started=None, gate=None):
    """Who ran this task; with ``gate``, first say so in ``started`` and wait for the gate."""
    if started:
        # Written then renamed: the test reads the pid as soon as the file appears.
        Path(started + ".part").write_text(str(os.getpid()))
        os.replace(started + ".part", started)
    while gate and not os.path.exists(gate):
        time.sleep(0.005)
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        parent = f.read().replace(b"\0", b" ").decode()
    return {"pid": os.getpid(), "ppid": os.getppid(), "parent": parent,
            "agent": os.environ.get("BALSAM_FUTURES_AGENT"),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}


def crash():
    os._exit(3)


def noop():
    return None


def start_launcher(site, *args, nodes=3, gpus=0):
    from balsam_futures.launcher.child import worker_python_path

    # The tasks' functions live in this test module: the workers must be able to import it.
    return subprocess.Popen(
        [sys.executable, "-m", "balsam_futures", "launcher", "--site", str(site), "--nodes",
         str(nodes), "--cores-per-node", "2", "--gpus-per-node", str(gpus), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": worker_python_path()})


def stop(proc):
    proc.terminate()
    try:
        return proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            proc.kill()


def hosts_of(ex) -> dict[int, str]:
    """Task id -> the node its (last) run was placed on."""
    return {r["task_id"]: r["hosts"][0] for r in ex.store.list_runs()}


def gone(pids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_runs_on_other_nodes_go_to_their_agents_with_their_gpus_and_stop_with_them(
        site_dir, tmp_path, make_executor, new_gate):
    gate = new_gate()
    ex = make_executor(launcher=False)
    # Six tasks of one GPU each on three nodes of two cores and two GPUs: two per node,
    # all at once (each waits for the gate until all six have started).
    on_gpu = ex.options(resources=Resources(gpus_per_rank=1))
    futs = [on_gpu.submit(report, str(tmp_path / f"started-{i}"), gate.path)
            for i in range(6)]
    launcher = start_launcher(site_dir, "--agents", gpus=2)
    try:
        for i in range(6):
            wait_for_file(tmp_path / f"started-{i}", timeout=60)
        gate.open()
        reports = {f.task_id: f.result(timeout=60) for f in futs}
        placed = hosts_of(ex)
        runs = {r["task_id"]: r for r in ex.store.list_runs()}
    finally:
        out = stop(launcher)
    assert launcher.returncode == 0, out
    assert sorted(placed.values()) == ["local0", "local0", "local1", "local1", "local2",
                                       "local2"]
    agent_pids = set()
    for task_id, seen in reports.items():
        node = placed[task_id]
        assert seen["gpus"] == ",".join(runs[task_id]["gpus"][0])  # the placement's GPU
        if node == "local0":  # the head's own node: its own workers
            assert seen["agent"] is None and seen["ppid"] == launcher.pid
        else:
            assert seen["agent"] == node
            assert seen["ppid"] != launcher.pid
            assert "balsam_futures.launcher.agents.node" in seen["parent"]
            agent_pids.add(seen["ppid"])
    # One agent process per node, each with its own two GPUs handed out without sharing.
    assert len(agent_pids) == 2
    for node in AGENT_NODES:
        assert sorted(seen["gpus"] for t, seen in reports.items() if placed[t] == node) == \
            ["0", "1"]
    # Stopping the launcher stopped the agents and their workers: no stray processes.
    workers = {seen["pid"] for seen in reports.values()}
    assert gone(agent_pids | workers), "agent or worker processes outlived the launcher"
    assert "agents serving 2 node(s)" in out


def test_a_crash_fails_only_its_run_and_kill_works_on_agent_nodes(site_dir, tmp_path,
                                                                 make_executor, new_gate):
    gate = new_gate()
    ex = make_executor(launcher=False)
    # Two gated tasks fill the head's node (claim order is placement order), so the
    # crashing task and the one to kill go to agent nodes.
    blockers = [ex.submit(report, str(tmp_path / f"blocker-{i}"), gate.path)
                for i in range(2)]
    crasher = ex.submit(crash)
    victim = ex.submit(report, str(tmp_path / "victim"), str(tmp_path / "never"))
    launcher = start_launcher(site_dir, "--agents")
    try:
        with pytest.raises(WorkerCrashed, match="died"):
            crasher.result(timeout=60)
        wait_for_file(tmp_path / "victim", timeout=60)
        victim_pid = int((tmp_path / "victim").read_text())
        t0 = time.monotonic()
        assert victim.kill() is True
        with pytest.raises(TaskKilled):
            victim.result(timeout=30)
        killed_in = time.monotonic() - t0
        assert gone([victim_pid]), "the killed task's process survived"
        # The agents carry on with fresh workers; the head's node is still full.
        after = [ex.submit(report) for _ in range(4)]
        seen = [f.result(timeout=60) for f in after]
        gate.open()
        assert all(f.result(timeout=60)["agent"] is None for f in blockers)
        placed = hosts_of(ex)
    finally:
        stop(launcher)
    print(f"\nkill on an agent node took {killed_in * 1000:.0f} ms")
    assert killed_in < 5
    assert placed[crasher.task_id] in AGENT_NODES
    assert placed[victim.task_id] in AGENT_NODES
    assert [h["to_state"] for h in ex.store.history(victim.task_id)][-1] == "KILLED"
    for fut, report_ in zip(after, seen):
        assert report_["agent"] == placed[fut.task_id] in AGENT_NODES


def test_a_dead_agent_hands_its_runs_back_and_the_launcher_carries_on(site_dir, tmp_path,
                                                                     make_executor, new_gate):
    gate = new_gate()
    ex = make_executor(launcher=False)
    blockers = [ex.submit(report, str(tmp_path / f"blocker-{i}"), gate.path)
                for i in range(2)]
    orphan = ex.submit(report, str(tmp_path / "orphan"), gate.path)
    launcher = start_launcher(site_dir, "--agents")
    try:
        wait_for_file(tmp_path / "orphan", timeout=60)
        worker = int((tmp_path / "orphan").read_text())
        with open(f"/proc/{worker}/stat") as f:
            agent = int(f.read().split(")")[1].split()[1])  # its parent
        os.kill(agent, signal.SIGKILL)
        # The run is placed again (its node now starts runs through mpiexec) and ends
        # normally once the gate opens; the launcher neither hangs nor stops.
        gate.open()
        assert orphan.result(timeout=60)["agent"] is None
        assert all(f.result(timeout=60) for f in blockers)
        assert ex.submit(noop).result(timeout=60) is None
    finally:
        out = stop(launcher)
    assert "the agent on local" in out and "will start again" in out


def test_throughput_of_no_op_tasks_through_two_agents(site_dir, tmp_path, make_executor,
                                                      new_gate):
    gate = new_gate()
    count = 200
    ex = make_executor(launcher=False)
    blockers = [ex.submit(report, str(tmp_path / f"blocker-{i}"), gate.path)
                for i in range(2)]
    launcher = start_launcher(site_dir, "--agents")
    try:
        for i in range(2):  # the head's node is full: every no-op goes to an agent
            wait_for_file(tmp_path / f"blocker-{i}", timeout=60)
        ex.submit(noop).result(timeout=60)  # the first through the agents: they are up
        t0 = time.perf_counter()
        futs = [ex.submit(noop) for _ in range(count)]
        for f in futs:
            f.result(timeout=60)
        elapsed = time.perf_counter() - t0
        gate.open()
        for f in blockers:
            f.result(timeout=60)
        placed = hosts_of(ex)
    finally:
        stop(launcher)
    print(f"\n{count} no-op tasks through 2 agents: {elapsed:.2f} s, "
          f"{count / elapsed:.0f} tasks/s")
    assert {placed[f.task_id] for f in futs} == AGENT_NODES


def test_agents_need_serial_mode(site_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "balsam_futures", "launcher", "--site", str(site_dir),
         "--nodes", "2", "--agents", "--job-mode", "mpi"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "agents need the serial job mode" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_without_a_working_mpi_launcher_the_launcher_runs_without_agents(site_dir,
                                                                         make_executor):
    ex = make_executor(launcher=False)
    fut = ex.submit(report)
    # No Cray here: the agents cannot start, which must not stop (or hang) the launcher.
    launcher = start_launcher(site_dir, "--agents", "--mpi-launcher", "aprun")
    try:
        assert fut.result(timeout=60)["agent"] is None
    finally:
        out = stop(launcher)
    assert "running without agents" in out and "aprun" in out


def test_agent_workers_do_not_inherit_the_agents_rank_variables():
    from balsam_futures.launcher.agents.node import worker_environ
    from balsam_futures.launcher.agents.protocol import AgentSetup

    setup = AgentSetup("nid0002", 4, ("0",), 1, None, None, {"MY_VAR": "1"}, {})
    env = worker_environ({"PMI_RANK": "1", "PMI_FD": "9", "MPI_LOCALRANKID": "0",
                          "SLURM_PROCID": "1", "OMPI_COMM_WORLD_RANK": "1", "PALS_RANKID": "1",
                          "SLURM_JOB_ID": "42", "PATH": "/bin"}, setup)
    assert env == {"SLURM_JOB_ID": "42", "PATH": "/bin", "MY_VAR": "1",
                   "BALSAM_FUTURES_AGENT": "nid0002"}
