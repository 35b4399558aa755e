"""Batch jobs of one site: submit (within the site's policy), remove, and sync their states.

    submit(request)
      policy.check ──> store: PENDING_SUBMISSION ──> render <site>/batch/bf-job-<id>.sh
        ──> Scheduler.submit ──> QUEUED + scheduler id      (or SUBMIT_FAILED + its words)
    remove(id)      Scheduler.delete ──> PENDING_DELETION
    sync()          Scheduler.statuses(ids) ──> QUEUED / RUNNING / FINISHED (+ status_info)

Every state change is an update guarded by the state it leaves (BATCH_TRANSITIONS), so a
``queue rm`` and a service tick at the same time cannot undo each other.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..backends.base import SqlStore
from ..sitedir import Site, private_dir
from . import get_scheduler
from .base import (
    ACTIVE_BATCH_STATES,
    BATCH_TRANSITIONS,
    POLLED_BATCH_STATES,
    BatchJobError,
    BatchJobRequest,
    BatchJobState,
    Scheduler,
    SchedulerError,
    TemplateError,
    batch_sources,
)
from .policy import SitePolicy, load_policy, merged_options
from .scripts import render_script

log = logging.getLogger(__name__)

B = BatchJobState

#: A job still PENDING_SUBMISSION this long after it was stored lost its submitter (killed
#: between storing the row and the scheduler's answer, which takes at most two commands of
#: COMMAND_TIMEOUT_S): a sync marks it SUBMIT_FAILED, so it no longer counts against the
#: queue's limits.  Shorter could fail a submission still waiting on a slow controller.
ORPHAN_SUBMISSION_S = 300.0


@dataclass
class SyncReport:
    """What one sync changed, and the schedulers that could not be asked."""

    changed: list[dict[str, Any]] = field(default_factory=list)
    #: Scheduler name -> why its jobs were left as they were this time.
    errors: dict[str, str] = field(default_factory=dict)


class BatchJobManager:
    """Submit, list, remove and sync the batch jobs of ``site`` in ``store``.

    ``db_url`` is the store's URL when it is not the site's own SQLite file (the job script
    then exports it for the launcher); ``env`` adds variables to every scheduler command;
    ``schedulers`` replaces scheduler instances by name (tests, or a site's own subclass);
    ``clock`` gives the times stored (started_at, ended_at).
    """

    def __init__(self, store: SqlStore, site: Site, *, policy: SitePolicy | None = None,
                 db_url: str = "", env: Mapping[str, str] | None = None,
                 schedulers: Mapping[str, Scheduler] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.site = site
        self.policy = policy if policy is not None else load_policy(site.path)
        self.db_url = db_url
        self.env = dict(env or {})
        self._schedulers: dict[str, Scheduler] = dict(schedulers or {})

    def scheduler(self, name: str) -> Scheduler:
        if name not in self._schedulers:
            self._schedulers[name] = get_scheduler(name, env=self.env)
        return self._schedulers[name]

    # -- reading -----------------------------------------------------------------------------

    def jobs(self, *, history: bool = False) -> list[dict[str, Any]]:
        """Batch jobs, oldest first: the active ones, or every one with ``history``."""
        if history:
            return self.store.batch_jobs()
        return self.store.batch_jobs(states=[s.value for s in ACTIVE_BATCH_STATES])

    def get(self, job_id: int) -> dict[str, Any]:
        rows = self.store.batch_jobs(ids=[job_id])
        if not rows:
            raise BatchJobError(f"no batch job {job_id}; `balsam-futures queue ls --history` "
                                "lists them all")
        return rows[0]

    # -- submit ------------------------------------------------------------------------------

    def submit(self, request: BatchJobRequest) -> dict[str, Any]:
        """Submit one launcher job; returns its row (QUEUED, with the scheduler's id).

        Raises :class:`SitePolicyError` (nothing stored) when the site does not allow it, and
        :class:`SchedulerError` or :class:`TemplateError` when it could not be submitted; the
        job is then stored as SUBMIT_FAILED with that error.
        """
        name = request.scheduler or self.policy.scheduler
        scheduler = self.scheduler(name)
        request = replace(request, scheduler=name,
                          project=request.project or self.policy.project,
                          options=merged_options(self.policy.options, request.options))
        # (replace() validates again: the site's options are checked like the job's own.)
        in_queue = [j for j in self.store.batch_jobs(states=[s.value for s in
                                                             ACTIVE_BATCH_STATES])
                    if j["scheduler"] == name and j["queue"] == request.queue]
        self.policy.check(request, name, len(in_queue))
        job_id = self.store.create_batch_job({
            "scheduler": name, "project": request.project, "queue": request.queue,
            "num_nodes": request.num_nodes, "wall_time_min": request.wall_time_min,
            "job_mode": request.job_mode, "filter_tags": dict(request.filter_tags),
            "options": dict(request.options), "state": B.PENDING_SUBMISSION.value,
            "status_info": {}, "error": ""})
        try:
            script, log_path = self._write_script(job_id, request, scheduler)
            scheduler_id = scheduler.submit(script, log_path)
        except (SchedulerError, TemplateError, OSError) as exc:
            self._move(job_id, B.SUBMIT_FAILED, {"error": str(exc),
                                                 "ended_at": self.clock()})
            raise
        self._move(job_id, B.QUEUED, {"scheduler_id": scheduler_id})
        log.info("batch job %d submitted to %s as %s", job_id, name, scheduler_id)
        return self.get(job_id)

    def script_fields(self, job_id: int, request: BatchJobRequest,
                      log_path: Path) -> dict[str, Any]:
        """The variables a batch-script template sees (see ``scripts.SCRIPT_FIELDS``)."""
        options = dict(request.options)
        hours, minutes = divmod(request.wall_time_min, 60)
        return {
            "batch_job_id": job_id,
            "job_name": f"bf-{job_id}",
            "scheduler": request.scheduler,
            "project": request.project,
            "queue": request.queue,
            "num_nodes": request.num_nodes,
            "wall_time_min": request.wall_time_min,
            "wall_time_hms": f"{hours:02d}:{minutes:02d}:00",
            "job_mode": request.job_mode,
            "filter_tags": dict(request.filter_tags),
            "pre_run": list(options.get("pre_run", [])),
            "directives": list(options.get("directives", [])),
            "options": options,
            "site": str(self.site.path),
            "db_url": self.db_url,
            "python": sys.executable,
            "log_path": str(log_path),
            "platform": options.get("platform", request.scheduler),
            "mpi_launcher": options.get("mpi_launcher", ""),
            "workers": options.get("workers"),
            "idle_timeout": options.get("idle_timeout"),
        }

    def _write_script(self, job_id: int, request: BatchJobRequest,
                      scheduler: Scheduler) -> tuple[Path, Path]:
        log_path = self.site.logs_dir / f"batch-job-{job_id}.log"
        text = render_script(scheduler.template,
                             self.script_fields(job_id, request, log_path),
                             self.site.path / "templates")
        folder = self.site.path / "batch"
        private_dir(folder)
        script = folder / f"bf-job-{job_id}.sh"
        # Private: the script may carry the store's URL (with a password).
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.store.update_batch_job(job_id, {"script_path": str(script)})
        return script, log_path

    # -- remove ------------------------------------------------------------------------------

    def remove(self, job_id: int) -> dict[str, Any]:
        """Ask the scheduler to remove a queued or running job (PENDING_DELETION; the next
        sync sees it FINISHED)."""
        job = self.get(job_id)
        state = B(job["state"])
        if state in (B.FINISHED, B.SUBMIT_FAILED):
            raise BatchJobError(f"batch job {job_id} has already ended ({state})")
        if state is B.PENDING_SUBMISSION:
            raise BatchJobError(f"batch job {job_id} is being submitted and has no "
                                f"{job['scheduler']} id yet; try again in a moment")
        self.scheduler(job["scheduler"]).delete(job["scheduler_id"])
        if state is not B.PENDING_DELETION:
            self._move(job_id, B.PENDING_DELETION, {}, from_state=state)
        return self.get(job_id)

    # -- sync --------------------------------------------------------------------------------

    def sync(self) -> SyncReport:
        """Ask each scheduler about the jobs it holds and store what changed."""
        report = SyncReport()
        jobs = self.store.batch_jobs(states=[s.value for s in POLLED_BATCH_STATES])
        by_scheduler: dict[str, list[dict[str, Any]]] = {}
        for job in jobs:
            by_scheduler.setdefault(job["scheduler"], []).append(job)
        now = self.clock()
        for job in self.store.batch_jobs(states=[B.PENDING_SUBMISSION.value]):
            if now - job["created_at"] > ORPHAN_SUBMISSION_S and self.store.update_batch_job(
                    job["id"], {"state": B.SUBMIT_FAILED.value, "ended_at": now,
                                "error": "the submitting process stopped before the "
                                         "scheduler answered; if the scheduler did accept "
                                         "the job, it runs unrecorded"},
                    from_states=[B.PENDING_SUBMISSION.value]):
                report.changed.append(self.get(job["id"]))
        for name, group in by_scheduler.items():
            scheduler = self.scheduler(name)
            try:
                found = scheduler.statuses([j["scheduler_id"] for j in group])
            except SchedulerError as exc:
                # Not asked is not gone: the jobs keep their states until the scheduler
                # answers again.
                log.warning("cannot poll %s: %s", name, exc)
                report.errors[name] = str(exc)
                continue
            for job in group:
                changed = self._apply_status(job, found.get(job["scheduler_id"]), now)
                if changed is not None:
                    report.changed.append(changed)
        return report

    def _apply_status(self, job: dict[str, Any], status, now: float) -> dict[str, Any] | None:
        current = B(job["state"])
        if status is None:
            new, info = B.FINISHED, {**job["status_info"], "listed": False}
        else:
            new, info = (status.state or current), {**status.as_info(), "listed": True}
        if current is B.PENDING_DELETION and new is not B.FINISHED:
            new = current  # still leaving the queue
        values: dict[str, Any] = {}
        if info != job["status_info"]:
            values["status_info"] = info
        if new is not current:
            if new not in BATCH_TRANSITIONS[current]:
                log.warning("batch job %s: %s reports %s after %s; ignored", job["id"],
                            job["scheduler"], new, current)
                return None
            values["state"] = new.value
            if new is B.RUNNING and job["started_at"] is None:
                values["started_at"] = now
            if new is B.FINISHED:
                values["ended_at"] = now
        if not values:
            return None
        if self.store.update_batch_job(job["id"], values, from_states=[current.value]):
            return {**job, **values}
        return None

    def _move(self, job_id: int, target: BatchJobState, values: Mapping[str, Any], *,
              from_state: BatchJobState | None = None) -> None:
        sources = [from_state.value] if from_state else [s.value for s in batch_sources(target)]
        if not self.store.update_batch_job(job_id, {**values, "state": target.value},
                                           from_states=sources):
            raise BatchJobError(f"batch job {job_id} changed state meanwhile; it was not "
                                f"moved to {target}")

