"""What a launcher's two threads hand each other, each thing under one lock.

    dispatcher ──started ids, outcomes──>  Handoff  ──take()──>  store thread
    dispatcher <──kill requests, wake-ups──         <──kills──   store thread
    dispatcher <──starts recorded (go/drop)──       <──recorded── store thread

A run not known to be short waits for its start to be recorded (CLAIMED→RUNNING committed)
before its worker gets it: until then a cancel may still take the task, and once the worker
has it the store says RUNNING, so ``cancel()`` never reports "not started" for a run that
had begun (ProcessPoolExecutor's futures are running from the moment a worker may take them).

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
        #: Placed runs whose worker waits for their start to be recorded, and those recorded
        #: (go) or refused by the store (drop: cancelled or requeued meanwhile).
        self._awaiting: set[int] = set()
        self._go: list[int] = []
        self._drop: list[int] = []
        #: Set to wake the dispatcher (claimed tasks, kills) and the store thread (outcomes,
        #: room in the backlog); each sleeps on its own.
        self.dispatcher_waker = Waker()
        self.store_waker = Waker()
        #: Published by the dispatcher before it sleeps.
        self.running = 0
        self.idle = False

    # -- dispatcher -> store thread ----------------------------------------------------------

    def put(self, started: Iterable[int] = (), outcomes: Iterable[TaskOutcome] = (),
            urgent: bool = False, awaiting: Iterable[int] = ()) -> None:
        """Runs that started and runs that ended, for the next round trip; a run's start is
        handed over before its outcome can be, so the store never sees them out of order.
        ``urgent``: a run among ``started`` is not known to be short (see ``urgent``).
        ``awaiting``: runs placed but held until their start is recorded (urgent too); the
        dispatcher learns the answer from ``take_recorded``."""
        awaiting = list(awaiting)
        with self._lock:
            self._started.extend(started)
            self._started.extend(awaiting)
            self._awaiting.update(awaiting)
            self._outcomes.extend(outcomes)
            self._urgent = self._urgent or urgent or bool(awaiting)
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

    def recorded(self, started: Iterable[int], lost: Iterable[int]) -> list[int]:
        """The store wrote the starts ``started``, except ``lost`` (the tasks were cancelled
        or requeued meanwhile).  Held runs among them may go, or are dropped unrun; returns
        the lost ones that were not held (their runs have begun: the caller kills them)."""
        lost = set(lost)
        with self._lock:
            held = self._awaiting.intersection(started)
            if not held:
                return sorted(lost)
            self._awaiting -= held
            self._go += sorted(held - lost)
            self._drop += sorted(held & lost)
        self.dispatcher_waker.set()
        return sorted(lost - held)

    def take_recorded(self) -> tuple[list[int], list[int]]:
        """Held runs whose start was recorded since the last call (go), and those the store
        refused (drop)."""
        with self._lock:
            go, self._go = self._go, []
            drop, self._drop = self._drop, []
        return go, drop

    def withdraw_held(self, started: list[int]) -> list[int]:
        """The launcher is stopping: held runs will not start, so their starts are not
        written (their tasks stay CLAIMED and go back READY when it stops); returns the
        other starts among ``started``."""
        with self._lock:
            held, self._awaiting = self._awaiting, set()
        return [i for i in started if i not in held] if held else started

    def awaiting(self) -> bool:
        """Whether a held run waits for its start to be recorded (unlocked, as has_kills)."""
        return bool(self._awaiting)

    def has_recorded(self) -> bool:
        # Unlocked, as has_kills.
        return bool(self._go or self._drop)

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
