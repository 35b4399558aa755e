"""A warm worker process: imports once, then runs Python tasks sent by its launcher.

    launcher (workers.py)                 worker (this module)
    ---------------------                 --------------------
    socketpair + Popen                    Connection(fd)
    send(init)             ---- init -->  run initializer once
    send((id, payload))    ---- task -->  fn(*args, **kwargs)
                           <-- result --  (id, ok, result or packed exception)
    send(None)             ---- stop -->  exit

The worker never touches the store; only the launcher does.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
from multiprocessing.connection import Connection
from typing import Any

from .. import tasks as _tasks
from ..errors import WorkerInitError
from ..serialization import CallLoader, dump_exception, dump_result, fill_parent_results


def _run_initializer(init_blob: bytes | None, where: str) -> bytes | None:
    """Run the executor's initializer; return the packed error if it raised."""
    if init_blob is None:
        return None
    try:
        initializer, initargs = pickle.loads(init_blob)
        initializer(*initargs)
    except BaseException as exc:  # noqa: BLE001 - any failure breaks this worker's tasks
        err = WorkerInitError(f"the executor's initializer raised {type(exc).__name__}: {exc}")
        err.__cause__ = exc
        return dump_exception(err, f"worker initializer on {where}")
    return None


def _run_task(loader: CallLoader, task_id: int, payload: bytes, where: str,
              parent_results: dict | None = None, workdir: str | None = None) -> tuple:
    home = os.getcwd()
    try:
        fn, args, kwargs = loader.load(payload)
        if parent_results:
            args, kwargs = fill_parent_results(args, kwargs, parent_results)
        if workdir is not None:
            os.makedirs(workdir, mode=0o700, exist_ok=True)
            os.chdir(workdir)
        value = fn(*args, **kwargs)
        return (task_id, True, dump_result(value))
    except BaseException as exc:  # noqa: BLE001 - a task's SystemExit is its own failure
        return (task_id, False, dump_exception(exc, f"Task {task_id} {where}"))
    finally:
        _tasks._set_current(None)
        if workdir is not None:
            os.chdir(home)  # the next task starts where the worker started


def _serve(loader: CallLoader, task_id: int, payload: bytes, context: dict,
           where: str) -> tuple:
    """Run one task as its context says: here, or on its ranks through the MPI launcher."""
    on_ranks = context.pop("python_on_ranks", False)
    env = context.pop("env", {})
    if context.get("workdir"):
        context["workdir"] = _tasks.resolve_workdir(context["workdir"], context.get("site"))
    task = _tasks.TaskContext(id=task_id, **context)
    # Per-run variables (OMP_NUM_THREADS): the task and what it starts see them.
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        if on_ranks:
            from .mpi_task import run_python

            try:
                if task.workdir:
                    os.makedirs(task.workdir, mode=0o700, exist_ok=True)
                ok, blob = run_python(task, payload)
                return (task_id, ok, blob)
            except BaseException as exc:  # noqa: BLE001 - reported as the task's failure
                return (task_id, False, dump_exception(exc, f"Task {task_id} {where}"))
        _tasks._set_current(task)
        return _run_task(loader, task_id, payload, where, context.get("parent_results"),
                         task.workdir)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    fd = argv[0]
    conn = Connection(int(fd))
    _kind, launcher_id, init_blob = pickle.loads(conn.recv_bytes())
    where = f"on {socket.gethostname()} (launcher {launcher_id}, worker pid {os.getpid()})"
    init_error = _run_initializer(init_blob, where)
    loader = CallLoader()
    while True:
        try:
            msg: Any = pickle.loads(conn.recv_bytes())
        except EOFError:
            break
        if msg is None:
            break
        task_id, payload, context = msg
        if init_error is not None:
            answer = (task_id, False, init_error)
        else:
            answer = _serve(loader, task_id, payload, context, where)
        conn.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
    conn.close()
