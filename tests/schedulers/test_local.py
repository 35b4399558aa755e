"""The local scheduler end to end: a batch job is a real launcher in the background that runs
tasks submitted with ``BalsamExecutor(launcher=False)``; the queue service with it; the CLI."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest
from schedtools import cli, wait_pid_exit

from balsam_futures.schedulers.base import BatchJobRequest, BatchJobState
from balsam_futures.schedulers.manager import BatchJobManager
from balsam_futures.schedulers.policy import ServiceSettings
from balsam_futures.schedulers.service import QueueService

pytestmark = pytest.mark.timeout(60)

B = BatchJobState


def started_by(job: dict) -> int:
    return int(job["scheduler_id"])


def test_local_job_runs_tasks_from_the_store(job_site, job_store, executor):
    futures = [executor.submit(pow, 2, i) for i in range(6)]
    manager = BatchJobManager(job_store, job_site)
    job = manager.submit(BatchJobRequest(
        num_nodes=1, wall_time_min=5, scheduler="local",
        options={"workers": 2, "idle_timeout": 1.0}))
    assert job["state"] == "QUEUED" and job["scheduler_id"].isdigit()
    assert job["script_path"].endswith(f"bf-job-{job['id']}.sh")
    assert oct(os.stat(job["script_path"]).st_mode & 0o777) == "0o700"
    [synced] = manager.sync().changed
    assert synced["state"] == "RUNNING" and synced["started_at"] is not None
    assert [f.result(timeout=45) for f in futures] == [2 ** i for i in range(6)]
    # Nothing left to run: the launcher stops after its idle timeout and the job ends.
    wait_pid_exit(started_by(job), timeout=30)
    [ended] = manager.sync().changed
    assert ended["state"] == "FINISHED" and ended["ended_at"] >= ended["started_at"]
    log = (job_site.logs_dir / f"batch-job-{job['id']}.log").read_text()
    assert "launcher finished 6 task(s)" in log
    # The launcher records the batch job it runs in.
    with sqlite3.connect(job_site.db_path) as db:
        assert db.execute("SELECT batch_job_id FROM bf_launchers").fetchall() == [(job["id"],)]


def test_local_job_removed_stops_its_launcher(job_site, job_store):
    manager = BatchJobManager(job_store, job_site)
    job = manager.submit(BatchJobRequest(1, 5, scheduler="local", options={"workers": 1}))
    assert manager.remove(job["id"])["state"] == "PENDING_DELETION"
    wait_pid_exit(started_by(job), timeout=30)
    [ended] = manager.sync().changed
    assert ended["state"] == "FINISHED"
    with pytest.raises(LookupError, match="already ended"):
        manager.remove(job["id"])


def test_service_with_the_local_scheduler(job_site, job_store, executor):
    manager = BatchJobManager(job_store, job_site)
    settings = ServiceSettings(scheduler="local", min_nodes=1, max_nodes=1, wall_time_min=5,
                               max_queued_jobs=1, max_total_nodes=1, cores_per_node=2,
                               options={"workers": 2, "idle_timeout": 1.0})
    service = QueueService(manager, settings)
    idle = service.tick()
    assert idle.backlog.tasks == 0 and idle.submitted == [] and not idle.errors
    futures = [executor.submit(divmod, 7 * i, 3) for i in range(4)]
    executor.flush()  # submit() queues; the tasks are in the store once flushed
    first = service.tick()
    # Tasks without a node_packing_count are counted in cores: 4 cores on 2-core nodes.
    assert (first.backlog.tasks, first.backlog.core_demand, first.nodes_needed) == (4, 4, 2)
    assert len(first.submitted) == 1 and not first.errors
    # The one job allowed (max_total_nodes=1) covers the backlog; no second job.
    again = service.tick()
    assert again.submitted == [] and again.withdrawn == []
    assert [f.result(timeout=45) for f in futures] == [divmod(7 * i, 3) for i in range(4)]
    [job] = manager.jobs(history=True)
    wait_pid_exit(started_by(job), timeout=30)
    last = service.tick()
    assert last.changed == [job["id"]] and last.submitted == [] and last.backlog.tasks == 0
    assert manager.get(job["id"])["state"] == B.FINISHED.value


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_submit_ls_rm_with_site_policy(job_site):
    (job_site.path / "settings.json").write_text(json.dumps({
        "scheduler": "local", "project": "proj-a",
        "queues": {"debug": {"max_nodes": 2, "max_wall_time_min": 30, "max_queued_jobs": 1}},
        "options": {"workers": 1}}))
    site = job_site.path
    code, out = cli("queue", "submit", "--site", site, "-n", 1, "-t", 10, "-q", "prod")
    assert code == 1
    assert out.strip() == ("error: queue 'prod' is not allowed at this site; allowed queues: "
                           f"debug (see {site / 'settings.json'})")
    code, out = cli("queue", "submit", "--site", site, "-n", 3, "-t", 10, "-q", "debug")
    assert code == 1 and "at most 2 nodes per job, not 3" in out
    code, out = cli("queue", "submit", "--site", site, "-n", 1, "-t", 60, "-q", "debug")
    assert code == 1 and "at most 30 minutes per job, not 60" in out

    code, out = cli("queue", "submit", "--site", site, "-n", 1, "-t", 10, "-q", "debug",
                    "--tag", "exp=a", "--job-mode", "serial")
    assert code == 0 and out.startswith("batch job 1 submitted: local job "), out
    code, out = cli("queue", "submit", "--site", site, "-n", 1, "-t", 10, "-q", "debug")
    assert code == 1 and "allows 1 job(s) of this site at once and has 1" in out

    code, out = cli("queue", "ls", "--site", site, "--json")
    [row] = json.loads(out)
    assert (row["state"], row["project"], row["queue"], row["job_mode"], row["filter_tags"],
            row["options"]) == ("RUNNING", "proj-a", "debug", "serial", {"exp": "a"},
                                {"workers": 1})
    code, out = cli("queue", "ls", "--site", site, "-v")
    assert code == 0 and "RUNNING" in out and "exp=a" in out and "bf-job-1.sh" in out

    code, out = cli("queue", "rm", "--site", site, 1)
    assert code == 0 and out.startswith("batch job 1: removal requested (local job ")
    wait_pid_exit(int(row["scheduler_id"]), timeout=30)
    code, out = cli("queue", "ls", "--site", site)
    assert code == 0 and "RUNNING" not in out and "FINISHED" not in out  # active only
    code, out = cli("queue", "ls", "--site", site, "--history")
    assert "FINISHED" in out
    code, out = cli("queue", "rm", "--site", site, 1)
    assert (code, out.strip()) == (1, "error: batch job 1 has already ended (FINISHED)")
    code, out = cli("queue", "rm", "--site", site, 99)
    assert code == 1 and out.startswith("error: no batch job 99;")


def test_cli_mistakes_are_one_line(job_site, tmp_path):
    site = job_site.path
    # The scheduler's command is missing (an empty PATH).
    code, out = cli("queue", "submit", "--site", site, "-n", 1, "-t", 5, "--scheduler", "lsf",
                    env={"PATH": str(tmp_path)})
    assert code == 1 and len(out.strip().splitlines()) == 1
    assert "the lsf command 'bsub' was not found on PATH" in out
    code, out = cli("queue", "ls", "--site", site, "--history", "--json")
    [failed] = json.loads(out)
    assert failed["state"] == "SUBMIT_FAILED" and "'bsub' was not found" in failed["error"]
    # A settings file with a typo.
    (site / "settings.json").write_text('{"queues": {"debug": {"max_node": 2}}}')
    code, out = cli("queue", "submit", "--site", site, "-n", 1, "-t", 5)
    assert code == 1 and len(out.strip().splitlines()) == 1
    assert "unknown key(s) in queues.debug: max_node" in out
    # The service without a "service" section.
    (site / "settings.json").write_text("{}")
    code, out = cli("service", "--site", site, "--once")
    assert code == 1 and 'no "service" section' in out


def test_cli_service_once(job_site):
    (job_site.path / "settings.json").write_text(json.dumps({
        "service": {"min_nodes": 1, "max_nodes": 1, "wall_time_min": 5,
                    "max_total_nodes": 1, "options": {"workers": 1, "idle_timeout": 0.5}}}))
    code, out = cli("service", "--site", job_site.path, "--once")
    assert code == 0
    assert out.strip() == ("backlog 0 task(s) needing 0 node(s) (0.00 node-hour(s) expected, "
                           "5 min jobs); submitted none; withdrew none; 0 job(s) changed state")
