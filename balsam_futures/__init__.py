"""balsam_futures: a concurrent.futures executor whose tasks live in a database and run under
launchers on supercomputers or on this machine."""

from typing import TYPE_CHECKING, Any

from .apps import ShellApp, ShellContext, ShellResult
from .errors import (
    BalsamFuturesError,
    CacheKeyError,
    DependencyError,
    ExecutorBroken,
    LauncherBroken,
    LauncherFenced,
    MpiLaunchError,
    PayloadError,
    PayloadTooLarge,
    RemoteError,
    SchemaMismatch,
    ShellCommandNotFound,
    ShellInputNotFound,
    ShellTaskError,
    SiteError,
    StagingError,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    TaskCancelled,
    TaskFailed,
    TaskKilled,
    TaskTimeout,
    WorkerCrashed,
    WorkerInitError,
)
from .tasks import Resources, TaskContext, TaskOptions, TaskState, current_task

if TYPE_CHECKING:
    from .executor import BalsamExecutor
    from .futures import BalsamFuture


def __getattr__(name: str) -> Any:
    # The executor (and with it SQLAlchemy and the store) is imported on first use: a
    # worker imports this package to run tasks, and never needs it (0.3 s less per worker
    # start).
    if name == "BalsamExecutor":
        from .executor import BalsamExecutor

        return BalsamExecutor
    if name == "BalsamFuture":
        from .futures import BalsamFuture

        return BalsamFuture
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "BalsamExecutor",
    "BalsamFuture",
    "BalsamFuturesError",
    "CacheKeyError",
    "DependencyError",
    "ExecutorBroken",
    "LauncherBroken",
    "LauncherFenced",
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
    "StagingError",
    "StoreError",
    "StoreRejected",
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
