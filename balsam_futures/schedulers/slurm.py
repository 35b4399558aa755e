"""Slurm: ``sbatch --parsable``, ``squeue``, ``sacct``, ``scancel``."""

from __future__ import annotations

from pathlib import Path

from .base import BatchJobState, Scheduler, SchedulerStatus

B = BatchJobState

#: squeue's fields, in order: id, state, partition, nodes, time limit, time used, reason.
_SQUEUE_FORMAT = "%i|%T|%P|%D|%l|%M|%r"
_SQUEUE_KEYS = ("queue", "nodes", "time_limit", "time_used", "reason")
#: sacct's fields, in order (only the allocation line of each job: --allocations).
_SACCT_FORMAT = "JobID,State,Partition,NNodes,Timelimit,Elapsed,ExitCode"
_SACCT_KEYS = ("queue", "nodes", "time_limit", "time_used", "exit_code")


class SlurmScheduler(Scheduler):
    name = "slurm"
    template = "slurm.sh.j2"
    # https://slurm.schedmd.com/squeue.html#SECTION_JOB-STATE-CODES
    # CONFIGURING: nodes are allocated and booting, the script has not started; counted as
    # running so that the service does not withdraw a job that already holds its nodes.
    # COMPLETING: the script has ended and the epilog runs; still running here, so that the
    # final state (COMPLETED, FAILED, TIMEOUT...) is the one recorded.
    states = {
        "PENDING": B.QUEUED,
        "REQUEUED": B.QUEUED,
        "REQUEUE_HOLD": B.QUEUED,
        "REQUEUE_FED": B.QUEUED,
        "RESV_DEL_HOLD": B.QUEUED,
        "SUSPENDED": B.QUEUED,
        "CONFIGURING": B.RUNNING,
        "RUNNING": B.RUNNING,
        "SIGNALING": B.RUNNING,
        "STAGE_OUT": B.RUNNING,
        "STOPPED": B.RUNNING,
        "RESIZING": B.RUNNING,
        "COMPLETING": B.RUNNING,
        "COMPLETED": B.FINISHED,
        "CANCELLED": B.FINISHED,
        "FAILED": B.FINISHED,
        "TIMEOUT": B.FINISHED,
        "NODE_FAIL": B.FINISHED,
        "PREEMPTED": B.FINISHED,
        "BOOT_FAIL": B.FINISHED,
        "DEADLINE": B.FINISHED,
        "OUT_OF_MEMORY": B.FINISHED,
        "SPECIAL_EXIT": B.FINISHED,
        "REVOKED": B.FINISHED,
    }

    def _submit_args(self, script: Path, log_path: Path) -> list[str]:
        # The output path is a directive in the template (#SBATCH --output).
        return ["sbatch", "--parsable", str(script)]

    def _parse_submit_output(self, stdout: str) -> str:
        # --parsable prints "<id>" or "<id>;<cluster>" (https://slurm.schedmd.com/sbatch.html).
        job_id = stdout.strip().splitlines()[-1].split(";")[0].strip()
        if not job_id.isdigit():
            raise ValueError(job_id)
        return job_id

    def _status_args(self, scheduler_ids: list[str]) -> list[str]:
        # --states=all: finished jobs stay listed for MinJobAge (300 s by default), so a short
        # job's end state is seen even without accounting.
        return ["squeue", "--noheader", "--states=all", f"--jobs={','.join(scheduler_ids)}",
                f"--format={_SQUEUE_FORMAT}"]

    def _status_unknown_ids(self, stderr: str) -> bool:
        # squeue fails on a single unknown id ("Invalid job id specified"); with several ids it
        # lists the known ones and succeeds.
        return "Invalid job id" in stderr

    def _parse_status_output(self, stdout: str) -> dict[str, SchedulerStatus]:
        return _parse_pipes(self, stdout, _SQUEUE_KEYS)

    def _history_args(self, scheduler_ids: list[str]) -> list[str]:
        return ["sacct", "--noheader", "--parsable2", "--allocations",
                f"--jobs={','.join(scheduler_ids)}", f"--format={_SACCT_FORMAT}"]

    def _parse_history_output(self, stdout: str) -> dict[str, SchedulerStatus]:
        return _parse_pipes(self, stdout, _SACCT_KEYS)

    def _delete_args(self, scheduler_id: str) -> list[str]:
        return ["scancel", scheduler_id]


def _parse_pipes(sched: Scheduler, stdout: str, keys: tuple[str, ...]
                 ) -> dict[str, SchedulerStatus]:
    found = {}
    for line in stdout.splitlines():
        if not line.strip():
            continue
        job_id, native, *rest = line.strip().split("|")
        # sacct says "CANCELLED by 1000"; squeue never adds words.
        native = native.split()[0] if native.strip() else "UNKNOWN"
        found[job_id] = SchedulerStatus(sched.translate(native), native,
                                        dict(zip(keys, rest)))
    return found
