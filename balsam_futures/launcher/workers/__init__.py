"""Warm Python workers: the pool the launcher (or an agent) runs, and the worker process.

    pool.py      launcher side: WorkerPool starts, feeds, watches and replaces workers
    process.py   worker side: ``main`` runs tasks one at a time; ``run_child`` runs a task's
                 command so that it dies with its worker and its launcher
"""

from .pool import WorkerPool, outcome_for, pack_initializer
from .process import dies_with_this_process, run_child

__all__ = ["WorkerPool", "dies_with_this_process", "outcome_for", "pack_initializer",
           "run_child"]
