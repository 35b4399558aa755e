"""Ordered schema steps.  Steps are only ever appended; the schema version is their count.

Each step is a function of a SQLAlchemy connection inside a transaction.  A database records
the version it was brought to in ``bf_meta``; opening one of a newer version is refused, one of
an older version asks for ``balsam-futures db upgrade`` (``SqlStore.upgrade``).  A new database
is created from the current ``schema.metadata`` at once and stamped with the latest version.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Connection

from . import m0001_initial, m0002_runs_and_batch_jobs, m0003_claimed_and_leases

STEPS: list[tuple[str, Callable[[Connection], None]]] = [
    ("0001_initial", m0001_initial.apply),
    ("0002_runs_and_batch_jobs", m0002_runs_and_batch_jobs.apply),
    ("0003_claimed_and_leases", m0003_claimed_and_leases.apply),
]

SCHEMA_VERSION = len(STEPS)
