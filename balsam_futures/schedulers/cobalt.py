"""Cobalt (ALCF's former scheduler): ``qsub``, ``qstat --header``, ``qdel``."""

from __future__ import annotations

from pathlib import Path

from .base import BatchJobState, Scheduler, SchedulerStatus

B = BatchJobState

_HEADER = "JobID:State:Queue:Nodes:WallTime:RunTime"


class CobaltScheduler(Scheduler):
    name = "cobalt"
    template = "cobalt.sh.j2"
    # Cobalt's qstat states (cqstat); "starting" holds the nodes already.
    states = {
        "queued": B.QUEUED,
        "user_hold": B.QUEUED,
        "admin_hold": B.QUEUED,
        "dep_hold": B.QUEUED,
        "maxrun_hold": B.QUEUED,
        "dep_fail": B.QUEUED,
        "starting": B.RUNNING,
        "running": B.RUNNING,
        "exiting": B.RUNNING,
        "killing": B.RUNNING,
        "done": B.FINISHED,
    }

    def _submit_args(self, script: Path, log_path: Path) -> list[str]:
        # Nodes, time, queue, project and output are #COBALT directives in the script.
        return ["qsub", str(script)]

    def _parse_submit_output(self, stdout: str) -> str:
        # The id is the last line; warnings about the allocation may come before it.
        job_id = stdout.strip().splitlines()[-1].strip()
        if not job_id.isdigit():
            raise ValueError(job_id)
        return job_id

    def _status_args(self, scheduler_ids: list[str]) -> list[str]:
        return ["qstat", "--header", _HEADER, *scheduler_ids]

    def _parse_status_output(self, stdout: str) -> dict[str, SchedulerStatus]:
        names: list[str] = []
        found = {}
        for line in stdout.splitlines():
            cells = line.split()
            if not cells or set(line.strip()) <= {"=", "-"}:
                continue
            if cells[0] == "JobID":
                names = [c.lower() for c in cells]
                continue
            row = dict(zip(names, cells))
            native = row["state"]
            found[row["jobid"]] = SchedulerStatus(
                self.translate(native), native,
                {"queue": row.get("queue", ""), "nodes": row.get("nodes", ""),
                 "time_limit": row.get("walltime", ""), "time_used": row.get("runtime", "")})
        return found

    def _delete_args(self, scheduler_id: str) -> list[str]:
        return ["qdel", scheduler_id]
