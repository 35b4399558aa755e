"""What a launcher's two threads hand each other, each thing under one lock.

    dispatcher ──started ids, outcomes──>  Handoff  ──take()──>  store thread
    dispatcher <──kill requests, wake-ups──         <──kills──   store thread

The dispatcher also publishes, for the store thread's claim size and idle time-out, how many
runs are going and whether it is idle: plain attributes, written by the dispatcher alone and
only read by the store thread (an int or a bool is read whole).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from .._wakeup import Waker
from ..backends.store import TaskOutcome


class Handoff:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: list[TaskOutcome] = []
        self._started: list[int] = []
        self._urgent = False
        #: Whether the starts of the last ``take`` include a run not known to be short, whose
        #: start is written at once (control.START_RECORD_DELAY_S).  The store thread's own.
        self.urgent = False
        self._kills: set[int] = set()
        #: Set to wake the dispatcher (claimed tasks, kills) and the store thread (outcomes,
        #: room in the backlog); each sleeps on its own.
        self.dispatcher_waker = Waker()
        self.store_waker = Waker()
        #: Published by the dispatcher before it sleeps.
        self.running = 0
        self.idle = False

    # -- dispatcher -> store thread ----------------------------------------------------------

    def put(self, started: Iterable[int] = (), outcomes: Iterable[TaskOutcome] = (),
            urgent: bool = False) -> None:
        """Runs that started and runs that ended, for the next round trip; a run's start is
        handed over before its outcome can be, so the store never sees them out of order.
        ``urgent``: a run among ``started`` is not known to be short (see ``urgent``)."""
        with self._lock:
            self._started.extend(started)
            self._outcomes.extend(outcomes)
            self._urgent = self._urgent or urgent
        self.store_waker.set()

    def take(self) -> tuple[list[int], list[TaskOutcome]]:
        """Everything handed over so far: (started ids, outcomes)."""
        with self._lock:
            started, self._started = self._started, []
            outcomes, self._outcomes = self._outcomes, []
            self.urgent, self._urgent = self._urgent, False
        return started, outcomes

    def give_back(self, started: list[int], outcomes: list[TaskOutcome]) -> None:
        """A round trip failed (the store is unreachable), or waits: keep them, first in
        line."""
        with self._lock:
            self._started[:0] = started
            self._outcomes[:0] = outcomes
            self._urgent = self._urgent or self.urgent

    def pending_outcomes(self) -> int:
        with self._lock:
            return len(self._outcomes)

    # -- store thread -> dispatcher ----------------------------------------------------------

    def kill(self, task_ids: Iterable[int]) -> None:
        """Ask the dispatcher to stop these runs (kill requests, or starts the store
        refused because the task was cancelled or requeued meanwhile)."""
        with self._lock:
            self._kills.update(task_ids)
        self.dispatcher_waker.set()

    def take_kills(self) -> set[int]:
        with self._lock:
            kills, self._kills = self._kills, set()
        return kills

    def has_kills(self) -> bool:
        # Unlocked: a set's length is read whole, and a kill seen one pass late is fine.
        return bool(self._kills)
