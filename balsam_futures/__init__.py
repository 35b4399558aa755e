"""balsam_futures: a concurrent.futures executor whose tasks live in a database and run under
launchers on supercomputers or on this machine."""

from .errors import (
    BalsamFuturesError,
    LauncherBroken,
    PayloadError,
    PayloadTooLarge,
    RemoteError,
    SchemaMismatch,
    SiteError,
    StoreError,
    StoreUnavailable,
    TaskCancelled,
    TaskFailed,
    TaskKilled,
    TaskTimeout,
    WorkerCrashed,
    WorkerInitError,
)
from .executor import BalsamExecutor
from .futures import BalsamFuture
from .tasks import Resources, TaskContext, TaskOptions, TaskState, current_task

__all__ = [
    "BalsamExecutor",
    "BalsamFuture",
    "BalsamFuturesError",
    "LauncherBroken",
    "PayloadError",
    "PayloadTooLarge",
    "RemoteError",
    "Resources",
    "SchemaMismatch",
    "SiteError",
    "StoreError",
    "StoreUnavailable",
    "TaskCancelled",
    "TaskContext",
    "TaskFailed",
    "TaskKilled",
    "TaskOptions",
    "TaskState",
    "TaskTimeout",
    "WorkerCrashed",
    "WorkerInitError",
    "current_task",
]
