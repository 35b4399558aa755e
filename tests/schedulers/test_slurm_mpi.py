"""MPI tasks under ``srun`` in a real Slurm job: ranks run under slurmstepd, outside the
launcher's process groups, so killing a task must go through srun."""

from __future__ import annotations

import json
import time

import pytest
from processes import alive
from schedtools import cli

from balsam_futures import BalsamExecutor, Resources, ShellApp, TaskKilled

pytestmark = [pytest.mark.slurm, pytest.mark.mpi, pytest.mark.timeout(120)]


def test_srun_task_runs_and_its_kill_stops_the_rank(slurm_cluster, tmp_path):
    site = tmp_path / "site"
    assert cli("init", site)[0] == 0
    (site / "settings.json").write_text(json.dumps({
        "scheduler": "slurm", "queues": {"debug": {"max_nodes": 1}},
        "options": {"workers": 2, "idle_timeout": 2.0, "mpi_launcher": "srun"}}))
    pid_file = tmp_path / "rank.pid"
    with BalsamExecutor(launcher=False, site=site) as ex:
        mpi = ex.options(resources=Resources(ranks_per_node=1))
        hello = mpi.submit(ShellApp("echo rank $SLURM_PROCID of $SLURM_NTASKS"))
        sleeper = mpi.submit(ShellApp("echo $$ > {pid}.part && mv {pid}.part {pid} && "
                                      "exec sleep 600"), pid=str(pid_file))
        ex.flush()
        code, out = cli("queue", "submit", "--site", site, "-n", 1, "-t", 5, "-q", "debug",
                        "--job-mode", "mpi", env=slurm_cluster.env)
        assert code == 0, out
        result = hello.result(timeout=60)
        assert "rank 0 of 1" in result.job_out.read_text()
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert time.monotonic() < deadline, "the srun step never started"
            time.sleep(0.05)
        rank_pid = int(pid_file.read_text())
        assert alive(rank_pid)
        assert sleeper.kill() is True
        with pytest.raises(TaskKilled):
            sleeper.result(timeout=30)
        deadline = time.monotonic() + 15
        while alive(rank_pid):
            assert time.monotonic() < deadline, "the rank under slurmstepd outlived its task"
            time.sleep(0.05)
        # srun got a SIGTERM to forward, so its step ended cleanly and freed the node's CPU
        # at once: the next step starts without waiting (after a SIGKILL, srun cannot end its
        # step, and the next srun waits until Slurm reaps it, ~10 s here).
        start = time.monotonic()
        after = mpi.submit(ShellApp("echo after"))
        after.result(timeout=60)
        assert time.monotonic() - start < 5
