"""Against a real one-node Slurm cluster (see ``slurm_cluster`` in conftest.py): launcher jobs
submitted through the Slurm class run tasks from the store; the queue service submits and
withdraws them; Slurm's PBS wrappers (``qsub``/``qstat``) drive the PBS class."""

from __future__ import annotations

import json
import time

import pytest
from schedtools import cli, wait_until

from balsam_futures.schedulers.base import BatchJobRequest
from balsam_futures.schedulers.manager import BatchJobManager
from balsam_futures.schedulers.policy import ServiceSettings
from balsam_futures.schedulers.service import QueueService
from balsam_futures.tasks import TaskOptions, TaskSpec

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(90)]


def slurm_settings(site, **extra):
    (site.path / "settings.json").write_text(json.dumps({
        "scheduler": "slurm", "queues": {"debug": {"max_nodes": 1}, "down": {}},
        "options": {"workers": 2, "idle_timeout": 1.0}, **extra}))


def wait_finished(manager, job_id, timeout=30):
    """Sync until the job ends (squeue has no event to wait on)."""
    def ended():
        manager.sync()
        job = manager.get(job_id)
        return job if job["state"] == "FINISHED" else None

    return wait_until(ended, timeout, 0.1, f"batch job {job_id} to finish")


def test_queue_submit_runs_tasks_on_slurm(slurm_cluster, job_site, job_store, executor,
                                          record_property):
    slurm_settings(job_site)
    futures = [executor.submit(time.time) for _ in range(4)]  # each returns when it ran
    executor.flush()
    submitted_at = time.time()
    code, out = cli("queue", "submit", "--site", job_site.path, "-n", 1, "-t", 5,
                    "-q", "debug", env=slurm_cluster.env)
    assert code == 0 and out.startswith("batch job 1 submitted: slurm job "), out
    ran_at = [f.result(timeout=60) for f in futures]
    latency = min(ran_at) - submitted_at
    record_property("queue_submit_to_first_task_s", round(latency, 3))
    print(f"\nslurm: queue submit -> first task running: {latency:.2f} s")
    assert 0 < latency < 30

    manager = BatchJobManager(job_store, job_site, env=slurm_cluster.env)
    job = wait_finished(manager, 1)
    assert job["status_info"]["native_state"] == "COMPLETED"
    assert job["status_info"]["queue"] == "debug"
    log = (job_site.logs_dir / "batch-job-1.log").read_text()
    assert "launcher finished 4 task(s)" in log


def test_slurm_rejection_is_one_line_and_stored(slurm_cluster, job_site):
    code, out = cli("queue", "submit", "--site", job_site.path, "-n", 1, "-t", 5, "-q",
                    "nosuch", "--scheduler", "slurm", env=slurm_cluster.env)
    assert code == 1 and len(out.strip().splitlines()) == 1
    assert out.startswith("error: slurm rejected the batch job (sbatch): sbatch: error: "
                          "invalid partition specified: nosuch")
    code, out = cli("queue", "ls", "--site", job_site.path, "--history", "--json",
                    env=slurm_cluster.env)
    [job] = json.loads(out)
    assert job["state"] == "SUBMIT_FAILED" and "Invalid partition name" in job["error"]


def test_service_submits_and_the_job_finishes(slurm_cluster, job_site, job_store, executor):
    slurm_settings(job_site)
    manager = BatchJobManager(job_store, job_site, env=slurm_cluster.env)
    service = QueueService(manager, ServiceSettings(
        queue="debug", max_nodes=1, max_total_nodes=1, cores_per_node=8, wall_time_min=5))
    futures = [executor.submit(pow, 3, i) for i in range(3)]
    executor.flush()
    [job_id] = service.tick().submitted
    assert [f.result(timeout=60) for f in futures] == [1, 3, 9]

    def ended():
        report = service.tick()
        assert report.submitted == [] and not report.errors, report.summary()
        return manager.get(job_id)["state"] == "FINISHED"

    wait_until(ended, 30, 0.1, "the service's job to finish")
    assert manager.get(job_id)["status_info"]["native_state"] == "COMPLETED"


def test_service_withdraws_a_queued_job_no_longer_needed(slurm_cluster, job_site, job_store):
    slurm_settings(job_site)
    manager = BatchJobManager(job_store, job_site, env=slurm_cluster.env)
    # Partition "down" queues jobs but never starts them.
    service = QueueService(manager, ServiceSettings(queue="down", max_nodes=1,
                                                    cores_per_node=8, wall_time_min=5))
    ids = job_store.create_tasks([TaskSpec("python", b"never runs", TaskOptions(), "t")])
    [job_id] = service.tick().submitted
    manager.sync()
    job = manager.get(job_id)
    assert job["state"] == "QUEUED" and job["status_info"]["reason"] == "PartitionDown"
    assert service.tick().submitted == []  # the queued job covers the backlog

    job_store.cancel(ids)
    report = service.tick()
    assert report.withdrawn == [job_id]
    job = wait_finished(manager, job_id)
    assert job["status_info"]["native_state"] == "CANCELLED"


def test_pbs_class_through_slurms_torque_wrappers(slurm_cluster, job_site, job_store,
                                                   executor):
    from balsam_futures.schedulers.pbs import PBSScheduler

    if not all(PBSScheduler()._run(["sh", "-c", f"command -v {c} || true"]).strip()
               for c in ("qsub", "qstat", "qdel")):
        pytest.skip("Slurm's PBS wrappers are not installed (apt-get install slurm-wlm-torque)")
    slurm_settings(job_site)
    futures = [executor.submit(abs, -i) for i in range(3)]
    executor.flush()
    manager = BatchJobManager(job_store, job_site, env=slurm_cluster.env)
    # The wrappers make a Slurm job: its nodes are found the Slurm way.
    job = manager.submit(BatchJobRequest(1, 5, queue="debug", scheduler="pbs",
                                         options={"platform": "slurm"}))
    assert job["scheduler_id"].isdigit()
    assert [f.result(timeout=60) for f in futures] == [0, 1, 2]
    job = wait_finished(manager, job["id"])
    assert job["scheduler"] == "pbs"
