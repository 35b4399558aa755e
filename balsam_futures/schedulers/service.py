"""The elastic queue service: keep launcher jobs in the queue while tasks wait for them.

Each tick:

    1. sync     ask the schedulers about every job they hold (BatchJobManager.sync)
    2. measure  the backlog: claimable tasks with the service's filter tags, and the nodes
                they need together (store.backlog, one query; tasks without a
                node_packing_count are counted in cores, on nodes of cores_per_node); and
                its work (store.backlog_work): node-seconds from the tasks' expected run
                times.  The demand is the smaller of the two: the nodes that finish the
                work within a job's wall time (tasks of unknown run time each keep their
                share of a node), never fewer than its largest task.  The wall time grows
                to fit the longest expected task, within the queue's max_wall_time_min.
    3. withdraw queued jobs (not yet running) the backlog no longer needs, newest first
    4. submit   jobs of min_nodes..max_nodes nodes until the queued ones (and those just
                started) cover the backlog, within max_queued_jobs, max_total_nodes and the
                site's queue limits

"Its jobs" are the active jobs with the service's scheduler, queue and filter tags, whoever
submitted them.  When a scheduler cannot be asked, the tick changes nothing for it: a job
must not be counted as gone (and replaced) because the controller was briefly down.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..backends.batchjobs import Backlog
from ..backends.estimates import BacklogWork
from ..errors import BalsamFuturesError
from .base import ACTIVE_BATCH_STATES, BatchJobRequest, BatchJobState, SitePolicyError
from .manager import BatchJobManager
from .policy import ServiceSettings

log = logging.getLogger(__name__)

B = BatchJobState

#: A job that started this recently still counts as covering the backlog: its launcher is
#: starting and has not claimed anything yet.  Shorter, and a backlog seen during a
#: launcher's start gets a second job it does not need; longer, and a backlog that truly
#: outgrows a running job waits this long for more nodes.
STARTUP_GRACE_S = 60.0
#: A job's wall time is stretched to the longest expected task times this: launcher start-up
#: and the estimate's error.  Larger wastes node-hours at the end of a job; smaller risks a
#: task that no launcher will start (wall-time-aware claims).
WALL_MARGIN = 1.2


@dataclass
class TickReport:
    """What one tick saw and did."""

    backlog: Backlog | None = None
    #: Whole nodes the backlog needs: by count (Backlog.nodes_needed on the service's node
    #: size), capped by its work over the job's wall time (see the module docstring).
    nodes_needed: int = 0
    work: BacklogWork | None = None
    #: The wall time of the jobs this tick submits.
    wall_time_min: int = 0
    changed: list[int] = field(default_factory=list)
    submitted: list[int] = field(default_factory=list)
    withdrawn: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        b = self.backlog
        seen = (f"backlog {b.tasks} task(s) needing {self.nodes_needed} node(s)" if b
                else "backlog not measured")
        if b and self.work is not None:
            seen += (f" ({self.work.node_seconds / 3600:.2f} node-hour(s) expected, "
                     f"{self.wall_time_min} min jobs)")
        parts = [seen, f"submitted {self.submitted or 'none'}",
                 f"withdrew {self.withdrawn or 'none'}",
                 f"{len(self.changed)} job(s) changed state"]
        return "; ".join(parts + [f"error: {e}" for e in self.errors])


class QueueService:
    """Submit and withdraw launcher jobs to match the backlog (see the module docstring)."""

    def __init__(self, manager: BatchJobManager,
                 settings: ServiceSettings | None = None) -> None:
        settings = settings if settings is not None else manager.policy.service
        if settings is None:
            raise SitePolicyError(
                f"the site has no \"service\" section in its settings ({manager.policy.source}"
                "); add one with at least the queue and node counts")
        self.manager = manager
        self.settings = settings
        self.scheduler_name = settings.scheduler or manager.policy.scheduler

    def tick(self) -> TickReport:
        """One round of sync, measure, withdraw, submit."""
        report = TickReport()
        synced = self.manager.sync()
        report.changed = [j["id"] for j in synced.changed]
        if self.scheduler_name in synced.errors:
            report.errors.append(synced.errors[self.scheduler_name])
            return report
        s = self.settings
        backlog = report.backlog = self.manager.store.backlog(s.filter_tags,
                                                              max_nodes=s.max_nodes)
        mine = self._my_jobs()
        now = self.manager.clock()
        queued = [j for j in mine if j["state"] == B.QUEUED.value]
        coming = [j for j in mine if j["state"] == B.PENDING_SUBMISSION.value or (
            j["state"] == B.RUNNING.value and now - (j["started_at"] or now) < STARTUP_GRACE_S)]
        report.work, report.wall_time_min, demand = self.size(backlog)
        report.nodes_needed = demand
        covered = sum(j["num_nodes"] for j in queued + coming)

        # Withdraw the newest queued jobs while the rest still cover the demand.
        for job in sorted(queued, key=lambda j: j["id"], reverse=True):
            if covered - job["num_nodes"] >= demand:
                try:
                    self.manager.remove(job["id"])
                except BalsamFuturesError as exc:
                    report.errors.append(f"withdrawing batch job {job['id']}: {exc}")
                    continue
                report.withdrawn.append(job["id"])
                covered -= job["num_nodes"]
        waiting = len(queued) - len(report.withdrawn)
        held = sum(j["num_nodes"] for j in mine
                   if j["state"] != B.PENDING_DELETION.value and j["id"] not in
                   report.withdrawn)

        if backlog.too_large:
            report.errors.append(f"{backlog.too_large} waiting task(s) need more nodes than the "
                                 f"service's jobs have (service.max_nodes = {s.max_nodes}); "
                                 "no job is submitted for them")
        uncovered = demand - covered
        while uncovered > 0 and waiting < s.max_queued_jobs:
            size = min(max(uncovered, s.min_nodes, backlog.max_task_nodes), s.max_nodes)
            if s.max_total_nodes is not None:
                size = min(size, s.max_total_nodes - held)
                if size < s.min_nodes:
                    break
            try:
                job = self.manager.submit(self._request(size, report.wall_time_min))
            except BalsamFuturesError as exc:
                report.errors.append(f"submitting a {size}-node job: {exc}")
                break
            report.submitted.append(job["id"])
            uncovered -= size
            waiting += 1
            held += size
        return report

    def run(self, stop: threading.Event | None = None,
            on_tick: Callable[[TickReport], Any] | None = None) -> None:
        """Tick every ``interval_s`` until ``stop`` is set."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                report = self.tick()
            except BalsamFuturesError as exc:  # the store was unreachable: try again later
                report = TickReport(errors=[str(exc)])
            log.info("queue service: %s", report.summary())
            if on_tick is not None:
                on_tick(report)
            stop.wait(self.settings.interval_s)

    def _my_jobs(self) -> list[dict[str, Any]]:
        s = self.settings
        return [j for j in self.manager.store.batch_jobs(
                    states=[st.value for st in ACTIVE_BATCH_STATES])
                if j["scheduler"] == self.scheduler_name and j["queue"] == s.queue
                and j["filter_tags"] == dict(s.filter_tags)]

    def size(self, backlog: Backlog) -> tuple[BacklogWork, int, int]:
        """The backlog's work, the wall time of a job for it, and the nodes it needs."""
        s = self.settings
        work = self.manager.store.backlog_work(s.filter_tags, max_nodes=s.max_nodes,
                                               cores_per_node=s.cores_per_node)
        wall = job_wall_time_min(work, s.wall_time_min, self._queue_wall_limit())
        if not backlog.tasks:
            return work, wall, 0
        by_work = max(math.ceil(work.nodes_for(wall * 60.0) - 1e-9), backlog.max_task_nodes, 1)
        return work, wall, min(backlog.nodes_needed(s.cores_per_node), by_work)

    def _queue_wall_limit(self) -> int | None:
        queues = self.manager.policy.queues
        limits = queues.get(self.settings.queue) if queues is not None else None
        return limits.max_wall_time_min if limits is not None else None

    def _request(self, num_nodes: int, wall_time_min: int | None = None) -> BatchJobRequest:
        s = self.settings
        return BatchJobRequest(num_nodes=num_nodes,
                               wall_time_min=wall_time_min or s.wall_time_min,
                               queue=s.queue, project=s.project or "", job_mode=s.job_mode,
                               filter_tags=dict(s.filter_tags), options=dict(s.options),
                               scheduler=self.scheduler_name)


def job_wall_time_min(work: BacklogWork, wall_time_min: int, limit: int | None) -> int:
    """A job's wall time: ``wall_time_min``, stretched to fit the longest expected task (with
    WALL_MARGIN), never past the queue's ``limit``."""
    wanted = max(wall_time_min, math.ceil(work.longest_s * WALL_MARGIN / 60.0))
    return min(wanted, limit) if limit is not None else wanted


@dataclass(frozen=True)
class DryRun:
    """What ``queue submit --dry-run`` shows: the script, and the backlog it is for."""

    script: str
    backlog: Backlog
    work: BacklogWork
    #: Nodes that would finish the expected work within the job's wall time.
    nodes_for_work: float


def dry_run(manager: BatchJobManager, request: BatchJobRequest) -> DryRun:
    """The batch script ``manager.submit(request)`` would submit, checked against the site's
    policy (raises SitePolicyError like a submit), and the backlog of the tasks it would
    serve; nothing is stored or submitted."""
    from dataclasses import replace

    from .policy import merged_options
    from .scripts import render_script

    name = request.scheduler or manager.policy.scheduler
    scheduler = manager.scheduler(name)
    request = replace(request, scheduler=name,
                      project=request.project or manager.policy.project,
                      options=merged_options(manager.policy.options, request.options))
    in_queue = [j for j in manager.store.batch_jobs(states=[st.value for st in
                                                            ACTIVE_BATCH_STATES])
                if j["scheduler"] == name and j["queue"] == request.queue]
    manager.policy.check(request, name, len(in_queue))
    log_path = Path(manager.site.logs_dir) / "batch-job-DRYRUN.log"
    script = render_script(scheduler.template, manager.script_fields(0, request, log_path),
                           manager.site.path / "templates")
    cores = manager.policy.service.cores_per_node if manager.policy.service else 64
    backlog = manager.store.backlog(request.filter_tags, max_nodes=request.num_nodes)
    work = manager.store.backlog_work(request.filter_tags, max_nodes=request.num_nodes,
                                      cores_per_node=cores)
    return DryRun(script, backlog, work, work.nodes_for(request.wall_time_min * 60.0))
