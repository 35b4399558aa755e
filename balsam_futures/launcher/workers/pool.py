"""Warm Python workers, launcher side: start, feed, watch and replace worker processes.

Each worker is a fresh interpreter (``process.py``) joined to the launcher by a
socketpair, and holds one task at a time: a task queued inside a busy worker would wait
behind a long task while another worker idles (the launcher keeps its small backlog itself,
so an idle worker gets its next task in one message).  The exception is short work: a
worker whose run is of a kind this pool saw end within PREFETCH_MAX_S, PREFETCH_AFTER times
in a row, may be handed one more such task (``prefetch``), which it starts the moment it
sends its result, as ProcessPoolExecutor's call queue does, instead of waiting a dispatcher
pass for it.  That task is not running until then: its start is reported when the result
ahead of it arrives (``take_begun``), and a kill of it is carried out when it begins.

A worker that dies takes only its running task with it (WorkerCrashed), and a new worker takes
its place.  A running task
past its wall time is stopped by killing its worker's whole process group (TaskTimeout).
A worker dies with the launcher that started it, taking its process group along
(``process.py``): nothing it runs outlives a launcher killed outright.
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from ...backends.store import ClaimedTask, TaskOutcome
from ...errors import TaskKilled, TaskTimeout, WorkerCrashed
from ...serialization import dump_exception
from ...tasks import TaskState, outcome_path
from ...triage import error_summary
from ..gpus import split_gpus, worker_gpu_env

if TYPE_CHECKING:
    from ..config import LauncherConfig

log = logging.getLogger(__name__)

#: How a worker starts: ``-c``, not ``-m``, so that process.py is imported once, under its own
#: name (what run_child records there is what _orphaned finds).
_WORKER_CODE = "from balsam_futures.launcher.workers.process import main; main()"
#: How long an MPI launcher has, after SIGTERM, to stop its ranks before its process group is
#: killed outright (srun and hydra forward the signal and wait for the ranks to exit).
MPI_KILL_GRACE_S = 5.0
#: A run of at most this long is short: a task queued behind it in a worker waits no longer.
#: The gap a dispatcher pass leaves between a result and the next task (0.2-0.7 ms on a busy
#: 2-core machine) is what queueing saves; it matters only to runs not much longer than it.
PREFETCH_MAX_S = 0.05
#: Runs of a kind that must end within PREFETCH_MAX_S in a row, in this pool, before its
#: tasks are queued behind one another (one long run starts the count again).
PREFETCH_AFTER = 4
#: A run of at most this long is brief: once PREFETCH_AFTER runs of a kind in a row were, its
#: runs start at once instead of waiting for their start to be recorded (launcher/handoff.py).
#: The wait is one store round trip (about 1 ms on SQLite): 200 x 100 ms sleeps on 2 workers
#: measured 96.5-97.2 % efficiency held against 98.3-99.0 % not, so holding is kept for
#: runs where a round trip is under 1 % of the run, and for kinds not seen yet.
BRIEF_MAX_S = 0.2


@dataclass
class _Worker:
    proc: subprocess.Popen
    conn: Connection
    #: The GPU ids this process was started with (None: the launcher has no GPUs).  A
    #: process never changes them: CUDA and friends read them once, at first use.
    gpus: tuple[str, ...] | None
    queue: deque[ClaimedTask] = field(default_factory=deque)
    started_at: float = 0.0  # monotonic time the task at the head of ``queue`` began
    done: int = 0
    #: Its run went through an MPI launcher (mpiexec, srun...), which must be stopped with a
    #: signal it can forward: ranks on other nodes (and srun's, under slurmstepd) are not in
    #: the worker's process group.
    mpi_run: bool = False
    _poller: Any = None

    def readable(self) -> bool:
        """Whether another message waits on the socket (``Connection.poll`` builds a
        selector per call, which cost more than the rest of reading a result)."""
        if self._poller is None:
            self._poller = select.poll()
            self._poller.register(self.conn.fileno(), select.POLLIN)
        return bool(self._poller.poll(0))


def outcome_for(task: ClaimedTask, run_state: TaskState, *, result: bytes | None = None,
                error: bytes | None = None, message: str = "",
                return_code: int | None = None) -> TaskOutcome:
    """The outcome of one run of ``task``, with its retry policy applied."""
    path = outcome_path(run_state, task.num_restarts, task.max_retries, task.auto_timeout_retry,
                        task.stages_out)
    return TaskOutcome(task.id, path, result=result, error=error, message=message,
                       return_code=return_code)


class WorkerPool:
    """``num_workers`` warm worker processes fed from the launcher's claimed tasks."""

    #: Runs not known to be short wait in the launcher until their start is recorded, and
    #: only then come here (launcher/handoff.py).
    holds_starts = True

    def __init__(self, num_workers: int, *, launcher_id: int, init_blob: bytes | None = None,
                 max_tasks_per_child: int | None = None,
                 env: Mapping[str, str] | None = None,
                 context: Mapping[str, Any] | None = None,
                 gpu_ids: Sequence[str] = ()) -> None:
        self.num_workers = num_workers
        self.launcher_id = launcher_id
        self.init_blob = init_blob
        self.max_tasks_per_child = max_tasks_per_child
        self.env = dict(os.environ if env is None else env)
        self.context = dict(context or {})  # sent with every task (site, store URL)
        self.gpu_ids = tuple(gpu_ids)
        self.has_gpus = bool(gpu_ids)
        self._initial_gpus = split_gpus(gpu_ids, num_workers)
        self.workers: list[_Worker] = []
        self._started = False
        self._doomed: list[tuple[int, float]] = []  # (process group, SIGKILL time)
        self.host = socket.gethostname()
        #: Per task name, how many of its runs in a row ended within PREFETCH_MAX_S.
        self._short: dict[str, int] = {}
        self._brief: dict[str, int] = {}
        #: (task ended, task its worker began next): runs that started when the result
        #: ahead of them arrived, for the dispatcher to record (take_begun).
        self._begun: list[tuple[int, ClaimedTask]] = []
        #: Queued tasks to kill once they begin (a worker cannot be told to skip one).
        self._kill_queued: set[int] = set()
        #: Queued tasks taken back from workers killed for the run ahead of them: handed
        #: back by the next collect (or by stop).
        self._orphans: list[ClaimedTask] = []
        # One selector for the pool's life: building one per wait (as
        # multiprocessing.connection.wait does) cost more than the rest of a no-op task.
        self._sel = selectors.DefaultSelector()

    def watch(self, fd: int) -> None:
        """Also wake ``collect`` when ``fd`` is readable (it is returned in its third list)."""
        self._sel.register(fd, selectors.EVENT_READ, None)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return  # started early (early_head_pool), before the launcher's store
        self._started = True
        for gpus in self._initial_gpus:
            self.workers.append(self._spawn(gpus if self.has_gpus else None))

    def _worker_env(self, gpus: tuple[str, ...] | None) -> dict[str, str]:
        env = dict(self.env)
        if gpus is not None:
            env.update(worker_gpu_env(gpus, self.env))  # its own GPUs only (gpus.py)
        # Cores shared evenly unless the user chose: N workers x all cores oversubscribes.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.num_workers)))
        return env

    def _spawn(self, gpus: tuple[str, ...] | None) -> _Worker:
        head_sock, worker_sock = socket.socketpair()
        try:
            # With this launcher's pid, which the worker dies with (process._die_with_launcher).
            # PR_SET_PDEATHSIG fires when the *thread* that started the worker exits: that is
            # the dispatcher, the launcher's (or agent's) main thread, for every _spawn.
            proc = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, str(worker_sock.fileno()),
                 str(os.getpid())],
                pass_fds=(worker_sock.fileno(),), env=self._worker_env(gpus),
                stdin=subprocess.DEVNULL,
                # Its own process group, so a time-out kills whatever the task started too.
                start_new_session=True,
            )
        finally:
            worker_sock.close()
        conn = Connection(head_sock.detach())
        conn.send_bytes(pickle.dumps(("init", self.launcher_id, self.init_blob)))
        log.debug("started worker pid %d (GPUs %s)", proc.pid, gpus)
        worker = _Worker(proc, conn, gpus)
        self._sel.register(conn.fileno(), selectors.EVENT_READ, worker)
        return worker

    def stop(self, timeout: float = 5.0) -> list[ClaimedTask]:
        """Stop every worker; returns the tasks they had not finished (running and queued)."""
        unfinished: list[ClaimedTask] = self._orphans
        self._orphans = []
        for w in self.workers:
            graceful = bool(w.queue) and w.mpi_run
            unfinished.extend(w.queue)
            w.queue.clear()
            self._kill(w, graceful=graceful)
        self.workers.clear()
        self._sel.close()
        # MPI runs had their SIGTERM: give them their grace (bounded), then kill what is left.
        if self._doomed:
            until = max(deadline for _, deadline in self._doomed)
            while self._doomed and time.monotonic() < until:
                self._doomed = [(g, d) for g, d in self._doomed if _group_alive(g)]
                time.sleep(0.05)
            self._reap_doomed(now=float("inf"))
        return unfinished

    def _forget(self, w: _Worker) -> None:
        if not w.conn.closed:
            self._sel.unregister(w.conn.fileno())
            w.conn.close()

    def _kill(self, w: _Worker, graceful: bool = False) -> int | None:
        """Kill a worker's whole process group; with ``graceful`` (an MPI run), SIGTERM first,
        so that the MPI launcher stops its ranks, and SIGKILL after MPI_KILL_GRACE_S (done by
        ``collect``, so the dispatcher does not wait)."""
        sig = signal.SIGTERM if graceful else signal.SIGKILL
        try:
            os.killpg(w.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        if graceful:
            self._doomed.append((w.proc.pid, time.monotonic() + MPI_KILL_GRACE_S))
        self._forget(w)
        try:
            return w.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            if graceful:
                return self._kill(w)
            log.error("worker pid %d did not exit after SIGKILL", w.proc.pid)
            return None

    def _reap_doomed(self, now: float | None = None) -> None:
        """SIGKILL the process groups of MPI runs whose grace after SIGTERM is over."""
        now = time.monotonic() if now is None else now
        keep = []
        for pgid, deadline in self._doomed:
            if now < deadline:
                keep.append((pgid, deadline))
                continue
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._doomed = keep

    def _retire(self, w: _Worker) -> None:
        """Ask an idle worker to exit (max_tasks_per_child reached) and start another."""
        try:
            w.conn.send_bytes(pickle.dumps(None))
        except OSError:
            pass
        try:
            w.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill(w)
        # Closed once it has exited: a worker takes the socket closing under it for the
        # launcher's death (process._watch_launcher).
        self._forget(w)
        self.workers[self.workers.index(w)] = self._spawn(w.gpus)

    # -- feeding -----------------------------------------------------------------------------

    def _room(self, w: _Worker) -> int:
        if w.queue:
            return 0
        if self.max_tasks_per_child is not None and w.done >= self.max_tasks_per_child:
            return 0
        return 1

    def _pick(self, pin: tuple[str, ...] | None) -> _Worker | None:
        """A free worker started with GPUs ``pin`` (None: any will do).  If none is, a free
        worker is restarted with them: a process cannot change the GPUs it sees."""
        free = [w for w in self.workers if self._room(w) > 0]
        if not free:
            return None
        if pin is None or not self.has_gpus:
            return min(free, key=lambda w: len(w.gpus or ()))
        for w in free:
            if w.gpus == pin:
                return w
        # Restart the free worker least likely to be wanted as it is: the fewest GPUs.
        w = min(free, key=lambda w: len(w.gpus or ()))
        self._kill(w)  # killed, then its socket closed: it takes a close for the launcher's end
        fresh = self._spawn(pin)
        fresh.done = 0
        self.workers[self.workers.index(w)] = fresh
        return fresh

    def capacity(self) -> int:
        """How many more tasks the pool accepts now."""
        return sum(self._room(w) for w in self.workers)

    def idle(self) -> bool:
        return all(not w.queue for w in self.workers)

    def running(self) -> int:
        return sum(1 for w in self.workers if w.queue)

    def dispatch(self, task: ClaimedTask, extra: Mapping[str, Any],
                 pin: tuple[str, ...] | None) -> bool:
        """Send ``task`` to a free worker started with GPUs ``pin`` (None: any); ``extra``
        joins its context (placement, MPI, per-run environment).  False if no worker is free.
        """
        w = self._pick(pin)
        if w is None:
            return False
        w.started_at = time.monotonic()
        w.queue.append(task)
        w.mpi_run = bool(extra.get("mpi"))
        self._send(w, task, extra)
        return True

    def _send(self, w: _Worker, task: ClaimedTask, extra: Mapping[str, Any]) -> None:
        context = {"name": task.name, "tags": task.tags, "data": task.data,
                   "launcher_id": self.launcher_id, "workdir": task.workdir,
                   **self.context, **extra}
        if task.parent_results:
            context["parent_results"] = task.parent_results
        if task.kind != "python":
            context["job_out"] = False  # a shell task writes its own, in its own directory
        try:
            # send_bytes of a plain pickle: Connection.send builds a ForkingPickler per
            # message, which cost more than running a no-op task.
            w.conn.send_bytes(pickle.dumps((task.id, task.payload, context),
                                           protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            pass  # the worker died; collect() reports it and hands its queue back

    def short(self, task: ClaimedTask) -> bool:
        """Whether runs of ``task``'s kind end within PREFETCH_MAX_S here, as a rule."""
        return self._short.get(task.name, 0) >= PREFETCH_AFTER

    def brief(self, task: ClaimedTask) -> bool:
        """Whether runs of ``task``'s kind end within BRIEF_MAX_S here, as a rule: they start
        without waiting for their start to be recorded."""
        return self._brief.get(task.name, 0) >= PREFETCH_AFTER

    def prefetch_room(self) -> bool:
        """Whether a busy worker could take a short task behind its run now."""
        return not self.has_gpus and any(
            len(w.queue) == 1 and not w.mpi_run and self.short(w.queue[0])
            for w in self.workers)

    def prefetch_target(self, task: ClaimedTask) -> _Worker | None:
        """A busy worker that may take ``task`` next (see the module docstring): its run and
        ``task`` are both short, a plain Python or shell run each, of the same resources;
        None if there is none."""
        if self.has_gpus or not self.short(task):
            return None
        for w in self.workers:
            if len(w.queue) != 1 or w.mpi_run:
                continue
            if (self.max_tasks_per_child is not None
                    and w.done + 2 > self.max_tasks_per_child):
                continue
            head = w.queue[0]
            if self.short(head) and _shape(head) == _shape(task):
                return w
        return None

    def prefetch(self, w: _Worker, head_id: int, task: ClaimedTask,
                 extra: Mapping[str, Any]) -> bool:
        """Queue ``task`` in busy worker ``w`` (from ``prefetch_target``) behind task
        ``head_id``; False if that worker moved on meanwhile."""
        if not (len(w.queue) == 1 and w.queue[0].id == head_id and w in self.workers):
            return False
        w.queue.append(task)
        self._send(w, task, extra)
        return True

    def take_begun(self) -> list[tuple[int, ClaimedTask]]:
        """(task that ended, queued task its worker began then), since the last call."""
        begun, self._begun = self._begun, []
        return begun

    # -- results -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """Monotonic time at which the earliest running task reaches its wall time."""
        deadlines = [w.started_at + w.queue[0].wall_time_s
                     for w in self.workers if w.queue and w.queue[0].wall_time_s]
        return min(deadlines, default=None)

    def collect(self, timeout: float | None
                ) -> tuple[list[TaskOutcome], list[ClaimedTask], list[int]]:
        """Wait up to ``timeout`` for results.

        Returns (outcomes, tasks to run elsewhere, the watched fds that are readable).
        """
        deadline = self.next_deadline()
        if deadline is not None:
            until = max(deadline - time.monotonic(), 0.0)
            timeout = until if timeout is None else min(timeout, until)
        outcomes: list[TaskOutcome] = []
        handback: list[ClaimedTask] = self._orphans
        self._orphans = []
        extra_ready = []
        if self._doomed:
            self._reap_doomed()
            first = min(deadline for _, deadline in self._doomed) if self._doomed else None
            if first is not None:
                wait = max(first - time.monotonic(), 0.0)
                timeout = wait if timeout is None else min(timeout, wait)
        for key, _mask in self._sel.select(timeout):
            if key.data is None:
                extra_ready.append(key.fd)
            elif key.data in self.workers:
                self._drain(key.data, outcomes, handback)
        self._expire(outcomes, handback)
        if self._kill_queued and handback:
            # Killed while queued in a worker, then handed back unrun: they end here.
            for task in [t for t in handback if t.id in self._kill_queued]:
                handback.remove(task)
                self._kill_queued.discard(task.id)
                err = TaskKilled(f"task {task.id} was killed on request", task_id=task.id)
                outcomes.append(self.lost(task, TaskState.KILLED, err,
                                          "killed before it started"))
        for w in list(self.workers):
            if (self.max_tasks_per_child is not None and not w.queue
                    and w.done >= self.max_tasks_per_child):
                self._retire(w)
        return outcomes, handback, extra_ready

    def _drain(self, w: _Worker, outcomes: list[TaskOutcome], handback: list[ClaimedTask]):
        try:
            if not w.queue:
                raise EOFError  # an idle worker has nothing to say: it closed or died
            first = True  # the selector found this socket readable
            while w.queue and (first or w.readable()):
                first = False
                task_id, ok, blob = pickle.loads(w.conn.recv_bytes())
                task = w.queue.popleft()
                if task.id != task_id:  # a protocol bug, not a task failure
                    raise RuntimeError(f"worker answered task {task_id}, expected {task.id}")
                w.done += 1
                now = time.monotonic()
                quick = now - w.started_at <= PREFETCH_MAX_S
                self._short[task.name] = self._short.get(task.name, 0) + 1 if quick else 0
                brief = now - w.started_at <= BRIEF_MAX_S
                self._brief[task.name] = self._brief.get(task.name, 0) + 1 if brief else 0
                w.started_at = now
                if w.queue:  # it began the task queued behind this one
                    self._begun.append((task.id, w.queue[0]))
                if ok:
                    outcomes.append(outcome_for(task, TaskState.RUN_DONE, result=blob))
                else:
                    # The one-line cause goes in the RUN_ERROR history row, where
                    # `ls --history` and triage read it without unpickling the exception.
                    outcomes.append(outcome_for(task, TaskState.RUN_ERROR, error=blob,
                                                message=error_summary(
                                                    blob, "the task raised an exception")))
            if w.queue and w.queue[0].id in self._kill_queued:
                # Killed while it waited in this worker: it has begun now; stop it.
                self._kill_queued.discard(w.queue[0].id)
                outcomes += self._kill_head(w, TaskState.KILLED, "killed on request",
                                            handback)
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
            outcomes.append(self.lost(task, TaskState.RUN_ERROR, err, f"worker died ({how})"))
        log.warning("worker pid %d died; starting another", w.proc.pid)
        self._respawn(w, handback)

    def _expire(self, outcomes: list[TaskOutcome], handback: list[ClaimedTask]) -> None:
        now = time.monotonic()
        for w in list(self.workers):
            if not w.queue or not w.queue[0].wall_time_s:
                continue
            task = w.queue[0]
            if now - w.started_at < task.wall_time_s:
                continue
            w.queue.popleft()
            self._kill(w, graceful=w.mpi_run)  # its process group: what the task started too
            err = TaskTimeout(f"task {task.id} ran past its timeout of {task.wall_time_s:g} s "
                              "and was stopped", task_id=task.id)
            outcomes.append(self.lost(task, TaskState.RUN_TIMEOUT, err,
                                       f"timeout after {task.wall_time_s:g} s"))
            self._respawn(w, handback)

    def kill(self, task_ids: set[int] | None,
             run_state: TaskState = TaskState.KILLED,
             reason: str = "killed on request") -> list[TaskOutcome]:
        """Stop the running tasks among ``task_ids`` (all with None), their whole process
        groups; their runs end in ``run_state`` (KILLED, or RUN_TIMEOUT at the end of the
        launcher's wall time).  A task among ``task_ids`` queued behind another run is
        killed when it begins; tasks queued behind a killed run are handed back."""
        outcomes = []
        for w in list(self.workers):
            if task_ids is not None:
                self._kill_queued.update(t.id for t in list(w.queue)[1:] if t.id in task_ids)
            if w.queue and (task_ids is None or w.queue[0].id in task_ids):
                outcomes += self._kill_head(w, run_state, reason, self._orphans)
        return outcomes

    def _kill_head(self, w: _Worker, run_state: TaskState, reason: str,
                   handback: list[ClaimedTask]) -> list[TaskOutcome]:
        """Kill worker ``w`` for the run at the head of its queue; the outcome of that run
        (the tasks queued behind it go to ``handback``)."""
        task = w.queue.popleft()
        self._kill(w, graceful=w.mpi_run)
        if run_state is TaskState.KILLED:
            err: Exception = TaskKilled(f"task {task.id} was {reason}", task_id=task.id)
        else:
            err = TaskTimeout(f"task {task.id} was stopped: {reason}", task_id=task.id)
        self._respawn(w, handback)
        return [self.lost(task, run_state, err, reason)]

    def lost(self, task: ClaimedTask, run_state: TaskState, err: BaseException,
              message: str) -> TaskOutcome:
        """The outcome of a run the launcher ended (crash, time-out), with ``err`` packed as
        the task's exception."""
        where = f"Task {task.id} on {self.host} (launcher {self.launcher_id})"
        return outcome_for(task, run_state, message=message, error=dump_exception(err, where))

    def _respawn(self, w: _Worker, handback: list[ClaimedTask]) -> None:
        """Put a new worker in the place of dead ``w``; tasks it still held go back."""
        handback.extend(w.queue)
        w.queue.clear()
        self.workers[self.workers.index(w)] = self._spawn(w.gpus)


def head_pool(cfg: LauncherConfig, db_url: str, launcher_id: int,
              gpu_ids: Sequence[str]) -> WorkerPool:
    """The warm workers of a launcher's own node, not yet started."""
    return WorkerPool(cfg.num_workers, launcher_id=launcher_id, init_blob=cfg.init_blob,
                      max_tasks_per_child=cfg.max_tasks_per_child,
                      env={**os.environ, **cfg.worker_env}, context=cfg.task_context(db_url),
                      gpu_ids=gpu_ids)


def early_head_pool(cfg: LauncherConfig, db_url: str) -> WorkerPool | None:
    """The head's workers of an executor's own launcher, started before the launcher
    imports its store: their interpreters boot on the other core while SQLAlchemy loads
    (most of a launcher's start-up), instead of after it.  None where the launcher learns
    its nodes or GPUs only later; ``Pilot.run`` replaces a pool whose GPUs are not the ones
    it finds."""
    if cfg.launcher_id is None or cfg.simulate or cfg.nodes is not None or cfg.gpu_ids is None:
        return None
    pool = head_pool(cfg, db_url, cfg.launcher_id, cfg.gpu_ids)
    pool.start()
    return pool


def _shape(task: ClaimedTask) -> tuple:
    """What a run of ``task`` occupies: a queued task takes over the placement of the run
    ahead of it, so the two must match."""
    return (task.num_nodes, task.ranks_per_node, task.threads_per_rank, task.gpus_per_rank,
            task.node_packing_count)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def pack_initializer(initializer, initargs) -> bytes | None:
    """The initializer and its arguments as the bytes a worker receives."""
    if initializer is None:
        return None
    import cloudpickle

    return cloudpickle.dumps((initializer, tuple(initargs)), protocol=pickle.HIGHEST_PROTOCOL)
