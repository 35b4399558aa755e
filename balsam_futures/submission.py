"""Group commit of submitted tasks: many ``submit()`` calls, one transaction.

    submit() ── pickle, validate (errors raise here) ──> queue ──┐
    submit() ──> queue ─────────────────────────────────────────┤  Submitter thread:
    map()    ──> queue, then flush() ───────────────────────────┤    take everything queued,
                                                                 └─>  store.create_tasks(batch),
                                                                      register the futures
A single write per task costs ~100 us of SQLite commit; a loop of submits then spends most
of its time committing.  Here each submit only queues its task, and whatever queued up while
one transaction ran goes into the next: a burst of submits costs a few bulk inserts, and a
lone submit is written at once (no added delay).  ``flush()`` waits until everything queued
so far is in the store; ``map``, ``shutdown`` and ``BalsamFuture.task_id`` call it.

If the store is unreachable, queued tasks stay queued and are retried with backoff, and new
submissions raise the error, so the caller sees it and nothing queued is lost.  If the store
*rejects* a batch (``StoreRejected``: a value the database refuses, a parent that was deleted),
retrying cannot help: the batch is split in halves until the offending tasks are alone, those
fail with the database's words on their futures, and every other task is stored.  If the
thread itself cannot go on, the executor is broken: queued and waiting futures raise
``ExecutorBroken`` and later submits are refused; the thread never dies silently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import InvalidStateError
from typing import Any

from .errors import ExecutorBroken, StoreError, StoreRejected, StoreUnavailable
from .futures import BalsamFuture, Registry, _mark_cancelled
from .tasks import TaskSpec

log = logging.getLogger(__name__)

#: Tasks per transaction.  Bounds the time the SQLite write lock is held (a launcher waits
#: that long to record results) and the memory of one insert.
MAX_BATCH = 10_000
#: Queued tasks beyond which submit() blocks until the writer catches up.
MAX_QUEUED = 200_000
#: Backoff while the store is unavailable: first and longest wait between retries.
RETRY_MIN, RETRY_MAX = 0.05, 5.0


class Submitter(threading.Thread):
    def __init__(self, store: Any, registry: Registry, on_written: Any = None,
                 on_broken: Any = None) -> None:
        super().__init__(name="balsam-futures-submitter", daemon=True)
        self.store = store
        self.registry = registry
        self.on_written = on_written
        self.on_broken = on_broken  # called with the error if this thread cannot go on
        self.broken: ExecutorBroken | None = None
        self.cond = threading.Condition()
        self.queue: list[tuple[TaskSpec, BalsamFuture]] = []
        self.queued_seq = 0  # number of tasks ever queued
        self.written_seq = 0  # number of tasks written (or failed for good)
        self.error: StoreError | None = None
        self._closing = False

    # -- caller side -------------------------------------------------------------------------

    def put(self, specs: Sequence[TaskSpec]) -> list[BalsamFuture]:
        """Queue tasks; returns their futures (task ids are set once written)."""
        with self.cond:
            if self.broken is not None:
                raise self.broken
            if self.error is not None:
                raise StoreUnavailable(f"{self.error} (tasks already queued are kept and "
                                       "retried; this one was not accepted)") from self.error
            while len(self.queue) >= MAX_QUEUED:
                self.cond.wait()
            futs = []
            for spec in specs:
                self.queued_seq += 1
                fut = BalsamFuture(None, self, self.queued_seq)
                self.queue.append((spec, fut))
                futs.append(fut)
            self.cond.notify_all()
        return futs

    def flush(self, upto: int | None = None, timeout: float | None = None) -> bool:
        """Wait until the first ``upto`` queued tasks (default: all) are in the store."""
        with self.cond:
            target = self.queued_seq if upto is None else upto
            return self.cond.wait_for(lambda: self.written_seq >= target, timeout)

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        with self.cond:
            self._closing = True
            self.cond.notify_all()
        if self.is_alive() and self is not threading.current_thread():
            self.join()

    def cancel(self, fut: BalsamFuture) -> bool:
        """Cancel a task: withdrawn from the queue if not yet written, else in the store."""
        with self.registry.lock:
            # The writer holds this lock from choosing a batch to registering it, so a task
            # without an id here is not being written and will be skipped.
            if fut._task_id is None:
                fut._withdrawn = True
                unwritten = True
            else:
                unwritten = False
        if unwritten or self.store.cancel([fut._task_id]):
            return _mark_cancelled(fut)
        return False

    def kill(self, fut: BalsamFuture) -> bool:
        """Kill a task: cancel it if it has not started, else ask its launcher to stop it."""
        if fut.done():
            return fut.cancelled()
        if self.cancel(fut):
            return True
        return bool(self.store.kill([fut._task_id]))

    # -- writer thread -----------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a dead writer must break the executor
            self._break(exc)

    def _loop(self) -> None:
        delay = RETRY_MIN
        while True:
            with self.cond:
                while not self.queue and not self._closing:
                    self.cond.wait()
                if not self.queue and self._closing:
                    return
                batch = self.queue[:MAX_BATCH]
            try:
                self._write_isolating(batch)
            except StoreUnavailable as exc:
                with self.cond:
                    self.error = exc
                log.warning("cannot store %d queued task(s), retrying in %.2f s: %s",
                            len(batch), delay, exc)
                time.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            delay = RETRY_MIN
            with self.cond:
                self.error = None
                # Only this thread removes from the queue, and put() only appends.
                del self.queue[:len(batch)]
                self.written_seq = batch[-1][1]._seq
                self.cond.notify_all()
            # Not kept while this thread waits for the next submission: the batch holds its
            # futures, and a future held here would keep its result alive after the caller
            # dropped it.
            del batch
            if self.on_written is not None:
                self.on_written()

    def _write_isolating(self, batch: list[tuple[TaskSpec, BalsamFuture]]) -> None:
        """Write ``batch``; if the store rejects it, split it until the rejected tasks are
        alone, fail those and write the rest (log2 of the batch extra transactions)."""
        try:
            self._write(batch)
        except StoreRejected as exc:
            if len(batch) > 1:
                half = len(batch) // 2
                self._write_isolating(batch[:half])
                self._write_isolating(batch[half:])
                return
            spec, fut = batch[0]
            log.warning("task %r was refused by the store: %s", spec.name, exc)
            _fail(fut, exc)
        except StoreUnavailable:
            raise
        except StoreError as exc:
            # Neither rejected nor an outage (e.g. a schema mismatch): these tasks can never
            # be written; fail their futures and go on with the next batch.
            for _spec, fut in batch:
                _fail(fut, exc)

    def _break(self, exc: BaseException) -> None:
        """This thread cannot go on: fail everything waiting and refuse new submissions."""
        err = ExecutorBroken(f"the executor's writer thread failed ({type(exc).__name__}: "
                             f"{exc}); tasks already stored stay in the store")
        err.__cause__ = exc
        log.error("%s", err, exc_info=exc)
        with self.cond:
            self.broken = err
            queued, self.queue = self.queue, []
            self.written_seq = self.queued_seq  # nobody waits on flush() forever
            self.cond.notify_all()
        for _spec, fut in queued:
            _fail(fut, err)
        if self.on_broken is not None:
            self.on_broken(err)

    def _write(self, batch: list[tuple[TaskSpec, BalsamFuture]]) -> None:
        # Hold the registry lock while storing: the watcher may read a task's events as soon
        # as it commits, and must find its future registered.
        with self.registry.lock:
            # Skipped: withdrawn or cancelled meanwhile, or written by an earlier try of a
            # batch that was split (an outage in the middle of splitting retries it whole).
            live = [(s, f) for s, f in batch
                    if not f._withdrawn and not f.done() and f._task_id is None]
            if not live:
                return
            ids = self.store.create_tasks([s for s, _f in live])
            for (_s, fut), task_id in zip(live, ids):
                fut._task_id = task_id
            self.registry.add([f for _s, f in live])


def _fail(fut: BalsamFuture, exc: BaseException) -> None:
    try:
        fut.set_exception(exc)
    except InvalidStateError:
        pass  # cancelled meanwhile: act first, then ignore the race
