"""The launcher: claim tasks from the store, run them in workers, write back outcomes.

    store thread                                   dispatcher (main thread)
    ------------                                   ------------------------
    exchange(started, outcomes, room) ──> backlog ──> idle worker ──> result
          ▲       (one transaction)        (deque)        │             │
          └──────────── started ids, outcomes ◄───────────┴─────────────┘

Two threads so that neither waits for the other: the dispatcher hands the next claimed task
to a worker the moment it answers, while the store thread writes outcomes and claims the
next tasks in one transaction (SQLite and psycopg2 release the GIL while they work).  Claimed
tasks are CLAIMED in the store until the dispatcher starts them; the store thread writes the
starts (CLAIMED→RUNNING) in its next transaction, with the outcomes and the claim.  A start the
store refuses (the task was cancelled or requeued meanwhile) comes back as "lost", and that
run is killed.  The backlog is small (BACKLOG_SECONDS of work): claimed tasks are held away
from other launchers.  Only the store thread talks to the store.

Fencing: each round trip renews the launcher's own lease.  If the store finds the lease
expired (the process was paused, or cut off from the store, longer than its lease) it gives
the launcher's tasks back and raises ``LauncherFenced``: the launcher claims nothing more,
kills its runs and exits; outcomes it still held are refused.

Resources: the launcher's nodes are a ``NodePool`` (resources.py).  A claim is resource-aware:
inside the claim transaction the pool says which candidates fit what is free (plus a short
backlog for tiny tasks), so a launcher never holds work it has no room for; a task that can
never fit here is left for others with a warning.  The dispatcher places backlog tasks in
claim order, skipping those that do not fit yet (backfill), and releases a placement when its
run ends.  A run goes to a warm worker when it is one rank on the launcher's own node in
serial mode; otherwise a worker starts it through the MPI launcher on its placement's hosts
(mpi_task.py) and waits.  Every run's placement and times go to the execution profile.

Agents (agents.py): in serial mode with several nodes, one MPI launch starts an agent with warm
workers on each node but the head's; one-rank runs placed there go to that agent's workers
instead of a process start each.  The dispatcher feeds them like its own WorkerPool, and the
agents' relay thread wakes it through a descriptor the pool watches.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import config
from .._wakeup import Waker
from ..backends import ClaimOffer, LauncherInfo, LauncherStore, open_store
from ..backends.store import ClaimedTask, TaskOutcome
from ..errors import LauncherFenced, StoreError, StoreRejected, TaskKilled
from ..serialization import dump_exception
from ..tasks import Resources, TaskState
from .agents import AgentPool
from .nodes import NodeSpec, this_node_name
from .resources import NodePool, Placement
from .workers import WorkerPool

log = logging.getLogger(__name__)

#: The backlog of claimed tasks covers this much work at the recent rate, between one and
#: BACKLOG_MAX_PER_WORKER tasks per worker.  Longer means fewer, larger transactions (tiny
#: tasks go faster: 2,600 transactions for 20,000 no-ops instead of 7,000); shorter keeps more
#: of the queue cancellable and spread over other launchers.  Long tasks get one per worker.
BACKLOG_SECONDS = 0.02
BACKLOG_MAX_PER_WORKER = 64
#: Under load (backlog at least half full) the store thread waits this long for more
#: outcomes before committing, so one transaction carries several; it never delays a lone
#: task, whose backlog is empty.
COALESCE_SECONDS = 0.001
#: Store poll interval right after activity: a new task is seen within this time.  Each poll
#: is one ``changed()`` probe (a few microseconds on SQLite).
POLL_MIN = 0.001
#: Poll interval when idle: bounds the latency of the first task after a quiet spell; smaller
#: costs idle CPU on every launcher.
POLL_MAX = 0.05
#: Kill requests are looked for whenever the store reports a change, and at least this often.
KILL_POLL = 0.5
#: ... but not more often than this: under a stream of submissions the store changes on every
#: loop, and a kill query per loop was a tenth of the launcher's time per no-op task.
KILL_POLL_MIN = 0.05
#: With a store that announces changes, the longest sleep between looks at the store anyway
#: (a lost notification costs at most this much latency).
NOTIFY_FALLBACK_POLL = 1.0
#: How long after the last activity polling stays at POLL_MIN.
ACTIVE_WINDOW = 2.0
#: Heartbeats per lease (BALSAM_FUTURES_LEASE_SECONDS).  Several, so one slow write does not
#: get a live launcher's tasks requeued.  (Every round trip is a heartbeat too.)
BEATS_PER_LEASE = 4
#: How often this launcher requeues the tasks of launchers that are not alive, each judged
#: by its own lease: a dead peer's tasks come back within its lease plus this.  One indexed
#: read when nobody died.
SWEEP_S = 2.0
#: Backoff while the store is unreachable: first and longest wait between retries.
RETRY_MIN, RETRY_MAX = 0.1, 10.0
#: A resource-aware claim that finds tasks it has no room for looks this many candidates past
#: the ones it wants, to backfill around large tasks that do not fit yet.
CLAIM_LOOKAHEAD = 32
#: While idle, look this often for claimable tasks too large for this launcher (and warn).
UNFIT_CHECK_S = 30.0
#: The launcher stops this long before the end of its wall time (at most this fraction of
#: it), to kill its runs and write their outcomes before the batch job is killed.
WALL_TIME_GRACE_S, WALL_TIME_GRACE_FRACTION = 30.0, 0.1
JOB_MODES = ("serial", "mpi")
#: At the end of the wall time, how long to wait for the agents to report their stopped runs
#: (stopping a worker takes milliseconds; an agent that does not answer in this time is
#: presumably gone, and its runs are requeued when the launcher stops).
STOP_AGENTS_S = 10.0


@dataclass
class LauncherConfig:
    """Everything a launcher needs besides the store."""

    num_workers: int
    launcher_id: int | None = None
    init_blob: bytes | None = None
    max_tasks_per_child: int | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    idle_timeout: float | None = None
    worker_env: Mapping[str, str] = field(default_factory=dict)
    lease_seconds: float | None = None
    site: str | None = None  # where task working directories go (<site>/data)
    #: GPU ids this launcher hands out to its workers (None: detect this node's).  Used when
    #: ``nodes`` is not given: the launcher then has one node, this one, with one core per
    #: worker.
    gpu_ids: tuple[str, ...] | None = None
    #: The nodes of the allocation (see launcher/nodes); None: this machine, as above.
    nodes: Sequence[NodeSpec] | None = None
    #: True when ``nodes`` are all this machine (the local platform's virtual nodes).
    local_nodes: bool = True
    #: serial: one-rank tasks run in warm workers on this node; mpi: every task is started
    #: with the MPI launcher on the nodes it was given.
    job_mode: str = "serial"
    mpi_launcher: str | None = None  # mpich, openmpi, srun, aprun, pals, flux (None: detect)
    #: Stop after this many minutes (the batch job's wall time); tasks whose own wall time
    #: no longer fits are not claimed, and runs still going at the end end in RUN_TIMEOUT.
    wall_time_min: float | None = None
    batch_job_id: int | None = None
    #: Per-node agents with warm workers for one-rank runs on the nodes other than the
    #: head's (serial mode; agents.py).  None: on for a batch system's nodes, off for the
    #: local platform's virtual nodes.
    agents: bool | None = None

    def __post_init__(self) -> None:
        if self.job_mode not in JOB_MODES:
            raise ValueError(f"job_mode must be one of {', '.join(JOB_MODES)}, "
                             f"not {self.job_mode!r}")
        if self.agents and self.job_mode != "serial":
            raise ValueError(f"agents need the serial job mode (they run one-rank tasks in "
                             f"warm workers), not {self.job_mode!r}; turn agents off or use "
                             "the serial job mode")
        if self.wall_time_min is not None and not self.wall_time_min > 0:
            raise ValueError(f"wall_time_min must be > 0, not {self.wall_time_min}")


class Pilot:
    def __init__(self, db_url: str, cfg: LauncherConfig, control_fd: int | None = None):
        self.db_url = db_url
        self.cfg = cfg
        self.control_fd = control_fd
        self.lease = cfg.lease_seconds or config.setting("LEASE_SECONDS")
        self.stop_reason: str | None = None
        self.fenced = False  # the store found this launcher's lease expired
        self.finished = 0
        self._backlog: deque[ClaimedTask] = deque()
        self._outcomes: list[TaskOutcome] = []
        self._started_ids: list[int] = []  # runs started, for the store thread to record
        self._lock = threading.Lock()  # guards _outcomes, _started_ids and _kills
        self._kills: set[int] = set()  # tasks to kill, from the store thread
        self._dispatcher_waker = Waker()
        self._store_waker = Waker()
        self._last_activity = time.monotonic()
        self._running = 0  # busy workers, as the dispatcher last saw them
        self.idle = False
        self._started = time.monotonic()
        self._deadline: float | None = None
        if cfg.wall_time_min is not None:
            wall = cfg.wall_time_min * 60
            self._deadline = self._started + wall - min(WALL_TIME_GRACE_S,
                                                        WALL_TIME_GRACE_FRACTION * wall)
        # Guards self.nodes, _placed and every change to _backlog (the store thread appends
        # claimed tasks while the dispatcher starts them).
        self._node_lock = threading.Lock()
        self._placed: dict[int, tuple[Placement, float]] = {}  # task id -> (where, began)
        self._warned: set[int] = set()  # tasks said never to fit here
        #: Claimed tasks whose row cannot be run at all (e.g. resources edited to 0 ranks),
        #: with the reason: they fail alone instead of crashing the launcher.
        self._bad: dict[int, str] = {}
        self._claim_want = 0
        self._claim_depth = 1
        self._agents: AgentPool | None = None
        self._signalled: str | None = None  # set by the signal handler
        self._workers = cfg.num_workers  # the head's workers and the agents'

    # -- control -----------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Ask both threads to stop (safe from a signal handler)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._dispatcher_waker.set()
        self._store_waker.set()

    def _install_signals(self) -> None:
        """SIGTERM/SIGINT (the batch system ending the job, Ctrl-C): the dispatcher stops the
        runs still going as RUN_TIMEOUT, which are retried per their policy, writes their
        outcomes, then stops."""
        def handler(sig: int, _frame: Any) -> None:
            self._signalled = signal.Signals(sig).name
            self._dispatcher_waker.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    # -- main --------------------------------------------------------------------------------

    def _node_specs(self) -> list[NodeSpec]:
        if self.cfg.nodes is not None:
            return list(self.cfg.nodes)
        gpus = self.cfg.gpu_ids
        if gpus is None:
            from .nodes import discover_nodes

            gpus = discover_nodes(name="local")[0].gpus
        return [NodeSpec("localhost", self.cfg.num_workers, tuple(gpus))]

    def _mpi_launcher_name(self) -> str:
        if self.cfg.mpi_launcher:
            return self.cfg.mpi_launcher
        from .mpi import detect_launcher

        return detect_launcher(os.environ).name

    def run(self) -> int:
        """Run until stopped; returns the number of tasks finished."""
        specs = self._node_specs()
        self.nodes = NodePool(specs)
        self._mpi_name = self._mpi_launcher_name()
        head = this_node_name()
        # Runs on the launcher's own node may use warm workers; others go through MPI.
        self._head_nodes = {i for i, spec in enumerate(specs)
                            if self.cfg.local_nodes or spec.hostname.split(".")[0] == head}
        agents = self.cfg.agents if self.cfg.agents is not None else not self.cfg.local_nodes
        if agents and self.cfg.job_mode == "serial" and len(specs) > 1:
            if self.cfg.local_nodes:
                self._head_nodes = {0}  # virtual nodes: the head plays the first
            agent_nodes = [(i, s) for i, s in enumerate(specs) if i not in self._head_nodes]
        else:
            agent_nodes = []
        store = open_store(self.db_url, listen="tasks")
        lid = self.cfg.launcher_id
        if lid is None:
            lid = store.register_launcher(LauncherInfo(
                socket.gethostname(), os.getpid(),
                {"workers": self.cfg.num_workers, "tags": dict(self.cfg.tags),
                 "job_mode": self.cfg.job_mode, "mpi_launcher": self._mpi_name,
                 "wall_time_min": self.cfg.wall_time_min,
                 "nodes": [{"hostname": n.hostname, "cores": n.cores, "gpus": list(n.gpus)}
                           for n in specs]},
                batch_job_id=self.cfg.batch_job_id, lease_s=self.lease))
        self.launcher_id = lid
        own = [i for i in sorted(self._head_nodes)]
        pool = WorkerPool(self.cfg.num_workers, launcher_id=lid, init_blob=self.cfg.init_blob,
                          max_tasks_per_child=self.cfg.max_tasks_per_child,
                          env={**os.environ, **self.cfg.worker_env},
                          context={"site": self.cfg.site, "db_url": self.db_url},
                          gpu_ids=specs[own[0]].gpus if own else ())
        self._max_node_gpus = max(len(n.gpus) for n in specs)
        if agent_nodes:
            self._agents = AgentPool(
                agent_nodes, launcher_id=lid, mpi_launcher=self._mpi_name,
                local_nodes=self.cfg.local_nodes, init_blob=self.cfg.init_blob,
                max_tasks_per_child=self.cfg.max_tasks_per_child,
                worker_env=self.cfg.worker_env,
                context={"site": self.cfg.site, "db_url": self.db_url})
            self._workers += sum(spec.cores for _, spec in agent_nodes)
        log.info("launcher %d started: %d node(s), %d core(s), %d GPU(s), %d worker(s), "
                 "%s mode, MPI launcher %s, store %s", lid, self.nodes.num_nodes,
                 self.nodes.total_cores, self.nodes.total_gpus, self.cfg.num_workers,
                 self.cfg.job_mode, self._mpi_name, store.display_url)
        store_thread = threading.Thread(target=self._store_loop, args=(store, lid),
                                        name="balsam-futures-store", daemon=True)
        try:
            if self._agents is not None:
                self._agents.start()  # their MPI launch starts while our workers do
            pool.start()
            store_thread.start()
            if self._agents is not None and not self._agents.wait_ready():
                log.warning("running without agents (%s): one-rank runs on other nodes "
                            "start through the MPI launcher", self._agents.start_error)
                self._agents = None
                self._workers = self.cfg.num_workers
            self._dispatch_loop(pool)
        finally:
            self.request_stop(self.stop_reason or "error")
            pool.stop()
            if self._agents is not None:
                self._agents.stop()
            store_thread.join()
            if not self.fenced:  # a fenced launcher's tasks were given back already
                requeued = store.stop_launcher(lid,
                                               f"launcher {lid} stopped ({self.stop_reason})")
                if requeued:
                    log.info("requeued %d unfinished task(s)", len(requeued))
            store.close()
            log.info("launcher %d stopped (%s) after %d task(s)", lid, self.stop_reason,
                     self.finished)
        return self.finished

    # -- placement ---------------------------------------------------------------------------

    def _plan(self, task: ClaimedTask, placement: Placement, has_gpus: bool
              ) -> tuple[dict[str, Any], tuple[str, ...] | None, int | None]:
        """The context a worker gets for this run, the GPUs the worker must have (None: any
        worker, because the run's processes are started through the MPI launcher), and the
        node whose agent runs it (None: the head's own workers)."""
        on_head = all(i in self._head_nodes for i in placement.nodes)
        agent = None
        if not on_head and self._agents is not None and self._agents.serves(placement.nodes[0]):
            agent = placement.nodes[0]
            has_gpus = bool(self.nodes.specs[agent].gpus)
        mpi = (self.cfg.job_mode == "mpi" or not (on_head or agent is not None)
               or task.num_nodes * task.ranks_per_node > 1)
        if mpi:
            agent = None
        hosts = ("localhost",) * len(placement.hosts) if self.cfg.local_nodes \
            else placement.hosts
        extra: dict[str, Any] = {
            "hosts": hosts, "gpu_ids": placement.gpus, "mpi_launcher": self._mpi_name,
            "resources": _resources(task.num_nodes, task.ranks_per_node, task.threads_per_rank,
                                    task.gpus_per_rank, task.node_packing_count),
            "mpi": mpi, "python_on_ranks": mpi and task.kind == "python",
        }
        if task.threads_per_rank > 1:
            extra["env"] = {"OMP_NUM_THREADS": str(task.threads_per_rank)}
        pin = placement.gpus[0] if has_gpus and not mpi else None
        return extra, pin, agent

    def _place_backlog(self, pool: WorkerPool) -> None:
        """Start what fits, in claim order; a task that does not fit yet stays, and the ones
        behind it may go first (backfill)."""
        started = []
        agents = self._agents
        room = pool.capacity() + (agents.capacity() if agents else 0)
        with self._node_lock:
            for task in self._backlog:
                if task.id in self._bad:
                    started.append(task)  # out of the backlog; failed below
                    continue
                if room <= 0:
                    break
                placement = self.nodes.place(task)
                if placement is None:
                    continue
                extra, pin, agent = self._plan(task, placement, pool.has_gpus)
                if agent is not None:
                    sent = agents.dispatch(task, extra, pin, agent)
                else:
                    sent = pool.dispatch(task, extra, pin)
                if not sent:
                    self.nodes.release(placement)
                    if agents is None:
                        break
                    continue  # the other pool may still take the tasks behind it
                self._placed[task.id] = (placement, time.time())
                started.append(task)
                room -= 1
            if started:
                with self._lock:  # before any outcome of these runs can be collected
                    self._started_ids.extend(t.id for t in started)
                    self._outcomes.extend(self._fail_bad(t) for t in started
                                          if t.id in self._bad)
                # Usually the started tasks are the head of the backlog: pop them (rebuilding
                # the whole backlog per pass cost a tenth of the launcher's time on no-ops).
                k = 0
                while k < len(started) and self._backlog and self._backlog[0] is started[k]:
                    self._backlog.popleft()
                    k += 1
                if k < len(started):
                    ids = {t.id for t in started[k:]}
                    self._backlog = deque(t for t in self._backlog if t.id not in ids)

    def _write_alone(self, store: LauncherStore, lid: int, started: list[int],
                     outcomes: list[TaskOutcome]) -> None:
        """After a refused round trip: starts, then each outcome in its own transaction; an
        outcome the store refuses becomes its task's failure, with the database's words."""
        ended = {o.task_id for o in outcomes}
        store.exchange(lid, [i for i in started if i not in ended], [], 0)
        for o in outcomes:
            own = [o.task_id] if o.task_id in started else []
            try:
                store.exchange(lid, own, [o], 0)
            except StoreRejected as exc:
                err = StoreRejected(f"the outcome of task {o.task_id} could not be stored: "
                                    f"{exc}")
                log.error("%s; the task fails", err)
                failed = TaskOutcome(o.task_id, (TaskState.RUN_ERROR, TaskState.FAILED),
                                     error=dump_exception(err, f"Task {o.task_id} on "
                                                          f"launcher {lid}"),
                                     message=str(err)[:500], run=o.run)
                try:
                    store.exchange(lid, own, [failed], 0)
                except StoreRejected:
                    log.exception("task %d: even its failure cannot be stored; it is "
                                  "requeued when this launcher stops", o.task_id)
        self.finished += len(outcomes)

    def _fail_bad(self, task: ClaimedTask) -> TaskOutcome:
        """The outcome of a claimed task that cannot run here or anywhere, as it stands."""
        reason = self._bad.pop(task.id)
        log.error("task %d cannot run: %s; it fails (the launcher goes on)", task.id, reason)
        err = ValueError(f"task {task.id} cannot run: {reason}")
        return TaskOutcome(task.id, (TaskState.RUN_ERROR, TaskState.FAILED),
                           error=dump_exception(err, f"Task {task.id} on launcher "
                                                f"{self.launcher_id}"),
                           message=f"cannot run: {reason}")

    def _ended(self, outcomes: list[TaskOutcome], handback: Sequence[ClaimedTask]) -> None:
        """Release the placements of finished runs (and of runs handed back), and attach
        where and when each ran to its outcome."""
        now = time.time()
        with self._node_lock:
            for task in handback:
                placed = self._placed.pop(task.id, None)
                if placed is not None:
                    self.nodes.release(placed[0])
            for k, o in enumerate(outcomes):
                placed = self._placed.pop(o.task_id, None)
                if placed is None:
                    continue
                self.nodes.release(placed[0])
                record = {**placed[0].as_record(), "started_at": placed[1], "ended_at": now}
                # Built directly: dataclasses.replace cost more than the rest of this loop.
                outcomes[k] = TaskOutcome(o.task_id, o.path, o.result, o.error, o.return_code,
                                          o.message, record)

    def _fit(self, rows: list[Any]) -> list[int]:
        """Which claim candidates to take (called inside the claim transaction)."""
        with self._node_lock:
            fits, bad = [], []
            verdicts: dict[tuple, str | None] = {}  # most candidates share a few shapes
            invalid: dict[tuple, str | None] = {}
            for i, row in enumerate(rows):
                shape = (row.num_nodes, row.ranks_per_node, row.threads_per_rank,
                         row.gpus_per_rank, row.node_packing_count)
                if shape not in invalid:
                    invalid[shape] = _invalid_shape(shape)
                if invalid[shape] is not None:
                    # Taken, to fail at once with the reason (left in the store, it would
                    # be claimed again and again by every launcher).
                    self._bad[row.id] = invalid[shape]
                    bad.append(i)
                    continue
                if shape not in verdicts:
                    verdicts[shape] = self.nodes.never_fits(row)
                reason = verdicts[shape]
                if reason is None:
                    fits.append(i)
                elif row.id not in self._warned:
                    self._warned.add(row.id)
                    log.warning("task %d can never run on this launcher: %s; leaving it for "
                                "a launcher with more resources", row.id, reason)
            taken = self.nodes.fit_claim([rows[i] for i in fits], list(self._backlog),
                                         self._claim_depth)
        return [fits[i] for i in taken][:self._claim_want] + bad

    def _warn_unfit(self, store: LauncherStore, tags: dict[str, str]) -> None:
        """Say which waiting tasks need more nodes or GPUs than this launcher has (they are
        filtered out of its claims, so nothing else would tell)."""
        for task_id, nodes, gpus in store.unfit_tasks(self.nodes.num_nodes, self._max_node_gpus,
                                                      tags):
            if task_id in self._warned:
                continue
            self._warned.add(task_id)
            reason = self.nodes.never_fits(Resources(num_nodes=nodes, ranks_per_node=1,
                                                     gpus_per_rank=gpus))
            log.warning("task %d can never run on this launcher: %s; leaving it for a "
                        "launcher with more resources", task_id, reason)

    def _wall_left(self) -> float | None:
        """Seconds of wall time a newly claimed task may still use (None: no limit)."""
        if self._deadline is None:
            return None
        return self._deadline - time.monotonic()

    # -- dispatcher --------------------------------------------------------------------------

    def _dispatch_loop(self, pool: WorkerPool) -> None:
        pool.watch(self._dispatcher_waker.fileno())
        if self.control_fd is not None:
            pool.watch(self.control_fd)
        agents = self._agents
        if agents is not None:
            pool.watch(agents.fileno())
        while self.stop_reason is None:
            if self._kills:
                self._kill(pool)
            if self._signalled is not None:
                self._stop_runs(pool, f"stopped: the launcher received {self._signalled}",
                                self._signalled)
                break
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._stop_runs(pool, "stopped at the end of the launcher's wall time",
                                f"wall time of {self.cfg.wall_time_min:g} min over")
                break
            if self._backlog and (pool.capacity() or (agents and agents.capacity())):
                self._place_backlog(pool)
                self._store_waker.set()  # room in the backlog: the store thread may claim
            # Published before sleeping, for the store thread's claim size and idle timeout.
            self._running = pool.running()
            self.idle = pool.idle() and not self._backlog
            if agents is not None:
                self._running += agents.running()
                self.idle = self.idle and agents.idle()
            timeout = None if self._deadline is None else \
                max(0.0, self._deadline - time.monotonic())
            outcomes, handback, ready = pool.collect(timeout)
            if agents is not None and agents.fileno() in ready:
                done, back = agents.collect()
                outcomes += done
                handback += back
            if outcomes or handback:
                self._ended(outcomes, handback)
            if handback:
                with self._node_lock:
                    self._backlog.extendleft(reversed(handback))
            if outcomes:
                with self._lock:
                    self._outcomes.extend(outcomes)
                self._store_waker.set()
            if self._dispatcher_waker.fileno() in ready:
                self._dispatcher_waker.clear()
            if self.control_fd in ready and os.read(self.control_fd, 4096) == b"":
                self.request_stop("the executor that started it exited")

    def _stop_runs(self, pool: WorkerPool, reason: str, stop_reason: str) -> None:
        """Stop the runs still going (RUN_TIMEOUT, retried per policy), hand their outcomes
        to the store thread, then stop (outcomes first: the store thread writes what it has
        before it ends)."""
        outcomes = pool.kill(None, TaskState.RUN_TIMEOUT, reason)
        if self._agents is not None:
            # The agents answer over MPI: wait for their outcomes, so that they are written.
            self._agents.kill(None, TaskState.RUN_TIMEOUT, reason)
            outcomes += self._agents.wait_idle(STOP_AGENTS_S)[0]
        self._ended(outcomes, [])
        if outcomes:
            log.info("%s: %d run(s) stopped", stop_reason, len(outcomes))
            with self._lock:
                self._outcomes.extend(outcomes)
        self.request_stop(stop_reason)

    def _kill(self, pool: WorkerPool) -> None:
        with self._lock:
            kills, self._kills = self._kills, set()
        outcomes = pool.kill(kills)
        if self._agents is not None:
            self._agents.kill(kills)  # their outcomes come back through collect()
        self._ended(outcomes, [])
        # A claimed task not yet handed to a worker is killed before it starts.
        with self._node_lock:
            doomed = [t for t in self._backlog if t.id in kills]
            for task in doomed:
                self._backlog.remove(task)
        for task in doomed:
            err = TaskKilled(f"task {task.id} was killed on request", task_id=task.id)
            outcomes.append(pool._lost(task, TaskState.KILLED, err, "killed before it started"))
        if outcomes:
            with self._lock:
                self._outcomes.extend(outcomes)
            self._store_waker.set()

    # -- store thread ------------------------------------------------------------------------

    def _store_loop(self, store: LauncherStore, lid: int) -> None:
        try:
            self._store_rounds(store, lid)
        except BaseException:  # noqa: BLE001 - a dead store thread would hang the launcher
            log.exception("the launcher's store thread failed; stopping the launcher")
            self.request_stop("its store thread failed")

    def _store_rounds(self, store: LauncherStore, lid: int) -> None:
        tags = dict(self.cfg.tags)
        target = self._workers
        rate = 0.0  # tasks finished per second, smoothed
        rate_since = time.monotonic()
        more = True  # the store may hold claimable tasks we have not seen
        poll = POLL_MIN
        retry = RETRY_MIN
        last_beat = last_sweep = last_kill_check = time.monotonic()
        last_unfit_check = -UNFIT_CHECK_S
        while True:
            workers = self._workers  # fewer if the agents fail to start
            if (len(self._outcomes) < workers * 4 and self._backlog
                    and len(self._backlog) >= target // 2 and self.stop_reason is None):
                time.sleep(COALESCE_SECONDS)  # a deliberate delay: see COALESCE_SECONDS
            with self._lock:
                outcomes, self._outcomes = self._outcomes, []
                started, self._started_ids = self._started_ids, []
            stopping = self.stop_reason is not None
            # Running tasks count against the target: the dispatcher moved them out of the
            # backlog into workers, and the backlog should only cover what frees up next.
            room = 0 if stopping else target - len(self._backlog) - self._running
            try:
                news = store.changed()
                more = more or news  # remembered until there is room to claim
                # A finished run frees resources: claim again even if the store had nothing
                # new, since candidates skipped for lack of room may fit now.
                want = room if room > 0 and (more or outcomes) else 0
                wall_left = self._wall_left()
                if wall_left is not None and wall_left <= 0:
                    want = 0
                if outcomes or want or started:
                    self._claim_want = want
                    self._claim_depth = max(1, math.ceil(target / workers))
                    offer = ClaimOffer(max_nodes=self.nodes.num_nodes, tags=tags,
                                       max_gpus=self._max_node_gpus, max_wall_s=wall_left,
                                       fit=self._fit,
                                       window=want + CLAIM_LOOKAHEAD)
                    trip = store.exchange(lid, started, outcomes, want, offer)
                    claimed = trip.claimed
                    if trip.lost:
                        # Cancelled or requeued before their start was recorded: stop them.
                        log.info("task(s) %s were cancelled or requeued before they started "
                                 "here; stopping their runs", trip.lost)
                        with self._lock:
                            self._kills.update(trip.lost)
                        self._dispatcher_waker.set()
                    last_beat = time.monotonic()
                    self.finished += len(outcomes)
                    now = time.monotonic()
                    if outcomes and now > rate_since:
                        rate = 0.8 * rate + 0.2 * len(outcomes) / (now - rate_since)
                        target = min(max(workers, int(rate * BACKLOG_SECONDS)),
                                     BACKLOG_MAX_PER_WORKER * workers)
                    rate_since = now
                    if want:
                        more = len(claimed) == want
                    if claimed:
                        with self._node_lock:
                            self._backlog.extend(claimed)
                        self._dispatcher_waker.set()
                    if outcomes or claimed:
                        self._last_activity = time.monotonic()
                now = time.monotonic()
                since_kill_check = now - last_kill_check
                if (((news and since_kill_check >= KILL_POLL_MIN) or since_kill_check >= KILL_POLL)
                        and (self._running or self._backlog)):
                    last_kill_check = now
                    kills = store.kill_requests(lid)
                    if kills:
                        with self._lock:
                            self._kills.update(kills)
                        self._dispatcher_waker.set()
                if self.idle and now - last_unfit_check >= UNFIT_CHECK_S:
                    last_unfit_check = now
                    self._warn_unfit(store, tags)
                if now - last_beat >= self.lease / BEATS_PER_LEASE:
                    store.heartbeat(lid)
                    last_beat = now
                if now - last_sweep >= SWEEP_S:
                    if store.requeue_expired():
                        more = True
                    last_sweep = now
                retry = RETRY_MIN
            except LauncherFenced as exc:
                # Not alive as far as the store is concerned: its tasks went back, and another
                # launcher may run them now.  Claim nothing more; kill the runs and exit.
                log.error("%s: stopping, and killing %d run(s)", exc, self._running)
                self.fenced = True
                self.request_stop("lease expired (fenced)")
                return
            except StoreRejected as exc:
                # Not an outage: something in this round trip can never be written.  Write
                # each outcome alone, so one bad value fails only its own task.
                log.error("the store refused a round trip (%s); writing its %d outcome(s) "
                          "one by one", exc, len(outcomes))
                self._write_alone(store, lid, started, outcomes)
                continue
            except StoreError as exc:
                # Keep the outcomes and try again: results produced during an outage are
                # written when the store comes back.
                with self._lock:
                    self._outcomes[:0] = outcomes
                    self._started_ids[:0] = started
                log.warning("store unavailable, retrying in %.1f s: %s", retry, exc)
                time.sleep(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            if stopping and not self._outcomes:
                return
            now = time.monotonic()
            quiet = now - self._last_activity
            poll = POLL_MIN if quiet < ACTIVE_WINDOW else min(poll * 2, POLL_MAX)
            idle_timeout = self.cfg.idle_timeout
            if idle_timeout is not None and self.idle and quiet >= idle_timeout:
                self.request_stop(f"idle for {idle_timeout:g} s")
            if not self._outcomes and self.stop_reason is None:
                # Asked each time: after an outage the store listens on a new connection.
                notify_fd = store.notify_fd()
                if notify_fd is None:
                    self._store_waker.wait(poll)
                else:
                    # The store announces changes (PostgreSQL NOTIFY): sleep until one comes,
                    # polling only as a fallback and for heartbeats.
                    self._store_waker.wait(NOTIFY_FALLBACK_POLL, also=[notify_fd])


def _invalid_shape(shape: tuple) -> str | None:
    """Why a stored resource shape is not a valid Resources (edited in the database by
    hand, say), or None."""
    try:
        _resources(*shape)
    except (TypeError, ValueError) as exc:
        return f"its resources are invalid: {exc}"
    return None


@functools.lru_cache(maxsize=256)
def _resources(*fields: int) -> Resources:
    """One Resources object per shape: most tasks of a campaign share a few."""
    return Resources(*fields)


def run_launcher(db_url: str, cfg: LauncherConfig, *, control_fd: int | None = None,
                 log_file: str | None = None) -> int:
    """Run a launcher in this process until stopped (signals, idle timeout, control pipe).

    ``log_file`` is created private (0600), like the database: a log names the store, tasks
    and hosts.  An existing one is made private too and appended to.
    """
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        # os.open with a mode, not FileHandler (0666 less the umask, often world-readable):
        # the file is private from its creation on; O_NOFOLLOW refuses a planted symlink.
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        handlers = [logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8"))]
    logging.basicConfig(level=config.setting("LOG_LEVEL").upper(), handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pilot = Pilot(db_url, cfg, control_fd=control_fd)
    pilot._install_signals()
    return pilot.run()
