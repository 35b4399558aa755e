"""Where a launcher's claimed tasks run: the backlog, the claim fit, placements and plans.

    store thread: claim ──fit(rows)──> which candidates to take ──add_claimed──> backlog
    dispatcher:   backlog ──place_backlog──> NodePool.place ──plan──> a worker or an agent
                  run ended ──ended──> placement released, where and when it ran recorded

The launcher's nodes are a ``NodePool`` (packing.py).  A claim is resource-aware: inside the
claim transaction ``fit`` says which candidates fit what is free (plus a short backlog for
tiny tasks), so a launcher never holds work it has no room for; a task that can never fit
here is left for others with a warning, and one whose row cannot run at all (resources edited
to 0 ranks, say) is taken to fail alone.  The dispatcher places backlog tasks in claim order,
skipping those that do not fit yet (backfill).  A run goes to a warm worker when it is one
rank on the launcher's own node in serial mode, to an agent's workers when it is one rank on
an agent's node, and otherwise through the MPI launcher on its placement's hosts.

One lock guards the pool, the placements and the backlog: the store thread appends claimed
tasks and runs ``fit`` while the dispatcher starts and ends runs.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..backends.store import ClaimedTask, FitRow, LauncherStore, TaskOutcome
from ..serialization import dump_exception
from ..tasks import Resources, TaskState
from .config import LauncherConfig
from .nodes import NodeSpec
from .packing import NodePool, Placement

log = logging.getLogger(__name__)


class Placer:
    def __init__(self, specs: Sequence[NodeSpec], cfg: LauncherConfig, *,
                 head_nodes: set[int], mpi_launcher: str) -> None:
        self.nodes = NodePool(specs)
        self.cfg = cfg
        self.head_nodes = head_nodes  # nodes whose runs may use the head's warm workers
        self.mpi_launcher = mpi_launcher
        self.max_node_gpus = max(len(n.gpus) for n in specs)
        self.lock = threading.Lock()
        self.backlog: deque[ClaimedTask] = deque()
        self._placed: dict[int, tuple[Placement, float]] = {}  # task id -> (where, began)
        self._warned: set[int] = set()  # tasks said never to fit here
        #: Claimed tasks whose row cannot run at all, with the reason: they fail alone
        #: instead of crashing the launcher.
        self._bad: dict[int, str] = {}
        #: Set by the store thread before each claim: how many it wants, and how many rounds
        #: of single-node work each node may hold (see NodePool.fit_claim).
        self.claim_want = 0
        self.claim_depth = 1
        #: Set by fit when it turned a candidate away (it may fit once runs end); the store
        #: thread clears it before each claim.
        self.turned_away = False
        self.urgent_starts = False  # see place_backlog
        #: Runs placed whose start must be recorded before their worker gets them
        #: (handoff.py): task id -> (task, its context, its GPUs); ``held_now``: those the
        #: last place_backlog added, for the dispatcher to hand over.
        self._held: dict[int, tuple[ClaimedTask, dict[str, Any], tuple[str, ...] | None]] = {}
        self._cleared: deque[int] = deque()  # recorded, not yet sent (no worker was free)
        self.held_now: list[int] = []

    # -- store thread ------------------------------------------------------------------------

    def fit(self, rows: list[FitRow]) -> list[int]:
        """Which claim candidates to take (called inside the claim transaction)."""
        with self.lock:
            fits, bad = [], []
            verdicts: dict[tuple, str | None] = {}  # most candidates share a few shapes
            invalid: dict[tuple, str | None] = {}
            for i, row in enumerate(rows):
                shape = (row.num_nodes, row.ranks_per_node, row.threads_per_rank,
                         row.gpus_per_rank, row.node_packing_count)
                if shape not in invalid:
                    invalid[shape] = invalid_shape(shape)
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
            taken = self.nodes.fit_claim([rows[i] for i in fits], list(self.backlog),
                                         self.claim_depth)
            chosen = [fits[i] for i in taken][:self.claim_want] + bad
            if len(chosen) < len(rows):
                self.turned_away = True
        return chosen

    def add_claimed(self, tasks: Sequence[ClaimedTask]) -> None:
        with self.lock:
            self.backlog.extend(tasks)

    def warn_unfit(self, store: LauncherStore, tags: dict[str, str]) -> None:
        """Say which waiting tasks need more nodes or GPUs than this launcher has (they are
        filtered out of its claims, so nothing else would tell)."""
        for task_id, nodes, gpus in store.unfit_tasks(self.nodes.num_nodes, self.max_node_gpus,
                                                      tags):
            if task_id in self._warned:
                continue
            self._warned.add(task_id)
            reason = self.nodes.never_fits(Resources(num_nodes=nodes, ranks_per_node=1,
                                                     gpus_per_rank=gpus))
            log.warning("task %d can never run on this launcher: %s; leaving it for a "
                        "launcher with more resources", task_id, reason)

    def warn_too_long(self, store: LauncherStore, tags: dict[str, str],
                      wall_left: float) -> None:
        """Say, once per kind, which waiting tasks are expected to run longer than this
        launcher's remaining wall time (its claims pass over them)."""
        warned = self.__dict__.setdefault("_warned_kinds", set())
        for key, count, shortest in store.too_long_tasks(wall_left, tags):
            if key in warned:
                continue
            warned.add(key)
            log.info("not starting %d task(s) of kind %r: expected to run %.0f s or more, "
                     "and this launcher has %.0f s of wall time left", count, key, shortest,
                     wall_left)

    # -- dispatcher --------------------------------------------------------------------------

    def plan(self, task: ClaimedTask, placement: Placement, has_gpus: bool, agents: Any
             ) -> tuple[dict[str, Any], tuple[str, ...] | None, int | None]:
        """The context a worker gets for this run, the GPUs the worker must have (None: any
        worker, because the run's processes are started through the MPI launcher), and the
        node whose agent runs it (None: the head's own workers)."""
        on_head = all(i in self.head_nodes for i in placement.nodes)
        agent = None
        if not on_head and agents is not None and agents.serves(placement.nodes[0]):
            agent = placement.nodes[0]
            has_gpus = bool(self.nodes.specs[agent].gpus)
        mpi = (self.cfg.job_mode == "mpi" or not (on_head or agent is not None)
               or task.num_nodes * task.ranks_per_node > 1)
        if mpi:
            agent = None
        hosts = ("localhost",) * len(placement.hosts) if self.cfg.local_nodes \
            else placement.hosts
        extra: dict[str, Any] = {
            "hosts": hosts, "gpu_ids": placement.gpus, "mpi_launcher": self.mpi_launcher,
            "resources": _resources(task.num_nodes, task.ranks_per_node, task.threads_per_rank,
                                    task.gpus_per_rank, task.node_packing_count),
            "mpi": mpi, "python_on_ranks": mpi and task.kind == "python",
        }
        if task.threads_per_rank > 1:
            extra["env"] = {"OMP_NUM_THREADS": str(task.threads_per_rank)}
        pin = placement.gpus[0] if has_gpus and not mpi else None
        return extra, pin, agent

    def place_backlog(self, pool: Any, agents: Any, launcher_id: int
                      ) -> tuple[list[int], list[TaskOutcome]]:
        """Start what fits, in claim order; a task that does not fit yet stays, and the ones
        behind it may go first (backfill).  Returns the ids started, and the outcomes of the
        tasks that cannot run at all."""
        started, taken = [], []
        # Whether a run placed now is not known to be short: its start is written at once
        # (control.START_RECORD_DELAY_S).  The head's warm workers learn run times (for the
        # agents' runs too, of kinds they also ran); a pool that does not, none is short.
        # In a pool that can hold them (the warm workers), runs not known to be brief wait
        # for their start to be recorded before a worker gets them (handoff.py); agents' and
        # simulated runs start at once, and their start is written right after.
        self.urgent_starts = False
        self.held_now = []
        short = getattr(pool, "short", None)
        hold = getattr(pool, "holds_starts", False)
        room = pool.capacity() + (agents.capacity() if agents else 0) - len(self._held)
        with self.lock:
            for task in self.backlog:
                if task.id in self._bad:
                    started.append(task)  # out of the backlog; failed below
                    taken.append(task)
                    continue
                if room <= 0:
                    break
                placement = self.nodes.place(task)
                if placement is None:
                    continue
                extra, pin, agent = self.plan(task, placement, pool.has_gpus, agents)
                if agent is None and hold and not pool.brief(task):
                    self._held[task.id] = (task, extra, pin)
                    self._placed[task.id] = (placement, time.time())
                    self.held_now.append(task.id)
                    taken.append(task)
                    room -= 1
                    continue
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
                taken.append(task)
                room -= 1
                if short is None or not short(task):
                    self.urgent_starts = True
            failed = [self._fail_bad(t, launcher_id) for t in started if t.id in self._bad]
            self._drop_from_backlog(taken)
            if room <= 0 and self.backlog and getattr(pool, "prefetch_room", None) \
                    and pool.prefetch_room():
                self._prefetch(pool)
        return [t.id for t in started], failed

    def held(self) -> int:
        """Runs placed and waiting for their start to be recorded, or for a worker."""
        return len(self._held)

    def start_recorded(self, pool: Any, go: Sequence[int] = (), drop: Sequence[int] = ()
                       ) -> None:
        """Send the held runs whose start the store recorded to their workers; release the
        placements of those it refused (cancelled or requeued meanwhile: never run here).
        Ids no longer held (killed meanwhile) are passed over."""
        with self.lock:
            for task_id in drop:
                if self._held.pop(task_id, None) is not None:
                    placed = self._placed.pop(task_id, None)
                    if placed is not None:
                        self.nodes.release(placed[0])
                    log.info("task %d was cancelled or requeued before it started here; "
                             "not run", task_id)
            self._cleared.extend(i for i in go if i in self._held)
            while self._cleared:
                task_id = self._cleared[0]
                if task_id not in self._held:
                    self._cleared.popleft()
                    continue
                task, extra, pin = self._held[task_id]
                if not pool.dispatch(task, extra, pin):
                    break  # no worker free yet (one is being replaced): next pass
                self._cleared.popleft()
                del self._held[task_id]
                self._placed[task_id] = (self._placed[task_id][0], time.time())

    def has_cleared(self) -> bool:
        return bool(self._cleared)

    def _prefetch(self, pool: Any) -> None:
        """Queue short tasks behind the short runs of busy workers (workers/pool.py): each
        takes over the placement of the run ahead of it when that run ends, and counts as
        started only then (``ended``)."""
        queued = []
        for task in self.backlog:
            if task.id in self._bad:
                continue
            w = pool.prefetch_target(task)
            if w is None:
                break  # in claim order: no task behind this one jumps it
            head = w.queue[0]
            placed = self._placed.get(head.id)
            if placed is None:
                continue
            extra, pin, agent = self.plan(task, placed[0], pool.has_gpus, None)
            if extra["mpi"] or pin is not None:
                continue
            if pool.prefetch(w, head.id, task, extra):
                queued.append(task)
        if queued:
            self._drop_from_backlog(queued)

    def _drop_from_backlog(self, started: list[ClaimedTask]) -> None:
        # Usually the started tasks are the head of the backlog: pop them (rebuilding the
        # whole backlog per pass cost a tenth of the launcher's time on no-ops).
        k = 0
        while k < len(started) and self.backlog and self.backlog[0] is started[k]:
            self.backlog.popleft()
            k += 1
        if k < len(started):
            ids = {t.id for t in started[k:]}
            self.backlog = deque(t for t in self.backlog if t.id not in ids)

    def _fail_bad(self, task: ClaimedTask, launcher_id: int) -> TaskOutcome:
        """The outcome of a claimed task that cannot run here or anywhere, as it stands."""
        reason = self._bad.pop(task.id)
        log.error("task %d cannot run: %s; it fails (the launcher goes on)", task.id, reason)
        err = ValueError(f"task {task.id} cannot run: {reason}")
        return TaskOutcome(task.id, (TaskState.RUN_ERROR, TaskState.FAILED),
                           error=dump_exception(err, f"Task {task.id} on launcher "
                                                f"{launcher_id}"),
                           message=f"cannot run: {reason}")

    def ended(self, outcomes: list[TaskOutcome], handback: Sequence[ClaimedTask],
              begun: Sequence[tuple[int, ClaimedTask]] = ()) -> list[int]:
        """Release the placements of finished runs and of runs handed back (those go back to
        the head of the backlog), and attach where and when each ran to its outcome.
        ``begun``: (run that ended, queued task its worker began then): that task takes the
        ended run's placement.  Returns the ids of those tasks (they started now)."""
        now = time.time()
        with self.lock:
            handed = set()  # runs whose placement passed to the task queued behind them
            for ended_id, task in begun:
                placed = self._placed.get(ended_id)
                if placed is not None:
                    self._placed[task.id] = (placed[0], now)
                    handed.add(ended_id)
            for task in handback:
                placed = self._placed.pop(task.id, None)
                if placed is not None:
                    self.nodes.release(placed[0])
            for k, o in enumerate(outcomes):
                placed = self._placed.pop(o.task_id, None)
                if placed is None:
                    continue
                if o.task_id not in handed:
                    self.nodes.release(placed[0])
                record = {**placed[0].as_record(), "started_at": placed[1], "ended_at": now}
                # Built directly: dataclasses.replace cost more than the rest of this loop.
                outcomes[k] = TaskOutcome(o.task_id, o.path, o.result, o.error, o.return_code,
                                          o.message, record)
            if handback:
                self.backlog.extendleft(reversed(handback))
        return [task.id for _, task in begun]

    def take_doomed(self, kills: set[int]) -> list[ClaimedTask]:
        """Remove from the backlog, and from the runs held for their start to be recorded,
        the tasks to kill that have not started."""
        with self.lock:
            doomed = [t for t in self.backlog if t.id in kills]
            for task in doomed:
                self.backlog.remove(task)
            for task_id in kills & self._held.keys():
                doomed.append(self._held.pop(task_id)[0])
                placed = self._placed.pop(task_id, None)
                if placed is not None:
                    self.nodes.release(placed[0])
        return doomed


def invalid_shape(shape: tuple) -> str | None:
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
