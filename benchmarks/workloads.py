"""Task functions for ``benchmarks/executors.py``.

They live in their own small module, imported as the top-level module ``workloads``, so that every
executor ships them to its workers *by reference* (``workloads.noop``) rather than by value. The
harness puts this directory on ``sys.path`` and on ``PYTHONPATH`` before it starts any executor, so
worker processes (forked, spawned or launched by a separate launcher) can import it.

Keep this module free of imports beyond the standard library: worker start-up time counts.
"""

from __future__ import annotations

import time


def noop(x=None):
    """Do nothing; return the argument so the harness can check results came back in order."""
    return x


def sleep_task(seconds):
    """Sleep ``seconds`` and return it."""
    time.sleep(seconds)
    return seconds


def run_command(argv):
    """Run ``argv`` with ``subprocess.run`` and return its exit code (the shell-task workload
    for executors without shell tasks of their own)."""
    import subprocess  # here, not at the top: only this workload pays for the import

    return subprocess.run(argv).returncode
