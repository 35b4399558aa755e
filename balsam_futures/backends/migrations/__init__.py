"""Ordered schema steps.  Steps are only ever appended; the schema version is their count.

Each step is a function of a SQLAlchemy connection inside a transaction.  A database records
the version it was brought to in ``bf_meta``; opening one of a newer version is refused, one of
an older version asks for ``balsam-futures db upgrade`` (``SqlStore.upgrade``).  A new database
is created from the current ``schema.metadata`` at once and stamped with the latest version.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Connection

from . import (
    m0001_initial,
    m0002_runs_and_batch_jobs,
    m0003_claimed_and_leases,
    m0004_run_time_estimates,
    m0005_cache_and_staging,
    m0006_widest_first,
)

STEPS: list[tuple[str, Callable[[Connection], None]]] = [
    ("0001_initial", m0001_initial.apply),
    ("0002_runs_and_batch_jobs", m0002_runs_and_batch_jobs.apply),
    ("0003_claimed_and_leases", m0003_claimed_and_leases.apply),
    ("0004_run_time_estimates", m0004_run_time_estimates.apply),
    ("0005_cache_and_staging", m0005_cache_and_staging.apply),
    ("0006_widest_first", m0006_widest_first.apply),
]

SCHEMA_VERSION = len(STEPS)
"""Version 4: run-time estimates per kind of task (bf_kinds), each task's estimate label and
expected run time (bf_tasks.label, expected_s), the index of claimable tasks in claim order
(longest expected first within a priority), and bf_meta 'estimated_through'.  Version 5:
memoization and data staging.  Version 6: the claim order puts the widest runs first within a
priority (``ix_bf_tasks_order`` rebuilt)."""
