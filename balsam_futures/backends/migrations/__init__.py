"""Ordered schema steps.  Steps are only ever appended; the schema version is their count.

Each step is a function of a SQLAlchemy connection inside a transaction.  A database records
the version it was brought to in ``bf_meta``; opening one of a newer version is refused.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Connection

from . import m0001_initial

STEPS: list[tuple[str, Callable[[Connection], None]]] = [
    ("0001_initial", m0001_initial.apply),
]

SCHEMA_VERSION = len(STEPS)
