"""Futures, and the watcher thread that resolves them from the store's events.

    submit() ──create_tasks──> store ──(launcher runs the task)──> history rows
                                                                      │
    Watcher thread: changed()? ──read_events(after=cursor)────────────┘
        for each event of a task this executor knows: RUNNING → set_running_or_notify_cancel
                                                      JOB_FINISHED → set_result
                                                      FAILED/KILLED → set_exception
                                                      CANCELLED → cancel

The watcher reads only events after its cursor, in batches, so its cost grows with the
number of new events, not with the number of futures outstanding.  It is the only caller of
``set_result``/``set_exception``.  Results reach futures through the store and nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    PENDING,
    RUNNING,
)
from typing import Any

from ._wakeup import Waker
from .errors import (
    ExecutorBroken,
    LauncherBroken,
    PayloadError,
    StoreError,
    TaskFailed,
    TaskKilled,
    WorkerInitError,
)
from .launcher.backoff import next_poll
from .serialization import load_exception, load_result
from .tasks import TaskState

log = logging.getLogger(__name__)

#: Guards the lazy creation of futures' conditions and lists (see BalsamFuture).
_LAZY_FIELDS = threading.Lock()
_CANCELLED_STATES = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED})
_DONE_STATES = frozenset({CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED})

#: Poll interval right after activity (see launcher/pilot.py for the same trade-off).
POLL_MIN = 0.001
#: Poll interval when nothing happened for ACTIVE_WINDOW seconds.
POLL_MAX = 0.05
ACTIVE_WINDOW = 2.0
#: With a store that announces changes, the longest sleep between looks at it anyway: it
#: bounds the delay after a lost notification and how late a dead launcher is noticed.
NOTIFY_FALLBACK_POLL = 0.5
#: How often the watcher requeues the tasks of launchers whose lease expired (each launcher
#: is judged by its own lease; a sweep is one indexed read when nobody expired).
SWEEP_EVERY = 2.0
#: During a store outage, at most one warning per this many seconds.
OUTAGE_LOG_EVERY = 30.0
#: Events read per query.  Large enough to drain a burst in a few queries, small enough that
#: one query does not hold megabytes of results in memory.
EVENT_BATCH = 2000


class BalsamFuture(Future):
    """A ``concurrent.futures.Future`` for one task in the store.

    ``cancel()`` asks the store: a task whose run has not started (READY, or CLAIMED by a
    launcher) is marked CANCELLED atomically and ``cancel()`` returns True; a running or
    finished task returns False.  ``BalsamFuture()`` with no arguments is a plain future.
    """

    # Future.__init__ gives every future a Condition (with its RLock, deque and bound
    # methods) and two lists: about 1.6 KB, most of a future's memory, while a campaign's
    # futures mostly just wait in the registry.  They are made on first use instead (a
    # waiter, a callback, the result), under one lock, so that no future ever gets two.
    __slots__ = ("_task_id", "_submitter", "_seq", "_withdrawn", "_registry", "_state",
                 "_result", "_exception", "_cond", "_waiters_", "_callbacks")

    def __init__(self, task_id: int | None = None, submitter: Any = None, seq: int = 0) -> None:
        # Not Future.__init__: the same fields, the costly ones made lazily (see above).
        self._state = PENDING
        self._result = None
        self._exception = None
        self._cond: threading.Condition | None = None
        self._waiters_: list | None = None
        self._callbacks: list | None = None
        self._task_id = task_id
        self._submitter = submitter
        self._seq = seq
        self._withdrawn = False
        self._registry: Registry | None = None

    def _made(self, slot: str, make: Any) -> Any:
        """The value in ``slot``, made by ``make()`` the first time (once, under a lock)."""
        value = getattr(self, slot)
        if value is None:
            with _LAZY_FIELDS:
                value = getattr(self, slot)
                if value is None:
                    value = make()
                    setattr(self, slot, value)
        return value

    @property
    def _condition(self) -> threading.Condition:
        return self._made("_cond", threading.Condition)

    @property
    def _waiters(self) -> list:
        return self._made("_waiters_", list)

    @property
    def _done_callbacks(self) -> list:
        return self._made("_callbacks", list)

    @_done_callbacks.setter
    def _done_callbacks(self, value: list) -> None:
        self._callbacks = value

    # State reads without the condition (one attribute read is atomic): asking whether a
    # future is done must not build its condition.
    def cancelled(self) -> bool:
        return self._state in _CANCELLED_STATES

    def running(self) -> bool:
        return self._state == RUNNING

    def done(self) -> bool:
        return self._state in _DONE_STATES

    # A future nobody waits on has no condition yet (a waiter, a callback or result() would
    # have made it): its result is set without making one.  _LAZY_FIELDS orders this with a
    # waiter making the condition, who then sees the state set here.
    def set_result(self, result: Any) -> None:
        if not self._set_unwatched(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if not self._set_unwatched(None, exception):
            super().set_exception(exception)

    def set_running_or_notify_cancel(self) -> bool:
        if self._cond is None:
            with _LAZY_FIELDS:
                if self._cond is None and self._state == PENDING:
                    self._state = RUNNING
                    return True
        return super().set_running_or_notify_cancel()

    def _set_unwatched(self, result: Any, exception: BaseException | None) -> bool:
        if self._cond is not None:
            return False
        with _LAZY_FIELDS:
            if self._cond is not None:
                return False
            state = self._state
            if state not in _DONE_STATES:
                self._result, self._exception, self._state = result, exception, FINISHED
        if state in _DONE_STATES:
            raise InvalidStateError(f"{state}: {self!r}")
        self._invoke_callbacks()
        return True

    def _invoke_callbacks(self) -> None:
        # The registry forgets a done future here rather than through a done callback: one
        # bound method and one list less per future.
        registry = self._registry
        if registry is not None:
            registry.forget(self)
        if self._callbacks:
            super()._invoke_callbacks()

    @property
    def task_id(self) -> int | None:
        """The task's id in the store (waits until the task is written; None if it never
        was, e.g. cancelled first)."""
        if self._task_id is None and self._submitter is not None and not self._withdrawn:
            self._submitter.flush(self._seq)
        return self._task_id

    def __repr__(self) -> str:
        if self._task_id is None and self._submitter is None:
            return super().__repr__()  # a plain future, built by hand
        return super().__repr__().replace(" state=", f" task_id={self._task_id} state=", 1)

    def kill(self) -> bool:
        """Stop the task wherever it runs: a pending task is cancelled, a running one is
        killed by its launcher (with its whole process group) and its future raises
        TaskKilled.  Returns False if the task had already finished."""
        if self._submitter is None:
            return self.cancel()
        return self._submitter.kill(self)

    def cancel(self) -> bool:
        with self._condition:
            if self._state != PENDING:
                return super().cancel()
        if self._submitter is None:
            return super().cancel()
        return self._submitter.cancel(self)


def _mark_cancelled(fut: Future) -> bool:
    """Cancel a future whose task is CANCELLED in the store, and wake its waiters."""
    with fut._condition:
        if fut._state == CANCELLED_AND_NOTIFIED:
            return True
        if not Future.cancel(fut):
            return False
        # wait() and as_completed() only see a cancelled future once notified; the
        # condition is re-entrant, so this cannot interleave with another notifier.
        fut.set_running_or_notify_cancel()
    return True


class Registry:
    """The futures of one executor by task id, shared by the executor and its watcher."""

    def __init__(self) -> None:
        # Re-entrant: registering a future that is already done runs its callbacks, which
        # take this lock again.
        self.lock = threading.RLock()
        self.futures: dict[int, BalsamFuture] = {}
        self.changed = threading.Condition(self.lock)

    def add(self, futures: Iterable[BalsamFuture]) -> None:
        """Register futures; the caller holds ``lock`` while the tasks are being stored."""
        for f in futures:
            f._registry = self  # first: a future done from now on forgets itself
            self.futures[f._task_id] = f
            if f.done():  # done before it was registered (cancelled): not outstanding
                self.futures.pop(f._task_id, None)

    def forget(self, fut: BalsamFuture) -> None:
        """A future is done: it is no longer outstanding (from BalsamFuture)."""
        with self.lock:
            self.futures.pop(fut._task_id, None)
            if not self.futures:
                self.changed.notify_all()

    def pending(self) -> list[BalsamFuture]:
        with self.lock:
            return list(self.futures.values())

    def wait_empty(self) -> None:
        with self.lock:
            while self.futures:
                self.changed.wait()


class Watcher(threading.Thread):
    """Resolves an executor's futures from store events; one per executor."""

    def __init__(self, store: Any, registry: Registry, cursor: int, owner: Any,
                 launcher: Any = None) -> None:
        super().__init__(name="balsam-futures-watcher", daemon=True)
        self.store = store
        self.registry = registry
        self.cursor = cursor
        self._owner = weakref.ref(owner)
        self.launcher = launcher
        self._stopping = threading.Event()
        self._waker = Waker()
        self.error: BaseException | None = None
        # Only an executor's own launcher runs its initializer.
        self._on_init_error = self._initializer_failed if launcher is not None else None

    def stop(self) -> None:
        self._stopping.set()
        self._waker.set()

    def wake(self) -> None:
        self._waker.set()

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a dead watcher leaves futures hanging
            err = ExecutorBroken(f"the executor's watcher thread failed "
                                 f"({type(exc).__name__}: {exc}); its tasks stay in the store")
            err.__cause__ = exc
            log.error("%s", err, exc_info=exc)
            owner = self._owner()
            if owner is not None:
                owner._break(err)
            else:
                _fail_all(self.registry.pending(), err)
        finally:
            self._waker.close()
            if self.launcher is not None:
                self.launcher.close_news()

    def _loop(self) -> None:
        poll = POLL_MIN
        last_activity = time.monotonic()
        last_check = last_sweep = 0.0
        outage = _Outage("watcher")
        # The executor's own launcher says when it committed something (launcher/child.py):
        # the store is read then, not at the next poll.
        news = [self.launcher.news_fd] if self.launcher is not None else []
        try:
            deletions = self.store.deletions()
        except StoreError:
            deletions = -1  # unknown: look once the store answers
        while not self._stopping.is_set():
            try:
                if self.store.changed() and self.drain():
                    last_activity = time.monotonic()
                outage.over()
            except StoreError as exc:
                outage.failed(exc)
                self._waker.wait(POLL_MAX)
            now = time.monotonic()
            if now - last_sweep > SWEEP_EVERY:
                # Executors sweep too, so tasks of a dead launcher come back even when no
                # other launcher is running yet.  Each launcher is judged by its own lease.
                last_sweep = now
                try:
                    self.store.requeue_expired(unreachable_until=outage.reachable_since)
                except StoreError as exc:
                    outage.failed(exc)
            if now - last_check > 0.5:
                last_check = now
                try:
                    deletions = self._fail_deleted(deletions)
                except StoreError as exc:
                    outage.failed(exc)
                if self._launcher_died():
                    return
                if self._owner() is None and not self.registry.futures:
                    return
            # Asked each time: after an outage the store listens on a new connection.
            notify_fd = self.store.notify_fd()
            if notify_fd is not None:
                # The store announces changes (PostgreSQL NOTIFY): sleep until one comes.
                ready = self._waker.wait(NOTIFY_FALLBACK_POLL, also=[notify_fd, *news])
            else:
                poll = next_poll(poll, now - last_activity, POLL_MIN, POLL_MAX, ACTIVE_WINDOW)
                ready = self._waker.wait(poll, also=news)
                if ready:
                    last_activity = time.monotonic()
            if news and news[0] in ready and not self.launcher.read_news():
                news = []  # the launcher exited: its pipe only says EOF from now on

    def _fail_deleted(self, seen: int) -> int:
        """Fail the futures whose tasks were deleted from the store (``rm``), which no event
        will ever resolve; one cheap read unless something was deleted since ``seen``."""
        now_deleted = self.store.deletions()
        if now_deleted == seen:
            return seen
        with self.registry.lock:
            ids = [i for i in self.registry.futures if i is not None]
        missing = set(ids) - {e.task_id for e in self.store.task_outcomes(ids)}
        with self.registry.lock:
            gone = [f for i, f in self.registry.futures.items() if i in missing]
        for fut in gone:
            _fail_all([fut], TaskFailed(f"task {fut._task_id} was deleted from the store",
                                        task_id=fut._task_id))
        return now_deleted

    def drain(self) -> int:
        """Read and apply every new event; returns how many were applied."""
        applied = 0
        while True:
            before = self.cursor
            events, self.cursor = self.store.read_events(self.cursor, EVENT_BATCH)
            if self.cursor == before:
                return applied
            with self.registry.lock:
                matched = [(self.registry.futures.get(e.task_id), e) for e in events]
            for fut, event in matched:
                if fut is not None:
                    apply_event(fut, event.state, event.result, event.error,
                                self._on_init_error)
                    applied += 1
            if self.cursor - before < EVENT_BATCH:
                return applied  # ids are increasing: fewer rows than a batch, so none left

    def _initializer_failed(self, err: WorkerInitError) -> None:
        """A task failed because the initializer raised in a worker.  If that worker is
        this executor's own launcher's, the executor is broken, as ProcessPoolExecutor is."""
        if getattr(err, "launcher_id", None) != self.launcher.cfg.launcher_id:
            return  # another executor's launcher ran the task: not this executor's initializer
        owner = self._owner()
        if owner is not None:
            owner._initializer_failed(err)
        else:
            _fail_all(self.registry.pending(), err)

    def _launcher_died(self) -> bool:
        proc = self.launcher
        if proc is None or proc.alive():
            return False
        owner = self._owner()
        if owner is not None and getattr(owner, "_stopping_launcher", False):
            return False
        code = proc.returncode()
        err = LauncherBroken(
            f"the launcher started by this executor exited with code {code} (log: "
            f"{proc.log_file}); its tasks were requeued in the store and will run under another "
            "launcher"
        )
        log.error("%s", err)
        # Its tasks go back to the queue now, not after its lease: this executor saw it die
        # (its workers die with it: they have a parent-death signal).
        try:
            self.store.stop_launcher(proc.cfg.launcher_id,
                                     f"launcher {proc.cfg.launcher_id} exited (code {code})")
        except StoreError as exc:
            log.warning("cannot requeue the tasks of the dead launcher now (its lease will): "
                        "%s", exc)
        if owner is not None:
            owner._mark_broken(err)
        _fail_all(self.registry.pending(), err)
        return True


def _fail_all(futures: Iterable[Future], err: BaseException) -> None:
    for fut in futures:
        try:
            fut.set_exception(err)
        except InvalidStateError:
            pass


class _Outage:
    """Logs a store outage once, then at most every OUTAGE_LOG_EVERY seconds, and its end.

    During an outage a poller fails every few milliseconds; a warning each time filled logs
    (20 a second from the watcher alone)."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.since: float | None = None
        self.last_log = 0.0
        self.failures = 0
        #: Epoch time the store was reached again after the last outage (0: none yet).
        self.reachable_since = 0.0

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        self.failures += 1
        if self.since is None:
            self.since = now
        elif now - self.last_log < OUTAGE_LOG_EVERY:
            return
        self.last_log = now
        log.warning("%s cannot reach the store (%d failure(s) in %.0f s, retrying): %s",
                    self.who, self.failures, now - self.since, exc)

    def over(self) -> None:
        if self.since is not None:
            self.reachable_since = time.time()
            log.warning("%s reaches the store again after %.1f s", self.who,
                        time.monotonic() - self.since)
            self.since, self.failures = None, 0


def apply_event(fut: BalsamFuture, state: TaskState, result: bytes | None,
                error: bytes | None, on_init_error: Any = None) -> None:
    """Move ``fut`` to match its task's new state; races with the user are ignored.

    ``on_init_error(exc)`` is called with a WorkerInitError before the future gets it, so that
    once the future raises it, the executor is broken already."""
    try:
        if state is TaskState.RUNNING:
            if fut._state == PENDING:
                fut.set_running_or_notify_cancel()
        elif state is TaskState.JOB_FINISHED:
            try:
                value = load_result(result)
            except Exception as exc:
                err = PayloadError(f"the result of task {fut.task_id} cannot be unpickled here: "
                                   f"{type(exc).__name__}: {exc}")
                err.__cause__ = exc
                fut.set_exception(err)
            else:
                fut.set_result(value)
        elif state is TaskState.CANCELLED:
            if not _mark_cancelled(fut) and not fut.done():
                fut.set_exception(TaskFailed("the task was cancelled", task_id=fut.task_id))
        elif state in (TaskState.FAILED, TaskState.KILLED):
            if error is not None:
                exc = load_exception(error, fut.task_id)
                if on_init_error is not None and isinstance(exc, WorkerInitError):
                    on_init_error(exc)
            elif state is TaskState.KILLED:
                exc = TaskKilled(f"task {fut.task_id} was killed", task_id=fut.task_id)
            else:
                exc = TaskFailed(f"task {fut.task_id} failed", task_id=fut.task_id)
            fut.set_exception(exc)
    except (InvalidStateError, RuntimeError):
        # The user cancelled it, or an earlier event already resolved it: act, then ignore
        # the race, as CPython's _terminate_broken does.
        pass
