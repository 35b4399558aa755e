"""Warm Python workers, launcher side: start, feed, watch and replace worker processes.

Each worker is a fresh interpreter (``launcher/worker.py``) joined to the launcher by a
socketpair.  The launcher sends each worker a short FIFO of tasks; the first is running, the
rest wait in the socket so the worker never idles while the launcher talks to the store.

A worker that dies takes only its running task with it (WorkerCrashed); the tasks queued
behind it are handed back to the launcher, and a new worker takes its place.  A running task
past its wall time is stopped by killing its worker's whole process group (TaskTimeout).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait

from ..backends.base import ClaimedTask, TaskOutcome
from ..errors import TaskTimeout, WorkerCrashed
from ..serialization import dump_exception
from ..tasks import TaskState, outcome_path

log = logging.getLogger(__name__)

#: Tasks queued in each worker beyond the running one.  More hides the launcher's store round
#: trips behind work (throughput of tiny tasks); fewer keeps tasks cancellable and balances
#: uneven task lengths better.
PREFETCH_PER_WORKER = 3
#: Payloads larger than this go only to an idle worker: a big payload sent to a busy worker
#: would fill the socket buffer and block the launcher until that worker finished its task.
PREFETCH_MAX_BYTES = 64 * 1024

_WORKER_CODE = "from balsam_futures.launcher.worker import main; main()"


@dataclass
class _Worker:
    proc: subprocess.Popen
    conn: Connection
    queue: deque[ClaimedTask] = field(default_factory=deque)
    started_at: float = 0.0  # monotonic time the task at the head of ``queue`` began
    done: int = 0


def outcome_for(task: ClaimedTask, run_state: TaskState, *, result: bytes | None = None,
                error: bytes | None = None, message: str = "",
                return_code: int | None = None) -> TaskOutcome:
    """The outcome of one run of ``task``, with its retry policy applied."""
    path = outcome_path(run_state, task.num_restarts, task.max_retries, task.auto_timeout_retry)
    return TaskOutcome(task.id, path, result=result, error=error, message=message,
                       return_code=return_code)


class WorkerPool:
    """``num_workers`` warm worker processes fed from the launcher's claimed tasks."""

    def __init__(self, num_workers: int, *, launcher_id: int, init_blob: bytes | None = None,
                 max_tasks_per_child: int | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.num_workers = num_workers
        self.launcher_id = launcher_id
        self.init_blob = init_blob
        self.max_tasks_per_child = max_tasks_per_child
        self.env = dict(os.environ if env is None else env)
        self.workers: list[_Worker] = []
        self.host = socket.gethostname()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for _ in range(self.num_workers):
            self.workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        head_sock, worker_sock = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, str(worker_sock.fileno())],
                pass_fds=(worker_sock.fileno(),), env=self.env, stdin=subprocess.DEVNULL,
                # Its own process group, so a time-out kills whatever the task started too.
                start_new_session=True,
            )
        finally:
            worker_sock.close()
        conn = Connection(head_sock.detach())
        conn.send(("init", self.launcher_id, self.init_blob))
        log.debug("started worker pid %d", proc.pid)
        return _Worker(proc, conn)

    def stop(self, timeout: float = 5.0) -> list[ClaimedTask]:
        """Stop every worker; returns the tasks they had not finished (running and queued)."""
        unfinished: list[ClaimedTask] = []
        for w in self.workers:
            unfinished.extend(w.queue)
            w.queue.clear()
            self._kill(w)
        self.workers.clear()
        return unfinished

    def _kill(self, w: _Worker) -> int | None:
        try:
            os.killpg(w.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        w.conn.close()
        try:
            return w.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.error("worker pid %d did not exit after SIGKILL", w.proc.pid)
            return None

    def _retire(self, w: _Worker) -> None:
        """Ask an idle worker to exit (max_tasks_per_child reached) and start another."""
        try:
            w.conn.send(None)
        except OSError:
            pass
        w.conn.close()
        try:
            w.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill(w)
        self.workers[self.workers.index(w)] = self._spawn()

    # -- feeding -----------------------------------------------------------------------------

    def _room(self, w: _Worker) -> int:
        room = 1 + PREFETCH_PER_WORKER - len(w.queue)
        if self.max_tasks_per_child is not None:
            room = min(room, self.max_tasks_per_child - w.done - len(w.queue))
        return max(room, 0)

    def capacity(self) -> int:
        """How many more tasks the pool accepts now."""
        return sum(self._room(w) for w in self.workers)

    def idle(self) -> bool:
        return all(not w.queue for w in self.workers)

    def running(self) -> int:
        return sum(1 for w in self.workers if w.queue)

    def dispatch(self, tasks: Sequence[ClaimedTask]) -> list[ClaimedTask]:
        """Send tasks to workers; returns those no worker had room for."""
        left = list(tasks)
        left.reverse()
        while left:
            task = left[-1]
            candidates = [w for w in self.workers if self._room(w) > 0]
            if len(task.payload) > PREFETCH_MAX_BYTES:
                candidates = [w for w in candidates if not w.queue]
            if not candidates:
                break
            w = min(candidates, key=lambda w: len(w.queue))
            left.pop()
            if not w.queue:
                w.started_at = time.monotonic()
            w.queue.append(task)
            context = {"name": task.name, "tags": task.tags, "launcher_id": self.launcher_id,
                       "workdir": task.workdir}
            try:
                w.conn.send((task.id, task.payload, context))
            except OSError:
                pass  # the worker died; collect() reports it and hands its queue back
        left.reverse()
        return left

    # -- results -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """Monotonic time at which the earliest running task reaches its wall time."""
        deadlines = [w.started_at + w.queue[0].wall_time_s
                     for w in self.workers if w.queue and w.queue[0].wall_time_s]
        return min(deadlines, default=None)

    def collect(self, timeout: float | None,
                extra: Sequence[object] = ()) -> tuple[list[TaskOutcome], list[ClaimedTask]]:
        """Wait up to ``timeout`` for results; returns (outcomes, tasks to run elsewhere).

        ``extra`` are further objects to wait on (e.g. a control pipe); the caller checks them.
        """
        deadline = self.next_deadline()
        if deadline is not None:
            until = max(deadline - time.monotonic(), 0.0)
            timeout = until if timeout is None else min(timeout, until)
        busy = [w for w in self.workers if w.queue]
        ready = wait([w.conn for w in busy] + list(extra), timeout)
        outcomes: list[TaskOutcome] = []
        handback: list[ClaimedTask] = []
        by_conn = {id(w.conn): w for w in busy}
        for obj in ready:
            w = by_conn.get(id(obj))
            if w is not None:
                self._drain(w, outcomes, handback)
        self._expire(outcomes, handback)
        for w in list(self.workers):
            if (self.max_tasks_per_child is not None and not w.queue
                    and w.done >= self.max_tasks_per_child):
                self._retire(w)
        return outcomes, handback

    def _drain(self, w: _Worker, outcomes: list[TaskOutcome], handback: list[ClaimedTask]):
        try:
            while w.queue and w.conn.poll():
                task_id, ok, blob = w.conn.recv()
                task = w.queue.popleft()
                if task.id != task_id:  # a protocol bug, not a task failure
                    raise RuntimeError(f"worker answered task {task_id}, expected {task.id}")
                w.done += 1
                w.started_at = time.monotonic()
                if ok:
                    outcomes.append(outcome_for(task, TaskState.RUN_DONE, result=blob))
                else:
                    outcomes.append(outcome_for(task, TaskState.RUN_ERROR, error=blob,
                                                message="the task raised an exception"))
        except (EOFError, OSError):
            self._replace_dead(w, outcomes, handback)

    def _replace_dead(self, w, outcomes, handback) -> None:
        code = self._kill(w)
        if w.queue:
            task = w.queue.popleft()
            how = f"exit code {code}" if code is None or code >= 0 else \
                f"signal {signal.Signals(-code).name}"
            err = WorkerCrashed(
                f"the worker process running task {task.id} died ({how}); the task may have "
                "crashed the interpreter (segfault, os._exit, out of memory)", task_id=task.id)
            outcomes.append(outcome_for(
                task, TaskState.RUN_ERROR, message=f"worker died ({how})",
                error=dump_exception(err, f"Task {task.id} on {self.host} "
                                          f"(launcher {self.launcher_id})")))
        handback.extend(w.queue)
        log.warning("worker pid %d died; starting another", w.proc.pid)
        self.workers[self.workers.index(w)] = self._spawn()

    def _expire(self, outcomes: list[TaskOutcome], handback: list[ClaimedTask]) -> None:
        now = time.monotonic()
        for w in list(self.workers):
            if not w.queue or not w.queue[0].wall_time_s:
                continue
            task = w.queue[0]
            if now - w.started_at < task.wall_time_s:
                continue
            w.queue.popleft()
            self._kill(w)
            err = TaskTimeout(f"task {task.id} ran past its timeout of {task.wall_time_s:g} s "
                              "and was stopped", task_id=task.id)
            outcomes.append(outcome_for(
                task, TaskState.RUN_TIMEOUT, message=f"timeout after {task.wall_time_s:g} s",
                error=dump_exception(err, f"Task {task.id} on {self.host} "
                                          f"(launcher {self.launcher_id})")))
            handback.extend(w.queue)
            self.workers[self.workers.index(w)] = self._spawn()


def pack_initializer(initializer, initargs) -> bytes | None:
    """The initializer and its arguments as the bytes a worker receives."""
    if initializer is None:
        return None
    import cloudpickle

    return cloudpickle.dumps((initializer, tuple(initargs)), protocol=pickle.HIGHEST_PROTOCOL)
