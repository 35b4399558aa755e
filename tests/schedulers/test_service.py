"""The queue service's decisions (sizing, limits, withdrawal, outages) against an in-memory
scheduler, and the store's batch-job methods on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from balsam_futures.backends import open_store
from balsam_futures.schedulers.base import (
    BatchJobRequest,
    BatchJobState,
    Scheduler,
    SchedulerCommandFailed,
    SchedulerStatus,
)
from balsam_futures.schedulers.manager import ORPHAN_SUBMISSION_S, BatchJobManager
from balsam_futures.schedulers.policy import QueueLimits, ServiceSettings, SitePolicy
from balsam_futures.schedulers.service import STARTUP_GRACE_S, QueueService
from balsam_futures.schedulers.slurm import SlurmScheduler
from balsam_futures.sitedir import open_site
from balsam_futures.tasks import Resources, TaskOptions, TaskSpec

pytestmark = pytest.mark.timeout(30)

B = BatchJobState


class MemoryScheduler(Scheduler):
    """Slurm's states and template, jobs in a dict; ``down`` makes every poll fail."""

    name = "slurm"
    template = "slurm.sh.j2"

    def __init__(self):
        super().__init__()
        self.jobs: dict[str, str] = {}
        self.deleted: list[str] = []
        self.down = False

    def submit(self, script, log_path):
        job_id = str(100 + len(self.jobs))
        self.jobs[job_id] = "PENDING"
        return job_id

    def statuses(self, scheduler_ids):
        if self.down:
            raise SchedulerCommandFailed("squeue exited with code 1: Unable to contact slurm "
                                         "controller (connect failure)")
        return {i: SchedulerStatus(SlurmScheduler.states[self.jobs[i]], self.jobs[i])
                for i in scheduler_ids if i in self.jobs}

    def delete(self, scheduler_id):
        self.deleted.append(scheduler_id)
        self.jobs[scheduler_id] = "CANCELLED"


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def world(tmp_path):
    site = open_site(tmp_path / "site")
    store = open_store(site.db_url)
    sched = MemoryScheduler()
    policy = SitePolicy(scheduler="slurm", project="proj",
                        queues={"debug": QueueLimits(max_nodes=4, max_wall_time_min=60),
                                "small": QueueLimits(max_nodes=1)})
    manager = BatchJobManager(store, site, policy=policy, schedulers={"slurm": sched},
                              clock=Clock())
    yield store, sched, manager
    store.close()


def add_tasks(store, n, *, nodes=1, packing=1, tags=None):
    options = TaskOptions(tags=tags or {}, resources=Resources(num_nodes=nodes,
                                                               node_packing_count=packing))
    return store.create_tasks([TaskSpec("python", b"p", options, f"t{i}") for i in range(n)])


def service(manager, **settings):
    base = dict(queue="debug", min_nodes=1, max_nodes=4, wall_time_min=30, max_queued_jobs=2)
    return QueueService(manager, ServiceSettings(**{**base, **settings}))


def test_jobs_are_sized_to_the_backlog_within_the_limits(world):
    store, sched, manager = world
    add_tasks(store, 10)  # one node each
    svc = service(manager, min_nodes=2, max_nodes=4, max_queued_jobs=2)
    report = svc.tick()
    assert report.nodes_needed == 10 and len(report.submitted) == 2
    jobs = manager.jobs()
    assert [(j["num_nodes"], j["state"], j["queue"], j["project"], j["wall_time_min"])
            for j in jobs] == [(4, "QUEUED", "debug", "proj", 30)] * 2
    # Two jobs wait already (max_queued_jobs): nothing more, however large the backlog.
    assert svc.tick().submitted == []


def test_packing_count_and_a_small_backlog(world):
    store, _, manager = world
    add_tasks(store, 3, packing=4)  # three quarter-node tasks: one node
    report = service(manager, min_nodes=2).tick()
    assert report.nodes_needed == 1
    [job] = manager.jobs()
    assert job["num_nodes"] == 2  # min_nodes


def test_a_multi_node_task_gets_a_job_large_enough(world):
    store, _, manager = world
    add_tasks(store, 1, nodes=3)
    service(manager).tick()
    assert [j["num_nodes"] for j in manager.jobs()] == [3]


def test_tasks_larger_than_any_job_are_reported_not_chased(world):
    store, _, manager = world
    add_tasks(store, 2, nodes=8)
    report = service(manager, max_nodes=4).tick()
    assert report.submitted == [] and report.backlog.too_large == 2
    assert "2 waiting task(s) need more nodes" in report.errors[0]


def test_only_matching_tags_count(world):
    store, _, manager = world
    add_tasks(store, 2, tags={"exp": "b"})
    assert service(manager, filter_tags={"exp": "a"}).tick().submitted == []
    add_tasks(store, 1, tags={"exp": "a", "x": "y"})
    report = service(manager, filter_tags={"exp": "a"}).tick()
    assert report.backlog.tasks == 1 and len(report.submitted) == 1
    assert manager.jobs()[0]["filter_tags"] == {"exp": "a"}


def test_queued_jobs_no_longer_needed_are_withdrawn_newest_first(world):
    store, sched, manager = world
    ids = add_tasks(store, 8)
    svc = service(manager, max_nodes=4, max_queued_jobs=2)
    first, second = svc.tick().submitted
    # Half the backlog goes: one queued job covers the rest; the newest is withdrawn.
    store.cancel(ids[:5])
    report = svc.tick()
    assert report.withdrawn == [second] and report.submitted == []
    assert sched.deleted == [manager.get(second)["scheduler_id"]]
    assert manager.get(second)["state"] == "PENDING_DELETION"
    # The scheduler confirms; then the backlog empties and the other goes too.
    store.cancel(ids[5:])
    report = svc.tick()
    assert report.changed == [second] and report.withdrawn == [first]
    assert manager.get(second)["state"] == "FINISHED"
    assert manager.get(second)["status_info"]["native_state"] == "CANCELLED"


def test_running_jobs_are_never_withdrawn_and_count_while_starting(world):
    store, sched, manager = world
    add_tasks(store, 4)
    clock = manager.clock
    svc = service(manager, max_nodes=4)
    [job_id] = svc.tick().submitted
    sched.jobs[manager.get(job_id)["scheduler_id"]] = "RUNNING"
    clock.now = 2_000_000.0
    # Just started (its launcher has not claimed yet): it still covers the backlog.
    report = svc.tick()
    assert report.changed == [job_id] and report.submitted == [] and report.withdrawn == []
    # Well past its start, a backlog still there needs another job.
    clock.now += STARTUP_GRACE_S + 1
    report = svc.tick()
    assert len(report.submitted) == 1
    assert manager.get(job_id)["state"] == "RUNNING"


def test_max_total_nodes_caps_what_the_service_holds(world):
    store, _, manager = world
    add_tasks(store, 10)
    report = service(manager, max_nodes=4, max_queued_jobs=5, max_total_nodes=6).tick()
    assert [j["num_nodes"] for j in manager.jobs()] == [4, 2] and len(report.submitted) == 2


def test_a_scheduler_outage_changes_nothing(world):
    store, sched, manager = world
    add_tasks(store, 2)
    svc = service(manager, max_queued_jobs=3)
    [job_id] = svc.tick().submitted
    add_tasks(store, 20)
    sched.down = True
    report = svc.tick()
    # Neither marked gone nor replaced: the controller is down, not the job.
    assert report.submitted == [] and report.changed == [] and report.backlog is None
    assert "Unable to contact slurm controller" in report.errors[0]
    assert manager.get(job_id)["state"] == "QUEUED"


def test_site_policy_refusal_is_reported_and_nothing_is_stored(world):
    store, _, manager = world
    add_tasks(store, 4)
    report = service(manager, queue="small", max_nodes=4).tick()
    assert report.submitted == [] and manager.jobs(history=True) == []
    assert "queue 'small' allows at most 1 nodes per job, not 4" in report.errors[0]


def test_a_job_gone_from_the_scheduler_is_finished(world):
    store, sched, manager = world
    job = manager.submit(BatchJobRequest(1, 10, queue="debug"))
    sched.jobs.clear()  # forgotten by the scheduler (ended long ago)
    [changed] = manager.sync().changed
    assert changed["state"] == "FINISHED" and changed["status_info"]["listed"] is False
    assert manager.get(job["id"])["ended_at"] is not None


# -- the store's side, on both backends --------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request, tmp_path):
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    else:
        store = open_store(request.getfixturevalue("pg_url"))
    yield store
    store.close()


def test_store_batch_jobs_and_backlog(any_store):
    store = any_store
    job = store.create_batch_job({
        "scheduler": "slurm", "project": "p", "queue": "q", "num_nodes": 2,
        "wall_time_min": 10, "job_mode": "mpi", "filter_tags": {"a": "b"},
        "options": {"pre_run": ["x"]}, "state": "PENDING_SUBMISSION", "status_info": {},
        "error": ""})
    assert store.update_batch_job(job, {"state": "QUEUED", "scheduler_id": "7",
                                        "status_info": {"native_state": "PENDING"}},
                                  from_states=["PENDING_SUBMISSION"])
    # Guarded: a second move from the same state finds the row changed and does nothing.
    assert not store.update_batch_job(job, {"state": "SUBMIT_FAILED"},
                                      from_states=["PENDING_SUBMISSION"])
    [row] = store.batch_jobs(states=["QUEUED"])
    assert (row["id"], row["scheduler_id"], row["filter_tags"], row["options"],
            row["status_info"]) == (job, "7", {"a": "b"}, {"pre_run": ["x"]},
                                    {"native_state": "PENDING"})
    assert store.batch_jobs(ids=[job + 1]) == [] and store.batch_jobs(states=["FINISHED"]) == []

    add_tasks(store, 3, nodes=2, packing=1, tags={"a": "b"})
    add_tasks(store, 4, packing=2, tags={"a": "b"})
    store.create_tasks([TaskSpec("python", b"p", TaskOptions(
        tags={"a": "b"}, resources=Resources(ranks_per_node=2, threads_per_rank=3)), "c")])
    add_tasks(store, 1, nodes=9, tags={"a": "b"})
    add_tasks(store, 5, tags={"a": "other"})
    backlog = store.backlog({"a": "b"}, max_nodes=4)
    assert (backlog.tasks, backlog.node_demand, backlog.core_demand, backlog.max_task_nodes,
            backlog.too_large) == (8, 8.0, 6, 2, 1)
    assert backlog.nodes_needed(cores_per_node=4) == 10
    assert store.backlog().tasks == 14


def test_an_orphaned_submission_fails_after_a_while(world):
    store, _, manager = world
    job_id = store.create_batch_job({
        "scheduler": "slurm", "project": "", "queue": "debug", "num_nodes": 1,
        "wall_time_min": 5, "job_mode": "serial", "filter_tags": {}, "options": {},
        "state": "PENDING_SUBMISSION", "status_info": {}, "error": "",
        # (created_at is set by the store, on the real clock)
    })
    manager.clock.now = manager.get(job_id)["created_at"] + 10
    assert manager.sync().changed == []
    manager.clock.now += ORPHAN_SUBMISSION_S
    [changed] = manager.sync().changed
    assert changed["state"] == "SUBMIT_FAILED" and "stopped before" in changed["error"]


def test_run_ticks_until_stopped(world):
    store, _, manager = world
    add_tasks(store, 1)
    svc = service(manager, interval_s=0.01)
    stop = threading.Event()
    reports = []

    def on_tick(report):
        reports.append(report)
        if len(reports) == 3:
            stop.set()

    thread = threading.Thread(target=svc.run, args=(stop, on_tick))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert [len(r.submitted) for r in reports] == [1, 0, 0]
