"""The launcher's main loop: claim tasks from the store, run them, write back outcomes.

    store ──claim(capacity)──> backlog ──dispatch──> WorkerPool ──results──> outcomes
      ▲                                                                        │
      └──────────────────── record_outcomes (one transaction per wake-up) ─────┘

One thread, one loop.  It sleeps in ``WorkerPool.collect`` until a worker answers, a task
reaches its wall time, the store may have new tasks (polled), or the control pipe closes.
Only this loop talks to the store, so a launcher holds one write connection.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import config
from ..backends import LauncherInfo, open_store
from ..backends.base import ClaimedTask
from .workers import WorkerPool

log = logging.getLogger(__name__)

#: Poll interval right after activity.  A commit is seen within this time, so it bounds the
#: added round-trip latency; each poll costs one ``changed()`` probe (a few microseconds).
POLL_MIN = 0.001
#: Poll interval when idle.  Bounds the latency of the first task after a quiet period; a
#: smaller value costs more idle CPU on every launcher.
POLL_MAX = 0.05
#: How long after the last activity the launcher keeps polling at POLL_MIN.
ACTIVE_WINDOW = 2.0
#: Heartbeat period.  Must be well under the lease (BALSAM_FUTURES_LEASE_SECONDS) so that a
#: slow write does not get a live launcher's tasks requeued.
HEARTBEAT_FRACTION = 0.25


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


class Pilot:
    def __init__(self, db_url: str, cfg: LauncherConfig, control_fd: int | None = None):
        self.db_url = db_url
        self.cfg = cfg
        self.control_fd = control_fd
        self._stop_reason: str | None = None
        self.lease = cfg.lease_seconds or config.setting("LEASE_SECONDS")

    def request_stop(self, reason: str) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda s, _f: self.request_stop(signal.Signals(s).name))

    def run(self) -> int:
        """Run until stopped; returns the number of tasks finished."""
        store = open_store(self.db_url)
        lid = self.cfg.launcher_id
        if lid is None:
            lid = store.register_launcher(LauncherInfo(
                socket.gethostname(), os.getpid(),
                {"workers": self.cfg.num_workers, "tags": dict(self.cfg.tags)}))
        self.launcher_id = lid
        log.info("launcher %d started with %d workers on %s", lid, self.cfg.num_workers,
                 store.display_url)
        pool = WorkerPool(self.cfg.num_workers, launcher_id=lid, init_blob=self.cfg.init_blob,
                          max_tasks_per_child=self.cfg.max_tasks_per_child,
                          env={**os.environ, **self.cfg.worker_env})
        finished = 0
        try:
            pool.start()
            finished = self._loop(store, pool, lid)
        finally:
            pool.stop()
            requeued = store.stop_launcher(lid, f"launcher {lid} stopped "
                                                f"({self._stop_reason or 'error'})")
            if requeued:
                log.info("requeued %d unfinished task(s)", len(requeued))
            store.close()
            log.info("launcher %d stopped (%s) after %d task(s)", lid, self._stop_reason,
                     finished)
        return finished

    def _loop(self, store: Any, pool: WorkerPool, lid: int) -> int:
        backlog: deque[ClaimedTask] = deque()
        tags = dict(self.cfg.tags)
        finished = 0
        more = True  # the store may hold claimable tasks we have not seen
        poll = POLL_MIN
        now = time.monotonic()
        last_activity = last_beat = last_sweep = now
        beat_every = self.lease * HEARTBEAT_FRACTION
        control = [self.control_fd] if self.control_fd is not None else []
        while self._stop_reason is None:
            if backlog:
                left = pool.dispatch(list(backlog))
                backlog = deque(left)
            room = pool.capacity()
            if room > 0 and not backlog and (store.changed() or more):
                claimed = store.claim(lid, room, max_nodes=1, tags=tags)
                more = len(claimed) == room
                if claimed:
                    backlog.extend(pool.dispatch(claimed))
                    last_activity = time.monotonic()
            timeout = 0.0 if (more and pool.capacity() > 0) else poll
            outcomes, handback = pool.collect(timeout, extra=control)
            backlog.extend(handback)
            if outcomes:
                finished += store.record_outcomes(lid, outcomes)
                last_activity = time.monotonic()
            now = time.monotonic()
            poll = POLL_MIN if now - last_activity < ACTIVE_WINDOW else min(poll * 2, POLL_MAX)
            if control and self._control_closed():
                self.request_stop("the executor that started it exited")
            if now - last_beat >= beat_every:
                store.heartbeat(lid)
                last_beat = now
            if now - last_sweep >= self.lease / 2:
                if store.requeue_expired(self.lease):
                    more = True
                last_sweep = now
            if (self.cfg.idle_timeout is not None and pool.idle() and not backlog
                    and now - last_activity >= self.cfg.idle_timeout):
                self.request_stop(f"idle for {self.cfg.idle_timeout:g} s")
        return finished

    def _control_closed(self) -> bool:
        import select

        readable, _, _ = select.select([self.control_fd], [], [], 0)
        if not readable:
            return False
        return os.read(self.control_fd, 4096) == b""


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
