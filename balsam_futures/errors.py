"""Every balsam_futures exception, under one base class.

Where the standard ``concurrent.futures`` interface promises a type, ours subclass it: losing
the launcher or the store is a ``BrokenExecutor``; a task's own exception is re-raised with its
original type (see :mod:`balsam_futures.serialization`), so only failures that happen *around*
a task use the classes below.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class StoreRejected(StoreError, ValueError):
    """The database refused a statement (a value out of range, a missing row it refers to):
    retrying it cannot help, so only the tasks it carried fail, with the database's words."""


class LauncherFenced(StoreError):
    """This launcher's lease expired (it was paused or cut off longer than its lease): the
    store no longer counts it as alive, so it claims nothing more, stops its runs and exits."""


class SchemaMismatch(StoreError):
    """The database belongs to another version of balsam_futures or to another program."""


class PostgresServerError(BalsamFuturesError):
    """The site's PostgreSQL server could not be created, started or stopped."""


class PayloadError(BalsamFuturesError, TypeError):
    """A callable, its arguments or its result could not be serialized."""


class PayloadTooLarge(PayloadError, ValueError):
    """A serialized payload exceeds BALSAM_FUTURES_MAX_PAYLOAD_BYTES."""


class SiteError(BalsamFuturesError, OSError):
    """The site directory cannot be created or used."""


class LauncherBroken(BalsamFuturesError, BrokenExecutor):
    """The launcher started by this executor died, so its pending futures cannot complete."""


class AgentsFailed(BalsamFuturesError, RuntimeError):
    """A launcher's per-node agents could not be started or connected (their MPI launch
    failed, exited, or did not report in time); the launcher then runs without them.
    Internal: the launcher logs it and goes on, so no caller ever sees it raised."""


class ExecutorBroken(BalsamFuturesError, BrokenExecutor):
    """A thread of the executor (the writer or the watcher) hit an error it cannot recover
    from; the executor takes no more tasks and its pending futures raise this error.  Tasks
    already stored stay in the store: a new executor can ``attach`` to them."""


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


class MpiLaunchError(TaskFailed):
    """An MPI task's launcher (``mpiexec``, ``srun``...) failed before any rank reported:
    the launcher is missing, or it exited non-zero with no rank raising.  ``output_tail`` holds
    the last lines it printed."""

    def __init__(self, message: str, *, task_id: int | None = None, returncode: int | None = None,
                 output_tail: str = "") -> None:
        super().__init__(message, task_id=task_id)
        self.returncode = returncode
        self.output_tail = output_tail

    def __reduce__(self):
        return (_rebuild_mpi_launch_error, (str(self), self.task_id, self.returncode,
                                            self.output_tail))


def _rebuild_mpi_launch_error(message, task_id, returncode, output_tail):
    return MpiLaunchError(message, task_id=task_id, returncode=returncode,
                          output_tail=output_tail)


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


class DependencyError(TaskFailed):
    """A task did not run because a task it depends on failed, was killed or cancelled."""

    def __init__(self, message: str, *, task_id: int | None = None,
                 parent_id: int | None = None) -> None:
        super().__init__(message, task_id=task_id)
        self.parent_id = parent_id

    def __reduce__(self):
        return (_rebuild_dependency_error, (self.args[0], self.task_id, self.parent_id))


def _rebuild_dependency_error(message, task_id, parent_id):
    return DependencyError(message, task_id=task_id, parent_id=parent_id)


def _rebuild_exception(cls: type, args: tuple) -> BaseException:
    """Unpickle an exception whose ``__init__`` takes other arguments than its ``args``.

    Pickle then restores the attributes from the state that ``__reduce__`` returned.
    """
    exc = cls.__new__(cls, *args)
    BaseException.__init__(exc, *args)
    return exc


class ShellTaskError(TaskFailed):
    """A shell task's command exited with a non-zero code (or was stopped by a signal).

    It carries what :class:`subprocess.CalledProcessError` does: ``returncode`` and ``cmd``, and
    also ``workdir`` (the task's working directory) and ``output_tail`` (the last lines of its
    ``job.out``, which holds the command's stdout and stderr).
    """

    def __init__(self, returncode: int, cmd: str, *, workdir: str | None = None,
                 output_tail: str = "", task_id: int | None = None,
                 message: str | None = None) -> None:
        self.returncode = returncode
        self.cmd = cmd
        self.workdir = workdir
        self.output_tail = output_tail
        super().__init__(message or self._describe(task_id), task_id=task_id)

    def _describe(self, task_id: int | None) -> str:
        if self.returncode < 0:
            import signal

            try:
                how = f"was stopped by signal {signal.Signals(-self.returncode).name}"
            except ValueError:
                how = f"was stopped by signal {-self.returncode}"
        else:
            how = f"exited with code {self.returncode}"
        text = f"shell task {task_id} {how}: {self.cmd}"
        if self.workdir:
            text += f"\n(working directory {self.workdir})"
        if self.output_tail:
            text += f"\nlast lines of job.out:\n{self.output_tail}"
        return text

    def __reduce__(self):
        # The instance's __dict__ (returncode, cmd, ..., task_id) is restored by pickle.
        return (_rebuild_exception, (type(self), self.args), dict(self.__dict__))


class ShellCommandNotFound(ShellTaskError, FileNotFoundError):
    """A shell task's program is not on the PATH (or its path is not an executable file).

    ``executable`` names it; ``returncode`` is 127, as a shell reports it.
    """

    def __init__(self, executable: str, cmd: str, *, workdir: str | None = None,
                 output_tail: str = "", task_id: int | None = None,
                 path: str | None = None) -> None:
        self.executable = executable
        if "/" in executable:
            where = "does not exist or is not an executable file"
        else:
            where = "was not found on PATH" + (f" ({path})" if path else "")
        super().__init__(127, cmd, workdir=workdir, output_tail=output_tail, task_id=task_id,
                         message=f"shell task {task_id}: the command {executable!r} {where}; "
                                 f"command line: {cmd}")


class ShellInputNotFound(TaskFailed, FileNotFoundError):
    """An input file of a shell task (``ShellApp(inputs=...)``) does not exist.

    ``filename`` is the path or glob pattern that matched nothing.
    """

    def __init__(self, pattern: str, *, task_id: int | None = None) -> None:
        super().__init__(f"input {pattern!r} of shell task {task_id} was not found "
                         "(no such file, or no file matches the pattern)", task_id=task_id)
        self.filename = pattern

    def __str__(self) -> str:
        # OSError's own text would be "[Errno None] None: '<filename>'".
        return str(self.args[0])

    def __reduce__(self):
        # filename is an OSError slot, not in __dict__: hand it over with the state.
        return (_rebuild_exception, (type(self), self.args),
                {**self.__dict__, "filename": self.filename})


# -- batch schedulers ------------------------------------------------------------------------


class SchedulerError(BalsamFuturesError):
    """A batch scheduler command failed or could not be run."""

    def __init__(self, message: str, *, argv: Sequence[str] = (), returncode: int | None = None,
                 stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class SchedulerCommandNotFound(SchedulerError, FileNotFoundError):
    """The scheduler's command (sbatch, qsub, bsub...) is not on this machine's PATH."""

    def __str__(self) -> str:
        return str(self.args[0])


class SchedulerCommandFailed(SchedulerError):
    """A scheduler command exited non-zero or ran past its time limit."""


class SchedulerSubmitError(SchedulerCommandFailed):
    """The scheduler rejected a batch job; the message carries its own words."""


class SitePolicyError(BalsamFuturesError, ValueError):
    """A batch job asks for what the site's settings do not allow, or the settings file is
    invalid."""


class BatchJobError(BalsamFuturesError, LookupError):
    """No such batch job, or the job cannot do what was asked in its current state."""


class TemplateError(BalsamFuturesError, ValueError):
    """A batch-script template could not be rendered (syntax error, undefined variable)."""


class StagingError(BalsamFuturesError):
    """A task's files could not be staged: a stage_out pattern matched no file, a transfer
    failed, or a transport is missing its program, package or setting; the message names the
    files and carries the transfer's own words."""


class CacheKeyError(BalsamFuturesError, ValueError):
    """``cache=True`` was asked for, but the callable, an argument or an input file of the task
    cannot be hashed stably (a generator, a lock, an open file, an object that cannot be
    pickled, a missing input...); the message names which one."""
