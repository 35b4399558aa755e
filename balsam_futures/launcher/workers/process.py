"""A warm worker process: imports once, then runs Python tasks sent by its launcher.

    launcher (pool.py)                    worker (this module)
    ------------------                    --------------------
    socketpair + Popen                    Connection(fd)
    send(init)             ---- init -->  run initializer once
    send((id, payload))    ---- task -->  fn(*args, **kwargs)
                           <-- result --  (id, ok, result or packed exception)
    send(None)             ---- stop -->  exit

The worker never touches the store; only the launcher does.

A worker dies with its launcher, and takes what it started with it: a launcher killed
outright (kill -9, the OOM killer) has its tasks requeued, and a worker left running would
run its task beside the requeued copy, in the same working directory.

    launcher dies ─┬─> prctl(2) PR_SET_PDEATHSIG: SIGHUP ─> _on_parent_death (main thread) ┐
                   └─> its end of the socket closes ─> _watch_launcher (thread): POLLHUP ─┴─>
    _orphaned: SIGTERM the MPI launchers this worker started, ORPHAN_GRACE_S, then SIGKILL
    the worker's process group (itself and what its task started: see run_child)
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.connection import Connection
from typing import Any, NoReturn

from ... import tasks as _tasks
from ...errors import WorkerInitError
from ...serialization import (
    CallLoader,
    dump_exception,
    dump_result,
    exception_text,
    fill_parent_results,
)
from ...sitedir import private_dir

#: PR_SET_PDEATHSIG in <linux/prctl.h>: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
#: A worker's parent-death signal.  Not SIGTERM, which the launcher sends itself to stop an MPI
#: run, and getppid() cannot tell them apart: a kill -9 of the (multi-threaded) launcher first
#: hands the children of its main thread to another of its threads, and signals them then
#: (forget_original_parent in the kernel's exit.c).  A worker has no terminal to hang up.
_PARENT_DEATH_SIGNAL = signal.SIGHUP
#: How long the MPI launchers of an orphaned worker get, after SIGTERM, to stop their ranks
#: (hydra and srun pass it on, to ranks on other nodes too) before the worker's process group
#: is killed.  Longer lets more of them stop cleanly; it is also how long those ranks may run
#: beside the requeued copy of their task.
ORPHAN_GRACE_S = 0.5
#: What poll(2) reports on a socket whose peer has closed.  POLLIN is not asked for, so the
#: messages the main thread reads never wake the watcher: no system call per task.
_HANGUP = select.POLLHUP | getattr(select, "POLLRDHUP", 0)

#: The commands run_child is waiting for (one at a time: a worker runs one task), each with
#: whether it is an MPI launcher.
_children: dict[subprocess.Popen, bool] = {}
#: Taken by the first thread that finds the launcher gone (or by the main thread when told to
#: stop): any other then leaves the ending to it.
_ending = threading.Lock()
#: (launcher pid, worker pid) once _die_with_launcher has run.
_pids: tuple[int, int] | None = None


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's prctl(2), or None where there is none (not Linux)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    prctl.restype = ctypes.c_int
    return prctl


def set_parent_death_signal(sig: int) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (prctl(2),
    PR_SET_PDEATHSIG); False where it cannot.

    The signal comes when the *thread* that started this process exits: pool.py starts
    workers from the launcher's dispatcher, its main thread, which lives as long as the
    launcher (an agent's from the agent's main thread).  It is kept across execve(2), except
    of a set-user-ID program, and cleared in children, which ask for their own (run_child).
    """
    prctl = _prctl()
    return prctl is not None and prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def _say(text: str) -> None:
    # os.write, not print: this runs in a signal handler too, maybe inside a print.
    try:
        os.write(2, f"balsam_futures worker {os.getpid()}: {text}\n".encode())
    except OSError:
        pass


def _exited(pid: int) -> bool:
    """Whether child ``pid`` has exited; left for its Popen to reap (WNOWAIT), so that the
    task's code does not go on with a made-up exit code meanwhile."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # reaped already


def _signal_children(sig: int, mpi_only: bool = False) -> list[int]:
    """Send ``sig`` to the commands run_child waits for; returns their pids."""
    pids = []
    for proc, is_mpi in list(_children.items()):
        if is_mpi or not mpi_only:
            try:
                proc.send_signal(sig)
            except OSError:
                pass
            pids.append(proc.pid)
    return pids


def _orphaned(why: str) -> None:
    """The launcher is gone: stop what this worker started, then the worker.  Returns, at
    once, only where another thread is already ending the worker."""
    if not _ending.acquire(blocking=False):
        return
    try:
        _say(f"the launcher is gone ({why}); stopping this worker and what its task started")
        mpi = _signal_children(signal.SIGTERM, mpi_only=True)
        until = time.monotonic() + ORPHAN_GRACE_S
        while mpi and time.monotonic() < until:
            time.sleep(0.01)
            mpi = [pid for pid in mpi if not _exited(pid)]
    finally:
        _signal_children(signal.SIGKILL)  # wherever they are, should they have left the group
        # pool.py starts each worker as the leader of its own process group, which holds
        # what its task started (MPI launchers put their proxies and ranks in sessions of
        # their own: those stop with their launcher).  Never another process's group.
        if _pids is not None and os.getpgrp() == _pids[1]:
            os.killpg(os.getpgrp(), signal.SIGKILL)  # this worker too
        os._exit(1)


def _await_ending() -> NoReturn:
    """Let the thread that is ending this worker finish (it kills this process)."""
    time.sleep(ORPHAN_GRACE_S + 5.0)
    os._exit(1)


def _on_parent_death(signum: int, _frame: Any) -> None:
    if _pids is not None and os.getpid() == _pids[1]:
        _orphaned("the parent-death signal")  # returns only if the watcher is at it
        return
    # A process that a task forked, which inherited this handler: as the default action.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _watch_launcher(fd: int) -> None:
    """Thread: end the worker when the launcher's end of the socket closes, even while a task
    runs (the main thread reads the socket only between tasks)."""
    poller = select.poll()
    poller.register(fd, _HANGUP)
    while not poller.poll():
        pass
    _orphaned("its end of the worker's socket closed")


def _die_with_launcher(launcher_pid: int, fd: int) -> None:
    """Make this worker stop, with what it starts, as soon as its launcher dies."""
    global _pids
    _pids = (launcher_pid, os.getpid())
    # Kept by no command a task starts: one holding it would hide the worker's death from the
    # launcher, which waits for EOF on its end (subprocess closes it; os.system would not).
    os.set_inheritable(fd, False)
    signal.signal(_PARENT_DEATH_SIGNAL, _on_parent_death)
    set_parent_death_signal(_PARENT_DEATH_SIGNAL)
    if os.getppid() != launcher_pid:  # it died before the signal was asked for
        os._exit(1)
    threading.Thread(target=_watch_launcher, args=(fd,), name="balsam-futures-launcher-watch",
                     daemon=True).start()


def _dies_with(parent: int, sig: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when ``parent`` dies."""

    def preexec() -> None:
        set_parent_death_signal(sig)
        if os.getppid() != parent:  # it died before the call above
            os._exit(128 + sig)

    return preexec


def dies_with_this_process(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when this process
    (the thread that starts it, see set_parent_death_signal) dies; None where prctl(2) is
    missing.  A ``preexec_fn`` makes subprocess fork rather than vfork."""
    # _prctl is looked up here: loading a library in the forked child could deadlock.
    return _dies_with(os.getpid(), sig) if _prctl() is not None else None


def run_child(argv: Sequence[str], *, mpi: bool = False, **popen: Any) -> int:
    """Run a task's command to its end (``popen`` as for ``subprocess.run``); its exit code.

    It stays in the worker's process group, which the launcher kills to stop a run or when
    the worker dies, and which _orphaned kills when the launcher dies first.  An MPI launcher
    also gets its own parent-death signal (SIGTERM, which it passes on to its ranks), in case
    the worker and the launcher both die outright.  A plain command does not: the
    ``preexec_fn`` that sets it makes subprocess fork instead of vfork, and that halved the
    rate of short shell tasks (819 -> 359 /bin/true tasks/s with 2 workers).
    """
    preexec = dies_with_this_process(signal.SIGTERM) if mpi else None
    proc = subprocess.Popen(list(argv), preexec_fn=preexec, **popen)
    _children[proc] = mpi
    try:
        return proc.wait()
    except BaseException:
        proc.kill()  # as subprocess.run does: no command runs on behind an interrupted wait
        proc.wait()
        raise
    finally:
        del _children[proc]


def _run_initializer(init_blob: bytes | None, where: str,
                     launcher_id: int | None = None) -> bytes | None:
    """Run the executor's initializer; return the packed error if it raised."""
    if init_blob is None:
        return None
    try:
        initializer, initargs = pickle.loads(init_blob)
        initializer(*initargs)
    except BaseException as exc:  # noqa: BLE001 - any failure breaks this worker's tasks
        err = WorkerInitError(f"the executor's initializer raised {type(exc).__name__}: "
                              f"{exception_text(exc)}")
        err.__cause__ = exc
        # Which launcher's initializer failed: the executor that started this launcher breaks
        # on it; another executor whose task this launcher took does not (futures.py).
        err.launcher_id = launcher_id
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
            private_dir(workdir)
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
    to_job_out = context.pop("job_out", False)
    env = context.pop("env", {})
    if context.get("workdir"):
        context["workdir"] = _tasks.resolve_workdir(context["workdir"], context.get("site"))
    task = _tasks.TaskContext(id=task_id, **context)
    if on_ranks:
        from ..mpi.run import run_python

        try:
            if task.workdir:
                private_dir(task.workdir)
            ok, blob = run_python(task, payload, env)  # env= for the MPI launcher it starts
            return (task_id, ok, blob)
        except BaseException as exc:  # noqa: BLE001 - reported as the task's failure
            return (task_id, False, dump_exception(exc, f"Task {task_id} {where}"))
    with run_environment(env), (output_to_job_out(task) if to_job_out
                                 else contextlib.nullcontext()):
        _tasks._set_current(task)
        return _run_task(loader, task_id, payload, where, context.get("parent_results"),
                         task.workdir)


@contextlib.contextmanager
def output_to_job_out(task: _tasks.TaskContext) -> Iterator[None]:
    """While a Python task runs, send this worker's stdout and stderr (file descriptors 1
    and 2: what the task and the commands it starts print) to ``job.out`` in the task's
    working directory, else in the place a shell task's would be (``default_workdir``).

    For launchers that are not an executor's own child: nobody reads their terminal (a
    batch job's output file mixes every task's), and ``show --follow`` tails job.out.
    """
    from ..._shell_run import default_workdir
    from ...apps import JOB_OUT

    workdir = private_dir(task.workdir or default_workdir(task))
    _flush_std_streams()
    fd = os.open(workdir / JOB_OUT, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    saved = (os.dup(1), os.dup(2))
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)
    try:
        yield
    finally:
        _flush_std_streams()  # the task's last lines belong in its own job.out
        for target, copy in zip((1, 2), saved):
            os.dup2(copy, target)
            os.close(copy)


@contextlib.contextmanager
def run_environment(env: Mapping[str, str]) -> Iterator[None]:
    """Set a run's own variables (OMP_NUM_THREADS, for threads_per_rank > 1) in this
    worker's ``os.environ`` while its task runs here, then put back what was there.

    The launcher's one write to ``os.environ`` (elsewhere, ``env=`` goes to what is started):
    a Python task runs in this process, and it, OpenMP (at first use) and the commands it
    starts without ``env=`` read these variables from ``os.environ``.  A worker runs one task
    at a time, so no other run sees them.
    """
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _flush_std_streams() -> None:
    """Write out what the task printed before its result is reported: a worker is killed,
    not asked to exit, when its launcher stops, so a buffer left unflushed would be lost (the
    master may exit as soon as it has the result).  An empty buffer costs no system call."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass  # replaced by the task with something else, or closed: nothing to keep


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    fd = int(argv[0])
    if len(argv) > 1:  # the launcher's pid
        _die_with_launcher(int(argv[1]), fd)
    conn = Connection(fd)
    _kind, launcher_id, init_blob = pickle.loads(conn.recv_bytes())
    where = f"on {socket.gethostname()} (launcher {launcher_id}, worker pid {os.getpid()})"
    init_error = _run_initializer(init_blob, where, launcher_id)
    loader = CallLoader()
    while True:
        try:
            msg: Any = pickle.loads(conn.recv_bytes())
        except EOFError:
            # Without the stop message: the launcher died, or is about to kill this worker.
            _orphaned("it closed the worker's socket")
            _await_ending()
        if msg is None:
            break
        task_id, payload, context = msg
        if init_error is not None:
            answer = (task_id, False, init_error)
        else:
            answer = _serve(loader, task_id, payload, context, where)
        _flush_std_streams()
        try:
            conn.send_bytes(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            _orphaned("the worker's socket is broken")
            _await_ending()
    if not _ending.acquire(blocking=False):  # the launcher's stop raced with its death
        _await_ending()
    conn.close()
