"""Batch schedulers: one small class per batch system, chosen by name.

The module's file name is the registry key (``slurm.py`` holds ``SlurmScheduler``); nothing
is imported until a scheduler is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from .base import (
    BatchJobError,
    BatchJobState,
    Scheduler,
    SchedulerCommandFailed,
    SchedulerCommandNotFound,
    SchedulerError,
    SchedulerStatus,
    SchedulerSubmitError,
    SitePolicyError,
    TemplateError,
)

__all__ = [
    "SCHEDULERS", "BatchJobError", "BatchJobState", "Scheduler", "SchedulerCommandFailed",
    "SchedulerCommandNotFound", "SchedulerError", "SchedulerStatus", "SchedulerSubmitError",
    "SitePolicyError", "TemplateError", "get_scheduler",
]

#: Registry key -> class name.
SCHEDULERS: dict[str, str] = {
    "local": "LocalScheduler",
    "slurm": "SlurmScheduler",
    "pbs": "PBSScheduler",
    "cobalt": "CobaltScheduler",
    "lsf": "LSFScheduler",
    "flux": "FluxScheduler",
}


def get_scheduler(name: str, env: Mapping[str, str] | None = None) -> Scheduler:
    """The scheduler called ``name`` (local, slurm, pbs, cobalt, lsf, flux)."""
    if name not in SCHEDULERS:
        raise SitePolicyError(f"unknown scheduler {name!r}; choose one of "
                              f"{', '.join(SCHEDULERS)}")
    module = importlib.import_module(f".{name}", __name__)
    return getattr(module, SCHEDULERS[name])(env=env)
