"""The launcher (pilot): claim tasks from the store, run them in workers, write back outcomes.

    store thread (control.py)                       dispatcher, main thread (dispatch.py)
    -------------------------                       ---------------------------------------
    exchange(started, outcomes, room) ──> backlog ──> idle worker / agent ──> result
          ▲        (one transaction)   (placement.py)      │                    │
          └──────────── started ids, outcomes (handoff.py) ┴────────────────────┘

Two threads so that neither waits for the other: the dispatcher hands the next claimed task
to a worker the moment it answers, while the store thread writes outcomes and claims the
next tasks in one transaction (SQLite and psycopg2 release the GIL while they work).  Claimed
tasks are CLAIMED in the store until the dispatcher starts them; the store thread writes the
starts (CLAIMED→RUNNING) in its next transaction, with the outcomes and the claim.  A run
not known to be short reaches its worker only after that commit (handoff.py); a start the
store refuses (the task was cancelled or requeued meanwhile) comes back as "lost": such a
held run is dropped unstarted, and one already going (a short run, an agent's) is killed.
The backlog is small (BACKLOG_SECONDS of work): claimed tasks are held away from other
launchers.  Only the store thread talks to the store (and the transfer thread,
stager.py, for staging states only).

Fencing: each round trip renews the launcher's own lease.  If the store finds the lease
expired (the process was paused, or cut off from the store, longer than its lease) it gives
the launcher's tasks back and raises ``LauncherFenced``: the launcher claims nothing more,
kills its runs and exits; outcomes it still held are refused.

This module is the wiring: it reads the configuration (config.py), finds the nodes, registers
the launcher, starts the worker pool (workers/) and the agents (agents/: in serial mode
with several nodes, one MPI launch starts an agent with warm workers on each node but the
head's), runs the two threads, and on the way out stops the runs and gives back what it
still holds.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from .. import config
from ..backends import LauncherInfo, LauncherStore, open_store
from .agents import AgentPool
from .config import LauncherConfig, local_node
from .control import StoreLoop
from .dispatch import Dispatcher
from .handoff import Handoff
from .logfile import open_log
from .nodes import NodeSpec, this_node_name
from .placement import Placer
from .simulate import SimulatedPool
from .stager import Stager
from .workers.pool import WorkerPool, head_pool

__all__ = ["Pilot", "run_launcher"]

log = logging.getLogger(__name__)

#: How long a stopping launcher waits for its transfer thread's current pass.
STAGER_JOIN_S = 5.0


class Pilot:
    """One launcher: ``run()`` until stopped (signals, idle time-out, wall time, control
    pipe, fencing); returns the number of tasks finished.  ``store`` may be given (tests);
    by default it is opened from ``db_url`` in ``run()``."""

    def __init__(self, db_url: str, cfg: LauncherConfig, control_fd: int | None = None, *,
                 store: LauncherStore | None = None, pool: WorkerPool | None = None) -> None:
        self.db_url = db_url
        self.cfg = cfg
        self.control_fd = control_fd
        #: The head's workers, started already (``early_head_pool``), or None.
        self._early_pool = pool
        #: Where to tell the executor that started this launcher that starts or outcomes
        #: were committed (child.py); None for a launcher started otherwise.
        self.executor_fd: int | None = None
        self._store = store
        self.lease = cfg.lease_seconds or config.setting("LEASE_SECONDS")
        self.stop_reason: str | None = None
        self.fenced = False  # the store found this launcher's lease expired
        self.finished = 0
        self.signalled: str | None = None  # set by the signal handler
        self.handoff = Handoff()
        self.workers = cfg.num_workers  # the head's workers and the agents'
        self.launcher_id = cfg.launcher_id
        started = time.monotonic()
        stop_after = cfg.stop_after()
        self.deadline = None if stop_after is None else started + stop_after

    # -- control -----------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Ask both threads to stop (safe from a signal handler)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.handoff.dispatcher_waker.set()
        self.handoff.store_waker.set()

    def install_signals(self) -> None:
        """SIGTERM/SIGINT (the batch system ending the job, Ctrl-C): the dispatcher stops the
        runs still going as RUN_TIMEOUT, which are retried per their policy, writes their
        outcomes, then stops."""
        def handler(sig: int, _frame: Any) -> None:
            self.signalled = signal.Signals(sig).name
            self.handoff.dispatcher_waker.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)

    def _fenced_by_stager(self) -> None:
        self.fenced = True
        self.request_stop("lease expired (fenced)")

    @property
    def staging_busy(self) -> bool:
        """Whether the transfer thread has work (the launcher is not idle)."""
        stager = getattr(self, "stager", None)
        return bool(stager is not None and stager.busy)

    def tell_executor(self) -> None:
        """Nudge the executor that started this launcher: its watcher reads the store now
        instead of at its next poll.  A full pipe means it has a nudge pending already."""
        if self.executor_fd is not None:
            try:
                os.write(self.executor_fd, b"!")
            except BlockingIOError:
                pass
            except OSError:  # the executor is gone: nobody to tell
                self.executor_fd = None

    def wall_left(self) -> float | None:
        """Seconds of wall time a newly claimed task may still use (None: no limit)."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    # -- main --------------------------------------------------------------------------------

    def _node_specs(self) -> list[NodeSpec]:
        if self.cfg.nodes is not None:
            return list(self.cfg.nodes)
        return [local_node(self.cfg.num_workers, self.cfg.gpu_ids)]

    def _mpi_launcher_name(self) -> str:
        if self.cfg.mpi_launcher:
            return self.cfg.mpi_launcher
        from .mpi import detect_launcher

        return detect_launcher(os.environ).name

    def _layout(self, specs: list[NodeSpec]) -> tuple[set[int], list[tuple[int, NodeSpec]]]:
        """The nodes whose runs may use the head's warm workers, and the nodes that get an
        agent (serial mode on several nodes); runs elsewhere go through MPI."""
        head = this_node_name()
        head_nodes = {i for i, spec in enumerate(specs)
                      if self.cfg.local_nodes or spec.hostname.split(".")[0] == head}
        if self.cfg.simulate:  # every run is a timer of the head's: no agent, no MPI
            return set(range(len(specs))), []
        agents = self.cfg.agents if self.cfg.agents is not None else not self.cfg.local_nodes
        if not (agents and self.cfg.job_mode == "serial" and len(specs) > 1):
            return head_nodes, []
        if self.cfg.local_nodes:
            head_nodes = {0}  # virtual nodes: the head plays the first
        return head_nodes, [(i, s) for i, s in enumerate(specs) if i not in head_nodes]

    def _register(self, store: LauncherStore, specs: list[NodeSpec], mpi_name: str) -> int:
        if self.cfg.launcher_id is not None:  # registered by the executor that started it
            return self.cfg.launcher_id
        return store.register_launcher(LauncherInfo.describe(
            specs, workers=self.cfg.num_workers, tags=dict(self.cfg.tags),
            job_mode=self.cfg.job_mode, mpi_launcher=mpi_name,
            wall_time_min=self.cfg.wall_time_min, batch_job_id=self.cfg.batch_job_id,
            lease_s=self.lease))

    def run(self) -> int:
        """Run until stopped; returns the number of tasks finished."""
        cfg = self.cfg
        specs = self._node_specs()
        mpi_name = self._mpi_launcher_name()
        head_nodes, agent_nodes = self._layout(specs)
        self.placer = Placer(specs, cfg, head_nodes=head_nodes, mpi_launcher=mpi_name)
        own = sorted(head_nodes)
        gpu_ids = specs[own[0]].gpus if own else ()
        early, self._early_pool = self._early_pool, None
        if early is not None and (cfg.simulate or early.gpu_ids != tuple(gpu_ids)):
            early.stop()  # started for other GPUs than this launcher's node has
            early = None
        try:
            store = self._store or open_store(self.db_url, listen="tasks")
            lid = self.launcher_id = self._register(store, specs, mpi_name)
        except BaseException:
            if early is not None:
                early.stop()
            raise
        context = cfg.task_context(self.db_url)
        pool: Any
        if cfg.simulate:
            # As many runs at once as the nodes have cores: placement is the real bound.
            pool = SimulatedPool(self.placer.nodes.total_cores, launcher_id=lid)
            self.workers = pool.slots
        else:
            pool = early or head_pool(cfg, self.db_url, lid, gpu_ids)
        agents = None
        if agent_nodes:
            agents = AgentPool(
                agent_nodes, launcher_id=lid, mpi_launcher=mpi_name,
                local_nodes=cfg.local_nodes, init_blob=cfg.init_blob,
                max_tasks_per_child=cfg.max_tasks_per_child, worker_env=cfg.worker_env,
                context=context)
            self.workers += sum(spec.cores for _, spec in agent_nodes)
        nodes = self.placer.nodes
        log.info("launcher %d started: %d node(s), %d core(s), %d GPU(s), %d worker(s), "
                 "%s mode, MPI launcher %s, store %s%s", lid, nodes.num_nodes,
                 nodes.total_cores, nodes.total_gpus, self.workers, cfg.job_mode,
                 mpi_name, store.display_url, ", simulated runs" if cfg.simulate else "")
        store_thread = threading.Thread(target=StoreLoop(self, store, lid).run,
                                        name="balsam-futures-store", daemon=True)
        # Transfers (stage_in/stage_out) in a thread of their own: never on a worker.
        self.stager = Stager(store, lid, site=cfg.site, tags=dict(cfg.tags),
                             on_fenced=self._fenced_by_stager)
        stager_thread = threading.Thread(target=self.stager.run, name="balsam-futures-stager",
                                         daemon=True)
        try:
            stager_thread.start()
            if agents is not None:
                agents.start()  # their MPI launch starts while our workers do
            pool.start()
            store_thread.start()
            if agents is not None and not agents.wait_ready():
                log.warning("running without agents (%s): one-rank runs on other nodes "
                            "start through the MPI launcher", agents.start_error)
                agents = None
                self.workers = cfg.num_workers
            Dispatcher(self, pool, agents).run()
        finally:
            self.request_stop(self.stop_reason or "error")
            self.stager.stop.set()
            pool.stop()
            if agents is not None:
                agents.stop()
            store_thread.join()
            # A transfer under way is not waited for: what it held is given back below, and
            # its late moves are refused (the tasks are no longer this launcher's).
            stager_thread.join(timeout=STAGER_JOIN_S)
            if not self.fenced:  # a fenced launcher's tasks were given back already
                requeued = store.stop_launcher(lid,
                                               f"launcher {lid} stopped ({self.stop_reason})")
                if requeued:
                    log.info("requeued %d unfinished task(s)", len(requeued))
            if self._store is None:
                store.close()
            log.info("launcher %d stopped (%s) after %d task(s)", lid, self.stop_reason,
                     self.finished)
        return self.finished


def run_launcher(db_url: str, cfg: LauncherConfig, *, control_fd: int | None = None,
                 log_file: str | None = None, executor_fd: int | None = None,
                 pool: WorkerPool | None = None) -> int:
    """Run a launcher in this process until stopped (signals, idle timeout, control pipe).

    ``log_file``: see logfile.py.  ``pool``: the head's workers, started already
    (``early_head_pool``).
    """
    open_log(log_file)
    pilot = Pilot(db_url, cfg, control_fd=control_fd, pool=pool)
    if executor_fd is not None:
        os.set_blocking(executor_fd, False)
        os.set_inheritable(executor_fd, False)  # not for the commands tasks start
        pilot.executor_fd = executor_fd
    pilot.install_signals()
    return pilot.run()
