"""Warm Python workers: the pool the launcher (or an agent) runs, and the worker process.

    pool.py      launcher side: WorkerPool starts, feeds, watches and replaces workers
    process.py   worker side: ``main`` runs tasks one at a time; ``run_child`` runs a task's
                 command so that it dies with its worker and its launcher
"""

from typing import TYPE_CHECKING, Any

from .process import dies_with_this_process, run_child

if TYPE_CHECKING:
    from .pool import WorkerPool, outcome_for, pack_initializer


def __getattr__(name: str) -> Any:
    # The pool side is imported on first use: a worker process imports this package for
    # process.py and needs none of the launcher's (or the store's) modules.
    if name in ("WorkerPool", "outcome_for", "pack_initializer"):
        from . import pool

        return getattr(pool, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["WorkerPool", "dies_with_this_process", "outcome_for", "pack_initializer",
           "run_child"]
