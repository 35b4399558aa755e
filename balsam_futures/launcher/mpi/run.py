"""Running one task through the MPI launcher, from inside a worker.

    worker (warm, on the launcher's node)            every rank (rank.py)
    -------------------------------------            --------------------
    payload + context -> <tmp>/task.pkl
    argv = MpiLauncher.argv(layout, [python -m mpi.rank <tmp>])  ->  fn(*args) on each rank
    wait (a time-out or kill takes the process group)            rank 0 -> <tmp>/result
    <tmp>/result | <tmp>/error.<rank> | launcher failed  <-----  a raising rank -> error.<rank>,
                                                                 then MPI Abort (no rank hangs)

The worker process only waits; the ranks run where the placement put them.  A shell task
uses ``command_argv`` to put the MPI launcher in front of its own command.
"""

from __future__ import annotations

import glob
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence

from ...errors import MpiLaunchError
from ...tasks import TaskContext
from ..workers.process import run_child
from .base import RankLayout, detect_launcher
from .rank_variables import LOCAL_RANK_VARIABLES

RANK_MODULE = "balsam_futures.launcher.mpi.rank"
#: Lines of the launcher's own output kept in an MpiLaunchError.
TAIL_LINES = 30


def layout_of(task: TaskContext) -> RankLayout:
    r = task.resources
    return RankLayout(task.hosts, r.ranks_per_node, r.threads_per_rank, r.gpus_per_rank,
                      task.gpu_ids if r.gpus_per_rank else ())


def command_argv(task: TaskContext, command: Sequence[str],
                 env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The argv that starts ``command`` on every rank of ``task``, and the environment to run
    it with (``env`` plus what the layout needs)."""
    launcher = detect_launcher(os.environ, name=task.mpi_launcher or "mpich", locate=True,
                               task_id=task.id)
    layout = layout_of(task)
    extra = launcher.env(layout)
    # Ranks must find their own local rank, not one inherited from an outer launcher.
    base = {k: v for k, v in env.items() if k not in LOCAL_RANK_VARIABLES}
    return launcher.argv(layout, list(command), env=extra), {**base, **extra}


def run_python(task: TaskContext, payload: bytes,
               env: Mapping[str, str] | None = None) -> tuple[bool, bytes]:
    """Run a Python task on every rank, with this run's own variables ``env`` (added to the
    worker's environment); (ok, result or packed exception) of the run."""
    where = task.workdir if task.workdir else None
    tmp = tempfile.mkdtemp(prefix=f"bf-task{task.id}-", dir=where)
    try:
        with open(os.path.join(tmp, "task.pkl"), "wb") as f:
            pickle.dump((payload, task), f, protocol=pickle.HIGHEST_PROTOCOL)
        argv, run_env = command_argv(task, [sys.executable, "-m", RANK_MODULE, tmp],
                                     {**os.environ, **(env or {})})
        out_path = os.path.join(tmp, "mpi.out")
        with open(out_path, "wb") as out:
            try:
                # run_child: the MPI launcher dies with this worker, and with the launcher.
                code = run_child(argv, mpi=True, env=run_env, stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, cwd=task.workdir)
            except OSError as exc:
                raise MpiLaunchError(f"task {task.id}: cannot start {argv[0]!r}: {exc}",
                                     task_id=task.id) from exc
        # error.<rank>, written then renamed by the rank (error.<rank>.part meanwhile).
        errors = sorted((p for p in glob.glob(os.path.join(tmp, "error.*"))
                         if p.rsplit(".", 1)[1].isdigit()),
                        key=lambda p: int(p.rsplit(".", 1)[1]))
        if errors:
            with open(errors[0], "rb") as f:
                return False, f.read()
        result = os.path.join(tmp, "result")
        if code == 0 and os.path.exists(result):
            with open(result, "rb") as f:
                return True, f.read()
        with open(out_path, "rb") as f:
            tail = "\n".join(f.read().decode(errors="replace").splitlines()[-TAIL_LINES:])
        raise MpiLaunchError(
            f"task {task.id}: {os.path.basename(argv[0])} exited with code {code} and no rank "
            f"returned a result; its output ends with:\n{tail}",
            task_id=task.id, returncode=code, output_tail=tail)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
