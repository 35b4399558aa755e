"""A launcher's dispatcher (its main thread): hand claimed tasks to workers, collect results.

    backlog ──place_backlog──> WorkerPool / AgentPool ──collect──> outcomes ──> Handoff
       ▲                                                    │
       └──────────── runs handed back (a worker died before starting them) ┘

It sleeps in the pool's ``collect`` on every worker socket, the agents' descriptor, the
launcher's control pipe and its own waker, so a result, a claim, a kill or a stop request
wakes it at once.  It stops the runs itself when the launcher's wall time ends or a signal
came (RUN_TIMEOUT, retried per the task's policy), and kills the runs the store thread names.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from ..errors import TaskKilled
from ..tasks import TaskState

if TYPE_CHECKING:
    from .pilot import Pilot
    from .workers import WorkerPool

log = logging.getLogger(__name__)

#: At the end of the wall time, how long to wait for the agents to report their stopped runs
#: (stopping a worker takes milliseconds; an agent that does not answer in this time is
#: presumably gone, and its runs are requeued when the launcher stops).
STOP_AGENTS_S = 10.0


class Dispatcher:
    def __init__(self, pilot: Pilot, pool: WorkerPool, agents: Any) -> None:
        self.pilot = pilot
        self.pool = pool
        self.agents = agents
        self.handoff = pilot.handoff
        self.placer = pilot.placer

    def run(self) -> None:
        pilot, pool, agents, handoff = self.pilot, self.pool, self.agents, self.handoff
        pool.watch(handoff.dispatcher_waker.fileno())
        if pilot.control_fd is not None:
            pool.watch(pilot.control_fd)
        if agents is not None:
            pool.watch(agents.fileno())
        while pilot.stop_reason is None:
            if handoff.has_kills():
                self.kill()
            if handoff.has_recorded() or self.placer.has_cleared():
                # Held runs whose start is recorded go to their workers now.
                go, drop = handoff.take_recorded()
                self.placer.start_recorded(pool, go, drop)
            if pilot.signalled is not None:
                self.stop_runs(f"stopped: the launcher received {pilot.signalled}",
                               pilot.signalled)
                break
            if pilot.deadline is not None and time.monotonic() >= pilot.deadline:
                self.stop_runs("stopped at the end of the launcher's wall time",
                               f"wall time of {pilot.cfg.wall_time_min:g} min over")
                break
            self.place()
            self.publish()  # before sleeping
            timeout = None if pilot.deadline is None else \
                max(0.0, pilot.deadline - time.monotonic())
            outcomes, handback, ready = pool.collect(timeout)
            if agents is not None and agents.fileno() in ready:
                done, back = agents.collect()
                outcomes += done
                handback += back
            begun = pool.take_begun() if outcomes else ()
            began: list[int] = []
            if outcomes or handback:
                began = self.placer.ended(outcomes, handback, begun)
            if outcomes:
                # What the ended runs freed is filled now, so that the starts held for their
                # record share the round trip of these outcomes (one wait, not two).
                self.place(began, outcomes)
            if handoff.dispatcher_waker.fileno() in ready:
                handoff.dispatcher_waker.clear()
            if pilot.control_fd in ready:
                if os.read(pilot.control_fd, 4096) == b"":
                    pilot.request_stop("the executor that started it exited")
                else:  # the executor stored tasks: the store thread looks now
                    handoff.store_waker.set()

    def place(self, began: list[int] | tuple = (), outcomes: list | tuple = ()) -> None:
        """Start what fits from the backlog, and hand over in one go the runs that began
        (``began``: queued runs that began as others ended, first), those started or held
        now, and ``outcomes``."""
        pool, agents, placer = self.pool, self.agents, self.placer
        started, failed, held, urgent = [], [], [], False
        tried = bool(placer.backlog) and (pool.capacity() > placer.held()
                                          or (agents and agents.capacity())
                                          or self.prefetch_room())
        if tried:
            started, failed = placer.place_backlog(pool, agents, self.pilot.launcher_id)
            held, urgent = placer.held_now, placer.urgent_starts
        if not (tried or outcomes):
            return
        if outcomes:
            # The freed workers are counted before the store thread hears of their
            # outcomes: else it sizes its next claim by a stale count, asks for nothing,
            # and (PostgreSQL announces only new tasks) might not look again.
            self.publish()
        # Starts are handed over before any outcome of their runs can be collected; this
        # also wakes the store thread: there is room in the backlog to claim more.
        self.handoff.put([*began, *started], [*outcomes, *failed], urgent=urgent,
                         awaiting=held)

    def prefetch_room(self) -> bool:
        """A busy worker may take short work behind its run (workers/pool.py)."""
        room = getattr(self.pool, "prefetch_room", None)
        return room is not None and room()

    def publish(self) -> None:
        """How many runs are going and whether all is idle, for the store thread's claim
        size and idle time-out."""
        held = self.placer.held()  # placed, waiting for their start to be recorded
        running = self.pool.running() + held
        idle = self.pool.idle() and not self.placer.backlog and not held
        if self.agents is not None:
            running += self.agents.running()
            idle = idle and self.agents.idle()
        self.handoff.running, self.handoff.idle = running, idle

    def stop_runs(self, reason: str, stop_reason: str) -> None:
        """Stop the runs still going (RUN_TIMEOUT, retried per policy), hand their outcomes
        to the store thread, then stop (outcomes first: the store thread writes what it has
        before it ends)."""
        outcomes = self.pool.kill(None, TaskState.RUN_TIMEOUT, reason)
        if self.agents is not None:
            # The agents answer over MPI: wait for their outcomes, so that they are written.
            self.agents.kill(None, TaskState.RUN_TIMEOUT, reason)
            outcomes += self.agents.wait_idle(STOP_AGENTS_S)[0]
        self.placer.ended(outcomes, [])
        if outcomes:
            log.info("%s: %d run(s) stopped", stop_reason, len(outcomes))
            self.handoff.put(outcomes=outcomes)
        self.pilot.request_stop(stop_reason)

    def kill(self) -> None:
        """Kill the runs the store thread named; a claimed task not handed to a worker yet
        (in the backlog, or held for its start to be recorded) is killed before it starts."""
        kills = self.handoff.take_kills()
        outcomes = self.pool.kill(kills)
        if self.agents is not None:
            self.agents.kill(kills)  # their outcomes come back through collect()
        self.placer.ended(outcomes, [])
        for task in self.placer.take_doomed(kills):
            err = TaskKilled(f"task {task.id} was killed on request", task_id=task.id)
            outcomes.append(self.pool.lost(task, TaskState.KILLED, err,
                                           "killed before it started"))
        if outcomes:
            self.handoff.put(outcomes=outcomes)
