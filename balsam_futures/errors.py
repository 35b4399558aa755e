"""Every balsam_futures exception, under one base class.

Where the standard ``concurrent.futures`` interface promises a type, ours subclass it: losing
the launcher or the store is a ``BrokenExecutor``; a task's own exception is re-raised with its
original type (see :mod:`balsam_futures.serialization`), so only failures that happen *around*
a task use the classes below.
"""

from __future__ import annotations

from concurrent.futures import BrokenExecutor, CancelledError


class BalsamFuturesError(Exception):
    """Base class of every error raised by balsam_futures."""

    def __init__(self, *args: object) -> None:
        # The docstring is the default message, as procrastinate's exceptions do.
        super().__init__(*(args or ((self.__doc__ or "").strip(),)))


class StoreError(BalsamFuturesError):
    """The task store could not be read or written."""


class StoreUnavailable(StoreError, BrokenExecutor):
    """The task store cannot be reached (the database went away or cannot be opened)."""


class SchemaMismatch(StoreError):
    """The database belongs to another version of balsam_futures or to another program."""


class PayloadError(BalsamFuturesError, TypeError):
    """A callable, its arguments or its result could not be serialized."""


class PayloadTooLarge(PayloadError, ValueError):
    """A serialized payload exceeds BALSAM_FUTURES_MAX_PAYLOAD_BYTES."""


class SiteError(BalsamFuturesError, OSError):
    """The site directory cannot be created or used."""


class LauncherBroken(BalsamFuturesError, BrokenExecutor):
    """The launcher started by this executor died, so its pending futures cannot complete."""


class TaskFailed(BalsamFuturesError):
    """A task failed for a reason other than an exception raised by its own code."""

    def __init__(self, message: str, *, task_id: int | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


class WorkerCrashed(TaskFailed):
    """The worker process running the task died (a crash, os._exit or a signal)."""


class TaskTimeout(TaskFailed, TimeoutError):
    """The task ran past its wall-time limit and was stopped."""


class TaskKilled(TaskFailed):
    """The task was killed at run time on request."""


class TaskCancelled(CancelledError, BalsamFuturesError):
    """The task was cancelled in the store before any launcher ran it."""


class RemoteError(TaskFailed):
    """A task raised an exception that cannot be rebuilt in this process.

    ``type_name`` is the qualified name of the original exception type, and the message and
    remote traceback text are kept in ``remote_traceback``.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str, *, task_id=None):
        super().__init__(f"{type_name}: {message}", task_id=task_id)
        self.type_name = type_name
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return f"{self.args[0]}\n\nRemote traceback:\n{self.remote_traceback}"


class RemoteTraceback(BalsamFuturesError):
    """The formatted traceback of a task's exception, attached as its ``__cause__``.

    Like CPython's ``concurrent.futures.process._RemoteTraceback``: the header says which task
    raised, on which host and launcher.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class WorkerInitError(TaskFailed, BrokenExecutor):
    """The executor's ``initializer`` raised in the worker, so the worker cannot run tasks.

    Like ``BrokenProcessPool`` from ProcessPoolExecutor, this is a ``BrokenExecutor``.
    """
