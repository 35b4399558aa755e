"""IBM Spectrum LSF: ``bsub < script``, ``bjobs -json``, ``bkill``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .base import BatchJobState, Scheduler, SchedulerStatus

B = BatchJobState

_SUBMITTED = re.compile(r"Job <(\d+)> is submitted")
_FIELDS = "jobid stat queue nexec_host exit_code"


class LSFScheduler(Scheduler):
    name = "lsf"
    template = "lsf.sh.j2"
    # https://www.ibm.com/docs/en/spectrum-lsf/10.1.0?topic=execution-about-job-states
    states = {
        "PEND": B.QUEUED,
        "PSUSP": B.QUEUED,
        "WAIT": B.QUEUED,
        "PROV": B.RUNNING,
        "RUN": B.RUNNING,
        "USUSP": B.RUNNING,
        "SSUSP": B.RUNNING,
        "DONE": B.FINISHED,
        "EXIT": B.FINISHED,
        "ZOMBI": B.FINISHED,
    }
    # bjobs exits 255 when one of the ids is unknown; the JSON still lists every id, the
    # unknown ones with an ERROR field.
    status_ok_codes = frozenset({0, 255})

    def _submit_args(self, script: Path, log_path: Path) -> list[str]:
        return ["bsub"]

    def _submit_input(self, script: Path) -> str:
        # bsub reads #BSUB directives only from a script given on stdin ("bsub < script").
        return script.read_text()

    def _parse_submit_output(self, stdout: str) -> str:
        m = _SUBMITTED.search(stdout)
        if m is None:
            raise ValueError(stdout)
        return m.group(1)

    def _status_args(self, scheduler_ids: list[str]) -> list[str]:
        return ["bjobs", "-a", "-json", "-o", _FIELDS, *scheduler_ids]

    def _parse_status_output(self, stdout: str) -> dict[str, SchedulerStatus]:
        found = {}
        for record in json.loads(stdout).get("RECORDS", []):
            if "ERROR" in record or "STAT" not in record:
                continue  # "Job <42> is not found"
            native = record["STAT"]
            found[str(record["JOBID"])] = SchedulerStatus(
                self.translate(native), native,
                {"queue": record.get("QUEUE", ""), "hosts": record.get("NEXEC_HOST", ""),
                 "exit_code": record.get("EXIT_CODE", "")})
        return found

    def _delete_args(self, scheduler_id: str) -> list[str]:
        return ["bkill", scheduler_id]
