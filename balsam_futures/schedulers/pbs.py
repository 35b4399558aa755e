"""PBS (PBS Professional / OpenPBS, and Torque-style ``qstat -f``): ``qsub``, ``qstat``,
``qdel``."""

from __future__ import annotations

import re
from pathlib import Path

from .base import BatchJobState, Scheduler, SchedulerStatus

B = BatchJobState

_ATTRIBUTE = re.compile(r"^\s+([A-Za-z_][\w.]*) = (.*)$")
#: Attributes kept in a job's status_info.
_KEPT = {"queue": "queue", "Resource_List.nodect": "nodes",
         "Resource_List.walltime": "time_limit", "resources_used.walltime": "time_used",
         "Exit_status": "exit_code", "comment": "comment"}


class PBSScheduler(Scheduler):
    name = "pbs"
    template = "pbs.sh.j2"
    # PBS Professional Reference Guide, "Job States" (qstat -f job_state); C is Torque's
    # "completed".  E (exiting) still holds the nodes.
    states = {
        "Q": B.QUEUED,
        "H": B.QUEUED,
        "W": B.QUEUED,
        "T": B.QUEUED,
        "S": B.QUEUED,
        "U": B.QUEUED,
        "M": B.QUEUED,
        "R": B.RUNNING,
        "E": B.RUNNING,
        "B": B.RUNNING,
        "F": B.FINISHED,
        "X": B.FINISHED,
        "C": B.FINISHED,
    }
    # qstat exits 153 (PBSE_UNKJOBID, 15001 & 0xff) when one of the ids is unknown, and still
    # prints the others.
    status_ok_codes = frozenset({0, 153})

    def _submit_args(self, script: Path, log_path: Path) -> list[str]:
        return ["qsub", str(script)]

    def _parse_submit_output(self, stdout: str) -> str:
        # "1234.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov" (PBS Pro), "1234" (wrappers).
        job_id = stdout.strip().splitlines()[-1].strip()
        if not job_id or not job_id.split(".")[0].rstrip("[]").isdigit():
            raise ValueError(job_id)
        return job_id

    def id_key(self, scheduler_id: str) -> str:
        # qstat may name the server differently from qsub (short vs full host name).
        return scheduler_id.split(".")[0]

    def _status_args(self, scheduler_ids: list[str]) -> list[str]:
        # The text of ``qstat -f`` is common to PBS Pro, OpenPBS and Torque (and Slurm's
        # Torque wrappers); ``-F json`` is PBS Pro only.
        return ["qstat", "-f", *scheduler_ids]

    def _history_args(self, scheduler_ids: list[str]) -> list[str]:
        # PBS Pro keeps finished jobs when job_history_enable is set: -x lists them.
        return ["qstat", "-x", "-f", *scheduler_ids]

    def _parse_status_output(self, stdout: str) -> dict[str, SchedulerStatus]:
        jobs: dict[str, dict[str, str]] = {}
        current: dict[str, str] | None = None
        last_key = None
        for line in stdout.splitlines():
            if line.startswith("Job Id:"):
                current = jobs[self.id_key(line.split(":", 1)[1].strip())] = {}
                last_key = None
            elif current is not None and (m := _ATTRIBUTE.match(line)):
                last_key = m.group(1)
                current[last_key] = m.group(2).strip()
            elif current is not None and last_key and line[:1] == "\t":
                # A long value (Variable_List, comment) continues on lines indented by a tab.
                current[last_key] += line.strip()
        return {job_id: SchedulerStatus(self.translate(attrs.get("job_state", "?")),
                                        attrs.get("job_state", "?"),
                                        {_KEPT[k]: v for k, v in attrs.items() if k in _KEPT})
                for job_id, attrs in jobs.items()}

    def _delete_args(self, scheduler_id: str) -> list[str]:
        return ["qdel", scheduler_id]
