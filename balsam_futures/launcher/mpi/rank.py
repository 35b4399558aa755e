"""``python -m balsam_futures.launcher.mpi.rank DIR``: one rank of an MPI Python task.

Every rank runs the task's callable with ``mpi4py.MPI.COMM_WORLD`` available.  Rank 0 writes
the return value to ``DIR/result``; a rank that raises writes its packed exception to
``DIR/error.<rank>`` and aborts the job, so ranks waiting for it in a collective do not hang.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys

from ... import tasks as _tasks
from ...serialization import CallLoader, dump_exception, dump_result, fill_parent_results
from .rank_variables import world_rank


def _write(path: str, blob: bytes) -> None:
    # Written then renamed, so the waiting worker never reads half a file.
    with open(path + ".part", "wb") as f:
        f.write(blob)
    os.replace(path + ".part", path)


def main(directory: str) -> int:
    with open(os.path.join(directory, "task.pkl"), "rb") as f:
        payload, task = pickle.load(f)
    try:
        from mpi4py import MPI
    except BaseException as exc:  # noqa: BLE001 - reported as the task's failure
        rank = world_rank(os.environ)  # MPI is not up: its launcher's variables say
        err = RuntimeError(f"rank {rank} could not import mpi4py ({exc}); install mpi4py "
                           "built for the MPI library the launcher uses")
        err.__cause__ = exc
        _write(os.path.join(directory, f"error.{rank}"),
               dump_exception(err, f"Task {task.id} rank {rank} on {socket.gethostname()}"))
        return 1
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    _tasks._set_current(task)
    where = (f"Task {task.id} rank {rank} of {comm.Get_size()} on {socket.gethostname()} "
             f"(launcher {task.launcher_id})")
    try:
        fn, args, kwargs = CallLoader().load(payload)
        if task.parent_results:
            args, kwargs = fill_parent_results(args, kwargs, task.parent_results)
        value = fn(*args, **kwargs)
        if rank == 0:
            _write(os.path.join(directory, "result"), dump_result(value))
    except BaseException as exc:  # noqa: BLE001 - any rank's failure is the task's
        _write(os.path.join(directory, f"error.{rank}"), dump_exception(exc, where))
        sys.stdout.flush()
        comm.Abort(1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
