"""How executors stop early: at interpreter exit, and on Ctrl-C (executor.py's machinery).

    interpreter exit ──python_exit──> every live executor: shutdown(), waiting only for the
                                      tasks of its own launcher; after an uncaught Ctrl-C,
                                      interrupt() instead
    Ctrl-C ──interrupt(ex)──> store what was submitted (briefly), stop the executor's own
                              launcher (its runs killed, its tasks requeued), stop the threads

Either way the unfinished tasks stay in the store, for a later ``attach()``.
"""

from __future__ import annotations

import logging
import os
import sys
import weakref
from typing import TYPE_CHECKING

from .errors import StoreError

if TYPE_CHECKING:
    from .executor import BalsamExecutor

# The executor's own logger: these are its messages.
log = logging.getLogger("balsam_futures.executor")

#: On Ctrl-C: how long to wait for queued submissions to be stored, and for this executor's
#: own launcher to stop its runs and requeue its tasks (it is killed after that, and its
#: lease requeues them).  Both take milliseconds normally.
INTERRUPT_FLUSH_TIMEOUT = 2.0
INTERRUPT_STOP_TIMEOUT = 3.0

live_executors: weakref.WeakSet[BalsamExecutor] = weakref.WeakSet()
#: Set once the interpreter exits: executors take no new tasks from then on.
global_shutdown = False


def _forget_in_child() -> None:
    """A process forked from an executor's (a ProcessPoolExecutor's or multiprocessing's
    worker) does not own its executors: their threads did not come with the fork, and at
    the child's exit python_exit shut them down there, closing its copy of the master's
    store connection (a SQLite close that could hang the child, and with it its pool)."""
    live_executors.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def python_exit() -> None:
    """The interpreter's exit hook (registered by executor.py)."""
    # As ProcessPoolExecutor does at interpreter exit: wait for submitted work to finish.
    global global_shutdown
    global_shutdown = True
    # An executor without its own launcher does not wait: its tasks are in the store and run
    # under launchers elsewhere; a later process can re-attach to them.
    # The program is ending on an uncaught Ctrl-C (the interpreter sets sys.last_value before
    # it runs exit hooks): stop at once, leaving unfinished tasks in the store, instead of
    # waiting for all of them.
    interrupted = isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)
    for ex in list(live_executors):
        if interrupted:
            ex._interrupt()
        if ex._interrupted:
            continue  # a Ctrl-C already stopped it: its unfinished tasks are in the store
        try:
            ex.shutdown(wait=ex._launcher is not None)
        except KeyboardInterrupt:
            pass  # shutdown() stopped the executor; exit now


def interrupt(ex: BalsamExecutor) -> None:
    """Stop ``ex`` at once on Ctrl-C: store what was submitted (briefly), stop its own
    launcher (its runs are killed and its tasks requeued), stop the threads.  The unfinished
    tasks stay in the store (READY or RESTART_READY) for a later attach()."""
    with ex._shutdown_lock:
        ex._shutdown = True
        if ex._interrupted:
            return
        ex._interrupted = True
    if not ex._submitter.flush(timeout=INTERRUPT_FLUSH_TIMEOUT):
        log.error("interrupted: %d submitted task(s) could not be stored in time and are "
                  "lost", len(ex._submitter.queue))
    ex._stopping_launcher = True
    if ex._launcher is not None:
        ex._launcher.stop(timeout=INTERRUPT_STOP_TIMEOUT)
        try:  # whatever it still held, if it had to be killed
            ex._store.stop_launcher(ex._launcher.cfg.launcher_id,
                                    "the executor that started it was interrupted")
        except StoreError as exc:
            log.warning("cannot requeue the launcher's tasks now (its lease will): %s", exc)
    ex._watcher.stop()
    n = len(ex._registry.futures)
    if n:
        log.warning("interrupted: %d unfinished task(s) stay in the store %s; attach() "
                    "to them from another executor", n, ex._store.display_url)
    with ex._shutdown_lock:
        ex._finished = True
    ex._store.close()
    live_executors.discard(ex)
