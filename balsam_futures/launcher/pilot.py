"""The launcher: claim tasks from the store, run them in workers, write back outcomes.

    store thread                                   dispatcher (main thread)
    ------------                                   ------------------------
    record_and_claim(outcomes, room) ──> backlog ──> idle worker ──> result
          ▲       (one transaction)       (deque)                      │
          └─────────────── outcomes ◄──────────────────────────────────┘

Two threads so that neither waits for the other: the dispatcher hands the next claimed task
to a worker the moment it answers, while the store thread writes outcomes and claims the
next tasks in one transaction (SQLite and psycopg2 release the GIL while they work).  The
backlog is small (BACKLOG_PER_WORKER), because a claimed task can no longer be cancelled.
Only the store thread talks to the store.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import config
from .._wakeup import Waker
from ..backends import LauncherInfo, open_store
from ..backends.base import ClaimedTask, TaskOutcome
from ..errors import StoreError, TaskKilled
from ..tasks import TaskState
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
#: With a store that announces changes, the longest sleep between looks at the store anyway
#: (a lost notification costs at most this much latency).
NOTIFY_FALLBACK_POLL = 1.0
#: How long after the last activity polling stays at POLL_MIN.
ACTIVE_WINDOW = 2.0
#: Heartbeats per lease (BALSAM_FUTURES_LEASE_SECONDS).  Several, so one slow write does not
#: get a live launcher's tasks requeued.
BEATS_PER_LEASE = 4
#: Backoff while the store is unreachable: first and longest wait between retries.
RETRY_MIN, RETRY_MAX = 0.1, 10.0


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
    #: GPU ids this launcher hands out to its workers (None: detect this node's).
    gpu_ids: tuple[str, ...] | None = None


class Pilot:
    def __init__(self, db_url: str, cfg: LauncherConfig, control_fd: int | None = None):
        self.db_url = db_url
        self.cfg = cfg
        self.control_fd = control_fd
        self.lease = cfg.lease_seconds or config.setting("LEASE_SECONDS")
        self.stop_reason: str | None = None
        self.finished = 0
        self._backlog: deque[ClaimedTask] = deque()
        self._outcomes: list[TaskOutcome] = []
        self._lock = threading.Lock()  # guards _outcomes and _kills
        self._kills: set[int] = set()  # tasks to kill, from the store thread
        self._dispatcher_waker = Waker()
        self._store_waker = Waker()
        self._last_activity = time.monotonic()
        self._running = 0  # busy workers, as the dispatcher last saw them
        self.idle = False

    # -- control -----------------------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """Ask both threads to stop (safe from a signal handler)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._dispatcher_waker.set()
        self._store_waker.set()

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, _f: self.request_stop(signal.Signals(s).name))

    # -- main --------------------------------------------------------------------------------

    def _gpu_ids(self) -> tuple[str, ...]:
        if self.cfg.gpu_ids is not None:
            return tuple(self.cfg.gpu_ids)
        from .nodes import discover_nodes

        return discover_nodes(name="local")[0].gpus

    def run(self) -> int:
        """Run until stopped; returns the number of tasks finished."""
        store = open_store(self.db_url, listen="tasks")
        lid = self.cfg.launcher_id
        if lid is None:
            lid = store.register_launcher(LauncherInfo(
                socket.gethostname(), os.getpid(),
                {"workers": self.cfg.num_workers, "tags": dict(self.cfg.tags)}))
        self.launcher_id = lid
        pool = WorkerPool(self.cfg.num_workers, launcher_id=lid, init_blob=self.cfg.init_blob,
                          max_tasks_per_child=self.cfg.max_tasks_per_child,
                          env={**os.environ, **self.cfg.worker_env},
                          context={"site": self.cfg.site, "db_url": self.db_url},
                          gpu_ids=self._gpu_ids())
        self._max_gpus = pool.max_gpus
        log.info("launcher %d started with %d workers (GPUs per worker: %s) on %s", lid,
                 self.cfg.num_workers, [len(g) for g in pool.slot_gpus], store.display_url)
        store_thread = threading.Thread(target=self._store_loop, args=(store, lid),
                                        name="balsam-futures-store", daemon=True)
        try:
            pool.start()
            store_thread.start()
            self._dispatch_loop(pool)
        finally:
            self.request_stop(self.stop_reason or "error")
            pool.stop()
            store_thread.join()
            requeued = store.stop_launcher(lid, f"launcher {lid} stopped ({self.stop_reason})")
            if requeued:
                log.info("requeued %d unfinished task(s)", len(requeued))
            store.close()
            log.info("launcher %d stopped (%s) after %d task(s)", lid, self.stop_reason,
                     self.finished)
        return self.finished

    # -- dispatcher --------------------------------------------------------------------------

    def _dispatch_loop(self, pool: WorkerPool) -> None:
        pool.watch(self._dispatcher_waker.fileno())
        if self.control_fd is not None:
            pool.watch(self.control_fd)
        while self.stop_reason is None:
            if self._kills:
                self._kill(pool)
            if self._backlog and pool.capacity():
                tasks = []
                while self._backlog and len(tasks) < pool.capacity():
                    tasks.append(self._backlog.popleft())
                left = pool.dispatch(tasks)
                self._backlog.extendleft(reversed(left))
                self._running = pool.running()
                self._store_waker.set()  # room in the backlog: the store thread may claim
            # Published before sleeping, for the store thread's claim size and idle timeout.
            self._running = pool.running()
            self.idle = pool.idle() and not self._backlog
            outcomes, handback, ready = pool.collect(None)
            if handback:
                self._backlog.extendleft(reversed(handback))
            if outcomes:
                with self._lock:
                    self._outcomes.extend(outcomes)
                self._store_waker.set()
            if self._dispatcher_waker.fileno() in ready:
                self._dispatcher_waker.clear()
            if self.control_fd in ready and os.read(self.control_fd, 4096) == b"":
                self.request_stop("the executor that started it exited")

    def _kill(self, pool: WorkerPool) -> None:
        with self._lock:
            kills, self._kills = self._kills, set()
        outcomes = pool.kill(kills)
        # A claimed task not yet handed to a worker is killed before it starts.
        for task in [t for t in self._backlog if t.id in kills]:
            self._backlog.remove(task)
            err = TaskKilled(f"task {task.id} was killed on request", task_id=task.id)
            outcomes.append(pool._lost(task, TaskState.KILLED, err, "killed before it started"))
        if outcomes:
            with self._lock:
                self._outcomes.extend(outcomes)
            self._store_waker.set()

    # -- store thread ------------------------------------------------------------------------

    def _store_loop(self, store: Any, lid: int) -> None:
        tags = dict(self.cfg.tags)
        workers = self.cfg.num_workers
        target = workers
        rate = 0.0  # tasks finished per second, smoothed
        rate_since = time.monotonic()
        more = True  # the store may hold claimable tasks we have not seen
        poll = POLL_MIN
        retry = RETRY_MIN
        last_beat = last_sweep = last_kill_check = time.monotonic()
        while True:
            if (len(self._outcomes) < workers * 4 and self._backlog
                    and len(self._backlog) >= target // 2 and self.stop_reason is None):
                time.sleep(COALESCE_SECONDS)  # a deliberate delay: see COALESCE_SECONDS
            with self._lock:
                outcomes, self._outcomes = self._outcomes, []
            stopping = self.stop_reason is not None
            # Running tasks count against the target: the dispatcher moved them out of the
            # backlog into workers, and the backlog should only cover what frees up next.
            room = 0 if stopping else target - len(self._backlog) - self._running
            try:
                news = store.changed()
                more = more or news  # remembered until there is room to claim
                want = room if room > 0 and more else 0
                if outcomes or want:
                    claimed = store.record_and_claim(lid, outcomes, want, max_nodes=1,
                                                     tags=tags, max_gpus=self._max_gpus)
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
                        self._backlog.extend(claimed)
                        self._dispatcher_waker.set()
                    if outcomes or claimed:
                        self._last_activity = time.monotonic()
                now = time.monotonic()
                if ((news or now - last_kill_check >= KILL_POLL)
                        and (self._running or self._backlog)):
                    last_kill_check = now
                    kills = store.kill_requests(lid)
                    if kills:
                        with self._lock:
                            self._kills.update(kills)
                        self._dispatcher_waker.set()
                if now - last_beat >= self.lease / BEATS_PER_LEASE:
                    store.heartbeat(lid)
                    last_beat = now
                if now - last_sweep >= self.lease / 2:
                    if store.requeue_expired(self.lease):
                        more = True
                    last_sweep = now
                retry = RETRY_MIN
            except StoreError as exc:
                # Keep the outcomes and try again: results produced during an outage are
                # written when the store comes back.
                with self._lock:
                    self._outcomes[:0] = outcomes
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


def run_launcher(db_url: str, cfg: LauncherConfig, *, control_fd: int | None = None,
                 log_file: str | None = None) -> int:
    """Run a launcher in this process until stopped (signals, idle timeout, control pipe)."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file:
        handlers = [logging.FileHandler(log_file)]
    logging.basicConfig(level=config.setting("LOG_LEVEL").upper(), handlers=handlers,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pilot = Pilot(db_url, cfg, control_fd=control_fd)
    pilot._install_signals()
    return pilot.run()
