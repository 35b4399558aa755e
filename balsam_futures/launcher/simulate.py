"""Simulated execution: runs that start no process, for benchmarks and capacity planning.

    backlog ──place_backlog──> SimulatedPool.dispatch ──timer heap──> collect ──> outcomes
                                 (ends at now + sim_seconds on the launcher's clock)

``balsam-futures launcher --simulate`` swaps the launcher's worker pool for this one; all the
rest is the real launcher: the same claims, placement on the (virtual) nodes, batched outcome
writes, history and ``bf_runs`` rows, events reaching the futures of a real master.  A run
"runs" for the seconds its task carries in ``data`` and then finishes:

    data["sim_seconds"]   how long the run lasts (a number >= 0; default 0)
    data["sim_result"]    the run's result (default None; any JSON value)
    data["sim_fail"]      if set (true, or a message), the run raises RuntimeError instead,
                          and the task's retry policy applies as to any failure

A run longer than the task's own timeout ends at that timeout in RUN_TIMEOUT, as a real one
would.  There is no thread per run: one heap of end times, read by the dispatcher's ``collect``
(the dispatcher sleeps until the next end, or until a claim, a kill or a stop wakes it).
HyperQueue's zero-worker mode and Flux's simulated execution are the precedent; unlike them,
the store keeps its full bookkeeping here.
"""

from __future__ import annotations

import heapq
import itertools
import math
import selectors
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..backends.store import ClaimedTask, TaskOutcome
from ..errors import TaskKilled, TaskTimeout
from ..serialization import dump_exception, dump_result
from ..tasks import TaskState
from .workers import outcome_for

__all__ = ["SIM_FAIL", "SIM_RESULT", "SIM_SECONDS", "SimulatedPool", "simulated_run"]

#: The keys of a task's ``data`` that drive its simulated run.
SIM_SECONDS, SIM_RESULT, SIM_FAIL = "sim_seconds", "sim_result", "sim_fail"


def simulated_run(data: Mapping[str, Any]) -> tuple[float, Any, str | None]:
    """(seconds, result, failure message or None) of a task's simulated run, from its data.

    Raises ValueError, naming the field, for a duration that is not a number >= 0.
    """
    seconds = data.get(SIM_SECONDS, 0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
            or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"data[{SIM_SECONDS!r}] must be a number of seconds >= 0, "
                         f"not {seconds!r}")
    fail = data.get(SIM_FAIL)
    message = None
    if fail:
        message = fail if isinstance(fail, str) else "simulated failure"
    return float(seconds), data.get(SIM_RESULT), message


class SimulatedPool:
    """A stand-in for ``WorkerPool`` (same methods, as the dispatcher uses them) whose runs
    are timers.  ``slots`` bounds the runs at once (placement is the real limit: the
    dispatcher places each run on the nodes before it gets here)."""

    has_gpus = False  # no worker to pin: a placement's GPU ids are recorded, not used

    def __init__(self, slots: int, *, launcher_id: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, not {slots}")
        self.slots = slots
        self.launcher_id = launcher_id
        self.clock = clock
        self.host = socket.gethostname()
        #: (end time, sequence, task id): the sequence keeps equal end times in start order.
        self._timers: list[tuple[float, int, int]] = []
        self._seq = itertools.count()
        #: task id -> (task, result blob or None, failure message or None, timed out)
        self._runs: dict[int, tuple[ClaimedTask, Any, str | None, bool]] = {}
        self._sel = selectors.DefaultSelector()

    def watch(self, fd: int) -> None:
        """Also wake ``collect`` when ``fd`` is readable (it is returned in its third list)."""
        self._sel.register(fd, selectors.EVENT_READ, None)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Nothing to start: no process runs."""

    def stop(self, timeout: float = 5.0) -> list[ClaimedTask]:
        """Drop the runs still going; returns their tasks (requeued by the launcher)."""
        unfinished = [run[0] for run in self._runs.values()]
        self._runs.clear()
        self._timers.clear()
        self._sel.close()
        return unfinished

    # -- feeding -----------------------------------------------------------------------------

    def capacity(self) -> int:
        return self.slots - len(self._runs)

    def idle(self) -> bool:
        return not self._runs

    def running(self) -> int:
        return len(self._runs)

    def dispatch(self, task: ClaimedTask, extra: Mapping[str, Any],
                 pin: tuple[str, ...] | None) -> bool:
        """Start the timer of ``task``'s run; False if every slot is taken."""
        if len(self._runs) >= self.slots:
            return False
        now = self.clock()
        try:
            seconds, result, fail = simulated_run(task.data or {})
        except ValueError as exc:
            # Fails at once, as a real run whose arguments are wrong would.
            seconds, result, fail = 0.0, None, f"task {task.id}: {exc}"
        timed_out = bool(task.wall_time_s) and seconds > task.wall_time_s
        if timed_out:
            seconds = task.wall_time_s
        self._runs[task.id] = (task, result, fail, timed_out)
        heapq.heappush(self._timers, (now + seconds, next(self._seq), task.id))
        return True

    # -- results -----------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """Clock time at which the next run ends."""
        while self._timers and self._timers[0][2] not in self._runs:
            heapq.heappop(self._timers)  # killed meanwhile
        return self._timers[0][0] if self._timers else None

    def take_begun(self) -> list[tuple[int, ClaimedTask]]:
        """Nothing is queued behind a simulated run (WorkerPool queues short work)."""
        return []

    def collect(self, timeout: float | None
                ) -> tuple[list[TaskOutcome], list[ClaimedTask], list[int]]:
        """Wait up to ``timeout`` for the next runs to end.

        Returns (outcomes, tasks to run elsewhere: always none, the watched fds readable).
        """
        deadline = self.next_deadline()
        if deadline is not None:
            until = max(deadline - self.clock(), 0.0)
            timeout = until if timeout is None else min(timeout, until)
        ready = [key.fd for key, _mask in self._sel.select(timeout)]
        return self.ended(self.clock()), [], ready

    def ended(self, now: float) -> list[TaskOutcome]:
        """The outcomes of the runs whose end time has come by ``now``."""
        outcomes = []
        while self._timers and self._timers[0][0] <= now:
            _end, _seq, task_id = heapq.heappop(self._timers)
            run = self._runs.pop(task_id, None)
            if run is not None:
                outcomes.append(self._outcome(*run))
        return outcomes

    def _outcome(self, task: ClaimedTask, result: Any, fail: str | None,
                 timed_out: bool) -> TaskOutcome:
        if timed_out:
            err: Exception = TaskTimeout(f"task {task.id} ran past its timeout of "
                                         f"{task.wall_time_s:g} s and was stopped",
                                         task_id=task.id)
            return self.lost(task, TaskState.RUN_TIMEOUT, err,
                             f"timeout after {task.wall_time_s:g} s")
        if fail is not None:
            return self.lost(task, TaskState.RUN_ERROR, RuntimeError(fail),
                             "the task raised an exception")
        return outcome_for(task, TaskState.RUN_DONE, result=dump_result(result))

    def kill(self, task_ids: set[int] | None,
             run_state: TaskState = TaskState.KILLED,
             reason: str = "killed on request") -> list[TaskOutcome]:
        """End the runs among ``task_ids`` (all with None) now, in ``run_state``."""
        outcomes = []
        for task_id in [t for t in self._runs if task_ids is None or t in task_ids]:
            task = self._runs.pop(task_id)[0]
            if run_state is TaskState.KILLED:
                err: Exception = TaskKilled(f"task {task.id} was {reason}", task_id=task.id)
            else:
                err = TaskTimeout(f"task {task.id} was stopped: {reason}", task_id=task.id)
            outcomes.append(self.lost(task, run_state, err, reason))
        return outcomes  # their timers are skipped when they come up

    def lost(self, task: ClaimedTask, run_state: TaskState, err: BaseException,
             message: str) -> TaskOutcome:
        """The outcome of a run that ended in ``run_state``, with ``err`` as its exception."""
        where = f"Task {task.id} on {self.host} (launcher {self.launcher_id}, simulated)"
        return outcome_for(task, run_state, message=message, error=dump_exception(err, where))
