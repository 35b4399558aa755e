"""Tasks of several ranks, run for real with the hydra ``mpiexec`` of the ``mpich`` wheel.

Python callables run on every rank (mpi4py's COMM_WORLD works) and resolve to rank 0's value;
shell applications are started on every rank; a launcher with virtual nodes runs multi-node
tasks on whole nodes and records where each run went.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from balsam_futures import BalsamExecutor, Resources, ShellApp, TaskTimeout
from balsam_futures.errors import MpiLaunchError

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]


def world():
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    return comm.Get_rank(), comm.allgather(comm.Get_rank()), os.environ.get("OMP_NUM_THREADS")


def fail_on_rank(bad_rank):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.Get_rank() == bad_rank:
        raise KeyError(f"rank {bad_rank} lost its key")
    comm.barrier()  # the others wait here: the abort must free them
    return "unreachable"


def hang_on_rank_one():
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_rank() == 1:
        time.sleep(600)
    return "rank 0 done"


@pytest.mark.parametrize("ranks", [2, 4])
def test_python_callable_runs_on_every_rank_and_returns_rank_zeros_value(make_executor, ranks):
    ex = make_executor(max_workers=4, gpus=0)
    rank, gathered, omp = ex.options(
        resources=Resources(ranks_per_node=ranks)).submit(world).result(timeout=60)
    assert rank == 0
    assert gathered == list(range(ranks))
    assert omp == "1"


def test_threads_per_rank_sets_omp_num_threads(make_executor):
    ex = make_executor(max_workers=4, gpus=0)
    res = Resources(ranks_per_node=2, threads_per_rank=2)
    assert ex.options(resources=res).submit(world).result(timeout=60)[2] == "2"


def test_an_exception_on_any_rank_fails_the_task_with_that_ranks_traceback(make_executor):
    ex = make_executor(max_workers=2, gpus=0)
    fut = ex.options(resources=Resources(ranks_per_node=2)).submit(fail_on_rank, 1)
    with pytest.raises(KeyError, match="rank 1 lost its key") as info:
        fut.result(timeout=60)
    remote = str(info.value.__cause__)
    assert "rank 1 of 2" in remote and "fail_on_rank" in remote


def test_a_hung_rank_is_killed_at_the_wall_time(make_executor):
    ex = make_executor(max_workers=2, gpus=0)
    start = time.monotonic()
    fut = ex.options(resources=Resources(ranks_per_node=2), timeout=3,
                     auto_timeout_retry=False).submit(hang_on_rank_one)
    with pytest.raises(TaskTimeout):
        fut.result(timeout=60)
    assert time.monotonic() - start < 30


def test_shell_app_runs_on_every_rank(make_executor):
    ex = make_executor(max_workers=2, gpus=0)
    # Each rank leaves a file in the task's working directory (their stdout lines may mix).
    app = ShellApp(f"{sys.executable} -c 'import os; open(\"rank-\" + os.environ[\"PMI_RANK\"], "
                   "\"w\").close()'")
    result = ex.options(resources=Resources(ranks_per_node=2)).submit(app).result(timeout=60)
    assert sorted(p.name for p in result.workdir.glob("rank-*")) == ["rank-0", "rank-1"]
    # The command line started, MPI launcher included, is kept with the result and in the
    # run's header in job.out (what `show` prints).
    assert "mpiexec" in result.command and "-n 2" in result.command, result.command
    assert f"MPI command: {result.command}" in result.job_out.read_text()


def test_a_missing_mpi_launcher_is_a_clear_error(make_executor, monkeypatch):
    ex = make_executor(max_workers=2, gpus=0, mpi_launcher="aprun")  # no Cray here
    fut = ex.options(resources=Resources(ranks_per_node=2)).submit(world)
    with pytest.raises(MpiLaunchError, match="aprun.*not on PATH"):
        fut.result(timeout=60)


def test_an_unknown_mpi_launcher_is_refused_by_the_executor(site_dir):
    with pytest.raises(ValueError, match="unknown MPI launcher 'mpirun'.*mpich"):
        BalsamExecutor(site=site_dir, mpi_launcher="mpirun")


def test_a_task_that_cannot_fit_the_executors_node_is_refused_at_submit(make_executor):
    ex = make_executor(max_workers=2, gpus=0)
    with pytest.raises(ValueError, match="needs 4 cores on one node"):
        ex.options(resources=Resources(ranks_per_node=4)).submit(world)


# -- a separate launcher with virtual nodes ---------------------------------------------------


def where_am_i():
    from mpi4py import MPI

    from balsam_futures import current_task

    task = current_task()
    return MPI.COMM_WORLD.Get_size(), task.hosts, task.resources.num_nodes


def start_launcher(site, *args):
    from balsam_futures.launcher.child import worker_python_path

    # The tasks' functions live in this test module: the ranks must be able to import it.
    return subprocess.Popen(
        [sys.executable, "-m", "balsam_futures", "launcher", "--site", str(site), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": worker_python_path()})


def stop(proc):
    proc.terminate()
    try:
        return proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()


def test_virtual_nodes_run_multi_node_tasks_and_record_the_profile(site_dir):
    with BalsamExecutor(site=site_dir, launcher=False) as ex:
        two_nodes = ex.options(resources=Resources(num_nodes=2, ranks_per_node=2))
        futs = [two_nodes.submit(where_am_i) for _ in range(2)]
        singles = [ex.options(resources=Resources(ranks_per_node=1)).submit(os.getpid)
                   for _ in range(4)]
        never = ex.options(resources=Resources(num_nodes=8)).submit(os.getpid)
        launcher = start_launcher(site_dir, "--nodes", "3", "--cores-per-node", "2",
                                  "--gpus-per-node", "0")
        try:
            for f in futs:
                size, hosts, num_nodes = f.result(timeout=90)
                assert (size, num_nodes, len(hosts)) == (4, 2, 2)
            assert all(isinstance(f.result(timeout=60), int) for f in singles)
            runs = ex.store.list_runs()
            multi = [r for r in runs if r["num_nodes"] == 2]
            assert len(multi) == 2
            for r in multi:
                assert len(set(r["hosts"])) == 2 and r["node_share"] == 1.0
                assert r["ended_at"] >= r["started_at"]
            # The two multi-node runs never shared a node at the same time.
            a, b = multi
            if set(a["hosts"]) & set(b["hosts"]):
                assert a["ended_at"] <= b["started_at"] or b["ended_at"] <= a["started_at"]
            assert not never.done()  # 8 nodes: left for a larger launcher
        finally:
            out = stop(launcher)
            never.cancel()
    assert "can never run on this launcher: it needs 8 nodes" in out


def test_mpi_job_mode_starts_one_rank_tasks_through_mpiexec(site_dir):
    with BalsamExecutor(site=site_dir, launcher=False) as ex:
        fut = ex.submit(world)
        launcher = start_launcher(site_dir, "--nodes", "1", "--cores-per-node", "2",
                                  "--gpus-per-node", "0", "--job-mode", "mpi")
        try:
            rank, gathered, _ = fut.result(timeout=60)
        finally:
            stop(launcher)
    assert (rank, gathered) == (0, [0])


def rank_pids_then_sleep(directory):
    from mpi4py import MPI

    rank = MPI.COMM_WORLD.Get_rank()
    with open(os.path.join(directory, f"rank-{rank}.part"), "w") as f:
        f.write(str(os.getpid()))
    os.replace(os.path.join(directory, f"rank-{rank}.part"),
               os.path.join(directory, f"rank-{rank}"))
    time.sleep(600)


def test_kill_of_an_mpi_task_stops_every_rank(make_executor, tmp_path):
    from processes import alive, wait_for_file

    from balsam_futures import TaskKilled

    ex = make_executor(max_workers=2, gpus=0)
    fut = ex.options(resources=Resources(ranks_per_node=2)).submit(rank_pids_then_sleep,
                                                                   str(tmp_path))
    for rank in (0, 1):
        wait_for_file(tmp_path / f"rank-{rank}", timeout=60)
    pids = [int((tmp_path / f"rank-{r}").read_text()) for r in (0, 1)]
    assert all(alive(p) for p in pids)
    assert fut.kill() is True
    with pytest.raises(TaskKilled):
        fut.result(timeout=30)
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, "a rank outlived its killed task"
        time.sleep(0.05)
