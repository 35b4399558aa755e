"""Local: the batch job is a launcher in the background on this machine; its id is the pid.

    submit:   python -c TRAMPOLINE script log ──> bash script (new session, output in log)
              the trampoline prints the pid and exits, so the job outlives the submitter
              and is never its zombie
    status:   the pid runs (and is a balsam_futures job) -> RUNNING, else gone -> FINISHED
    delete:   SIGTERM to the pid (the script ``exec``s the launcher, which stops cleanly)
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .base import BatchJobState, Scheduler, SchedulerStatus

B = BatchJobState

_TRAMPOLINE = """\
import subprocess, sys
with open(sys.argv[2], "ab") as log:
    proc = subprocess.Popen(["/bin/bash", sys.argv[1]], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
print(proc.pid)
"""
#: What a live job's command line holds: the script (before it execs) or the launcher.
_MARKERS = (b"balsam_futures", b"bf-job-")


class LocalScheduler(Scheduler):
    name = "local"
    template = "local.sh.j2"
    states = {"running": B.RUNNING}

    def submit(self, script: Path, log_path: Path) -> str:
        out = self._run([sys.executable, "-c", _TRAMPOLINE, str(script), str(log_path)],
                        cwd=Path(script).parent)
        pid = out.strip()
        if not pid.isdigit():
            raise ValueError(f"the local launcher did not start: {out!r}")
        return pid

    def statuses(self, scheduler_ids: Sequence[str]) -> dict[str, SchedulerStatus]:
        return {str(i): SchedulerStatus(B.RUNNING, "running", {"pid": int(i)})
                for i in scheduler_ids if _alive(int(i))}

    def delete(self, scheduler_id: str) -> None:
        pid = int(scheduler_id)
        if not _alive(pid):
            return  # it ended already (and the pid may belong to another process now)
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs a balsam_futures job (not a zombie, not a reused pid)."""
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():  # no procfs (macOS): the pid alone must do
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        cmdline = (proc / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X") and any(m in cmdline for m in _MARKERS)
