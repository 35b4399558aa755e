"""balsam_futures: a concurrent.futures executor whose tasks live in a database and run under
launchers on supercomputers or on this machine."""

from .apps import ShellApp, ShellContext, ShellResult
from .errors import (
    BalsamFuturesError,
    DependencyError,
    LauncherBroken,
    MpiLaunchError,
    PayloadError,
    PayloadTooLarge,
    RemoteError,
    SchemaMismatch,
    ShellCommandNotFound,
    ShellInputNotFound,
    ShellTaskError,
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
    "DependencyError",
    "LauncherBroken",
    "MpiLaunchError",
    "PayloadError",
    "PayloadTooLarge",
    "RemoteError",
    "Resources",
    "SchemaMismatch",
    "ShellApp",
    "ShellCommandNotFound",
    "ShellContext",
    "ShellInputNotFound",
    "ShellResult",
    "ShellTaskError",
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
