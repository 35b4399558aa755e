"""Flux: ``flux batch``, ``flux jobs``, ``flux cancel``."""

from __future__ import annotations

from pathlib import Path

from .base import BatchJobState, Scheduler, SchedulerStatus

B = BatchJobState

#: Flux's F58 job ids: base58 with this alphabet after a "ƒ" ("f" in an ASCII locale)
#: (https://flux-framework.readthedocs.io/projects/flux-rfc/en/latest/spec_19.html).
_F58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_FORMAT = "{id.dec}|{state}|{result}|{nnodes}|{runtime}"


def f58_to_int(text: str) -> int:
    """Decode an F58 job id ("ƒNH" -> 1234)."""
    digits = text.strip().lstrip("ƒf")
    if not digits:
        raise ValueError(text)
    value = 0
    for ch in digits:
        value = value * 58 + _F58.index(ch)
    return value


class FluxScheduler(Scheduler):
    name = "flux"
    template = "flux.sh.j2"
    # Flux RFC 21 job states; CLEANUP: the job's tasks have exited, the epilog runs.
    states = {
        "NEW": B.QUEUED,
        "DEPEND": B.QUEUED,
        "PRIORITY": B.QUEUED,
        "SCHED": B.QUEUED,
        "RUN": B.RUNNING,
        "CLEANUP": B.RUNNING,
        "INACTIVE": B.FINISHED,
    }

    def _submit_args(self, script: Path, log_path: Path) -> list[str]:
        return ["flux", "batch", str(script)]

    def _parse_submit_output(self, stdout: str) -> str:
        # flux batch prints the id in F58; it is stored in decimal, which every flux command
        # accepts and which survives any locale.
        text = stdout.strip().splitlines()[-1].strip()
        return text if text.isdigit() else str(f58_to_int(text))

    def _status_args(self, scheduler_ids: list[str]) -> list[str]:
        return ["flux", "jobs", "-n", f"--format={_FORMAT}", *scheduler_ids]

    def _status_unknown_ids(self, stderr: str) -> bool:
        # Flux keeps inactive jobs listed; an unknown id is one purged from its job list.
        return "not found" in stderr

    def _parse_status_output(self, stdout: str) -> dict[str, SchedulerStatus]:
        found = {}
        for line in stdout.splitlines():
            if not line.strip():
                continue
            job_id, native, result, nnodes, runtime = line.strip().split("|")
            found[job_id] = SchedulerStatus(self.translate(native), native,
                                            {"result": result, "nodes": nnodes,
                                             "time_used": runtime})
        return found

    def _delete_args(self, scheduler_id: str) -> list[str]:
        return ["flux", "cancel", scheduler_id]
