"""Shell applications: command templates with safe quoting, environment, inputs and hooks.

    master: ex.submit(app, x=1)                 worker (launcher/workers/), a Python task
    -----------------------------               ---------------------------------------------
    ShellApp.bind: names, types, render once    _run_shell_task(app, params):
    TaskSpec(kind="shell",                        workdir  <site>/data/<workflow>/<name>_<id>
             payload=_run_shell_task(app, p))     inputs   copied or linked into it
              │                                   preprocess(ctx)
              └── stored, claimed, run ──>        argv     shlex.split(rendered) or /bin/sh -c
                                                  job.out  stdout + stderr, appended per run
    future.result() -> ShellResult  <───────────  postprocess(ctx, result) or ShellTaskError

A shell task is stored and run as a Python task whose callable is :func:`_run_shell_task`, so
retries, time-outs and kills (the worker's whole process group) work unchanged.

Quoting: every parameter value goes through ``shlex.quote`` before it is put in the command,
as Balsam's ``_api/app.py`` does, so a value is always one literal argument.  That holds only
where a placeholder stands outside quotes, backticks, comments and here-documents; the
template is rejected elsewhere (inside double quotes ``"$(...)"`` in a value would still run).
A value that the template itself hands to a shell as code (``eval {v}``, ``sh -c {v}``) runs
as code: that is what such a template asks for.  A template that uses the shell itself (pipes,
redirections, ``;``, ``$VAR``...) runs under ``/bin/sh -c``; any other runs without a shell.

    _shell_template.py   parsing and checking templates, quoting values, execve(2) limits
    _shell_run.py        the worker's side: working directory, inputs, argv, job.out's tail
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import os
import pickle
import re
import shlex
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path, PurePath
from typing import Any

from . import config
from . import tasks as _tasks
from ._shell_run import _argv, _place, _place_inputs, _tail, _task_workdir
from ._shell_template import (
    _POINTER,
    _TOKEN,
    MAX_ARG_STRLEN,
    PARAM_TYPES,
    _arg_max,
    _check_workdir,
    _fill,
    _format_value,
    _normalize_inputs,
    _parse_fields,
    _Part,
    _refuse_nul,
    _scan_command,
)
from .errors import ShellCommandNotFound, ShellTaskError
from .sitedir import private_dir

#: The file in the working directory that receives the command's stdout and stderr.
JOB_OUT = "job.out"
#: Lines of job.out a ShellTaskError carries.  More helps to see why a run failed; every
#: line is stored with the error in the task row and printed with the traceback.
ERROR_TAIL_LINES = 20
_NOT_FOUND = re.compile(r"([^\s:][^:\n]*): (?:command )?not found\s*$", re.MULTILINE)


@dataclass(frozen=True)
class ShellApp:
    """A command template run as a task: ``ex.submit(app, name=value, ...)``.

    ``command`` names its parameters as ``{param}`` fields (``{x:.3f}`` formats, ``{{`` is a
    brace).  Each value is quoted with ``shlex.quote``, so it is one argument whatever it
    holds.  The command runs in the task's working directory with stdout and stderr in
    ``job.out`` there; the future's result is a :class:`ShellResult`, and a non-zero exit
    raises :class:`~balsam_futures.errors.ShellTaskError`.

    Args:
        command: the template, e.g. ``"simulate --in {infile} --steps {n}"``.
        name: the tasks' name (default: the program's name).
        env: variables added to the launcher's environment for the command.
        preprocess: ``preprocess(ctx)`` runs in the worker before the command; raising fails
            the run.  ``ctx`` is a :class:`ShellContext`.
        postprocess: ``postprocess(ctx, result)`` runs after a successful command; a value
            other than None becomes the future's result, raising fails the run (and it is
            retried as ``max_retries`` allows).
        workdir: an absolute path template for the working directory, with the command's
            fields and ``{id}``, ``{name}`` (the task's; the name reduced to [A-Za-z0-9_.-]),
            not quoted; no ``..``.  Default:
            ``<site>/data/<workflow tag or "default">/<name>_<id>``.
        inputs: files copied into the working directory before each run: a list of paths
            or glob patterns (each match keeps its name), or a mapping of names in the
            working directory to a path (a pattern's matches go into that subdirectory).
            Relative paths are taken from the current directory when the app is made.
        link: symlink the inputs instead of copying them.
        parent_outputs: glob patterns matched in the working directory of each shell task
            this one depends on (``depends_on=`` or a future passed as a parameter's
            dependency); every match is copied (or linked) in before the run.
    """

    command: str
    _: KW_ONLY
    name: str | None = None
    env: Mapping[str, str] | None = field(default=None, hash=False)
    preprocess: Callable[[ShellContext], Any] | None = None
    postprocess: Callable[[ShellContext, ShellResult], Any] | None = None
    workdir: str | None = None
    inputs: Any = None
    link: bool = False
    parent_outputs: tuple[str, ...] = ()
    _parts: tuple[_Part, ...] = field(init=False, repr=False, compare=False)
    _workdir_parts: tuple[_Part, ...] = field(init=False, repr=False, compare=False)
    _needs_shell: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.command, str):
            raise TypeError(f"command must be a str, not {type(self.command).__name__}")
        if not self.command.strip():
            raise ValueError("command must be a non-empty str")
        _refuse_nul(self.command, "command")
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError(f"name must be a str or None, not {type(self.name).__name__}")
        if self.name == "":
            raise ValueError("name must be a non-empty str or None")
        env = dict(self.env or {})
        for key, value in env.items():
            if not isinstance(key, str) or not key or "=" in key or "\0" in key:
                raise ValueError(f"env: {key!r} is not a valid environment variable name")
            if not isinstance(value, str):
                raise TypeError(f"env[{key!r}] must be a str, not {type(value).__name__}")
            _refuse_nul(value, f"env[{key!r}]")
            if len(os.fsencode(f"{key}={value}")) + 1 > MAX_ARG_STRLEN:
                raise ValueError(f"env[{key!r}] is over the limit of {MAX_ARG_STRLEN:,} bytes "
                                 "that execve(2) takes for one variable (MAX_ARG_STRLEN); pass "
                                 "large data through files")
        for hook in ("preprocess", "postprocess"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                raise TypeError(f"{hook} must be a callable")
        if not isinstance(self.link, bool):
            raise TypeError("link must be a bool")
        if isinstance(self.parent_outputs, str):
            object.__setattr__(self, "parent_outputs", (self.parent_outputs,))
        for pattern in self.parent_outputs:
            if isinstance(pattern, str):
                _refuse_nul(pattern, "parent_outputs")
            if not isinstance(pattern, str) or os.path.isabs(pattern) or ".." in pattern:
                raise ValueError(f"parent_outputs: {pattern!r} must be a relative glob "
                                 "pattern such as '*.dat'")
        parts = _parse_fields(self.command, "command")
        needs_shell = _scan_command(parts)
        params = {name for _l, name, _s, _c in parts if name is not None}
        workdir_parts: tuple[_Part, ...] = ()
        if self.workdir is not None:
            if not isinstance(self.workdir, str) or not os.path.isabs(self.workdir):
                raise ValueError(f"workdir must be an absolute path template, not "
                                 f"{self.workdir!r}")
            _refuse_nul(self.workdir, "workdir")
            workdir_parts = _parse_fields(self.workdir, "workdir")
            if ".." in PurePath(self.workdir).parts:
                raise ValueError(f"workdir must not contain '..': {self.workdir!r}")
            unknown = {n for _l, n, _s, _c in workdir_parts if n is not None} \
                - params - {"id", "name"}
            if unknown:
                raise ValueError(f"workdir uses {', '.join(sorted(unknown))}, which the "
                                 "command does not; it may use the command's fields, {id} "
                                 "and {name}")
        setattr_ = object.__setattr__
        setattr_(self, "env", env)
        setattr_(self, "inputs", _normalize_inputs(self.inputs))
        setattr_(self, "_parts", parts)
        setattr_(self, "_workdir_parts", workdir_parts)
        setattr_(self, "_needs_shell", needs_shell)

    @property
    def params(self) -> frozenset[str]:
        """The names of the command's parameters."""
        return frozenset(name for _l, name, _s, _c in self._parts if name is not None)

    @property
    def needs_shell(self) -> bool:
        """Whether the command runs under ``/bin/sh -c`` (it uses shell syntax itself)."""
        return self._needs_shell

    @property
    def default_name(self) -> str:
        """The tasks' name: ``name``, else the program named by the command."""
        if self.name:
            return self.name
        first = self.command.split()[0]
        return os.path.basename(first) if "{" not in first else "shell"

    def bind(self, *args: Any, **params: Any) -> dict[str, Any]:
        """Check a submission's parameters; returns them, or raises TypeError/ValueError."""
        if args:
            raise TypeError(f"ShellApp {self.default_name!r} takes its parameters by keyword "
                            f"only, e.g. submit(app, x=1); got {len(args)} positional "
                            "argument(s)")
        expected = self.params
        missing = sorted(expected - params.keys())
        unknown = sorted(params.keys() - expected)
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing parameter(s): {', '.join(missing)}")
            if unknown:
                problems.append(f"unknown parameter(s): {', '.join(unknown)}")
            takes = ", ".join(sorted(expected)) or "no parameters"
            raise TypeError(f"{'; '.join(problems)}; the app takes: {takes}")
        for key, value in params.items():
            if not isinstance(value, PARAM_TYPES):
                raise TypeError(f"parameter {key!r} must be a str, int, float, bool or "
                                f"pathlib.Path, not {type(value).__name__}")
        # Format errors, NULs and a command execve(2) would refuse raise here, at submit.
        self._check_exec_limits(params, self.render(**params))
        if self._workdir_parts:
            _check_workdir(Path(_fill(self._workdir_parts,
                                      {**params, "id": 0, "name": "x"}, quote=False)))
        return params

    def _check_exec_limits(self, params: Mapping[str, Any], rendered: str) -> None:
        """Refuse a command line that execve(2) would refuse (E2BIG) when the task runs."""
        env_bytes = sum(len(os.fsencode(f"{k}={v}")) + 1 + _POINTER for k, v in self.env.items())
        # A bound that needs no splitting: at most 4 bytes a character, and an argument (NUL
        # and pointer) per 2 characters, plus "/bin/sh -c".
        if 9 * len(rendered) + 64 + env_bytes <= min(MAX_ARG_STRLEN, _arg_max()):
            return
        sizes = self._arg_sizes(params, rendered)
        how = ("the whole command, one argument of /bin/sh -c," if self._needs_shell
               else "an argument")
        if max(sizes) > MAX_ARG_STRLEN:
            raise ValueError(
                f"the command line is too long to start: {how} takes {max(sizes):,} bytes, "
                f"over the limit of {MAX_ARG_STRLEN:,} that execve(2) takes for one argument "
                "(MAX_ARG_STRLEN); pass large data through files (inputs=, or a path as a "
                "parameter)")
        total = sum(sizes) + _POINTER * len(sizes) + env_bytes
        if total > _arg_max():
            raise ValueError(
                f"the command line is too long to start: its arguments and env take "
                f"{total:,} bytes, over the limit of {_arg_max():,} that execve(2) takes for "
                "arguments and environment together (ARG_MAX; the launcher's own environment "
                "adds to it); pass large data through files (inputs=, or a path as a "
                "parameter)")

    def _arg_sizes(self, params: Mapping[str, Any], rendered: str) -> list[int]:
        """The bytes, final NUL included, of each argument of the command's argv."""
        if self._needs_shell:
            return [len(b"/bin/sh") + 1, len(b"-c") + 1, len(os.fsencode(rendered)) + 1]
        # Split the template with a short token in place of each value (quoted, a value is
        # one plain word part, as the token is), not the rendered line: shlex takes seconds
        # for megabytes.  NUL cannot be in the template, so a token cannot be either.
        pieces, value_bytes = [], {}
        for i, (literal, name, spec, conv) in enumerate(self._parts):
            pieces.append(literal)
            if name is not None:
                token = f"\0{i}\0"
                pieces.append(token)
                value_bytes[token] = len(os.fsencode(_format_value(params[name], spec, conv)))
        sizes = []
        for arg in shlex.split("".join(pieces)):
            tokens = _TOKEN.findall(arg)
            sizes.append(len(os.fsencode(arg)) + 1
                         + sum(value_bytes[t] - len(t) for t in tokens))
        return sizes

    def render(self, **params: Any) -> str:
        """The command line for these parameters, each value quoted for the shell."""
        return _fill(self._parts, params, quote=True)

    def describe(self, params: Mapping[str, Any]) -> str:
        """The command line as far as it is known at submit time: a parameter that is the
        result of another task shows as ``<result of another task>``."""
        from concurrent.futures import Future

        from .serialization import ParentResult

        shown = {k: ("<result of another task>" if isinstance(v, (Future, ParentResult)) else v)
                 for k, v in params.items()}
        try:
            return _fill(self._parts, shown, quote=True)
        except (KeyError, ValueError, TypeError):
            return ""


@dataclass(frozen=True)
class ShellContext:
    """What ``preprocess`` and ``postprocess`` receive about the run."""

    task_id: int
    name: str
    workdir: Path
    params: Mapping[str, Any] = field(hash=False)


@dataclass(frozen=True)
class ShellResult:
    """The result of a shell task whose command exited with code 0."""

    return_code: int
    workdir: Path
    job_out: Path
    #: The command line started, with its MPI launcher's part for an MPI run (mpiexec with
    #: its hosts and ranks); also in the header of the run in ``job.out``.
    command: str = ""

    def tail(self, n: int = 20) -> str:
        """The last ``n`` lines of ``job.out`` (the command's stdout and stderr)."""
        return _tail(self.job_out, n)


def shell_call(app: ShellApp, args: tuple, kwargs: dict) -> tuple[Callable[..., Any], tuple]:
    """What ``submit(app, **params)`` stores: the runner and its arguments (validated)."""
    params = app.bind(*args, **kwargs)
    return _run_shell_task, (app, params)


def _place_parent_outputs(app: ShellApp, workdir: Path, task: _tasks.TaskContext) -> None:
    """Copy (or link) files matching ``app.parent_outputs`` from the working directories of
    the shell tasks this one depends on."""
    if not app.parent_outputs:
        return
    parent_dirs = []
    for blob in task.parent_results.values():
        result = pickle.loads(blob) if blob is not None else None
        if isinstance(result, ShellResult):
            parent_dirs.append(result.workdir)
    for parent_dir in parent_dirs:
        for pattern in app.parent_outputs:
            for src in sorted(glob.glob(str(parent_dir / pattern))):
                _place(src, workdir / os.path.basename(src), app.link)


def _run_shell_task(app: ShellApp, params: dict[str, Any]) -> Any:
    """Run one shell task in a worker (the callable stored for every shell task)."""
    task = _tasks.current_task()
    if task is None:
        raise RuntimeError("a shell task runs only inside a balsam_futures task")
    workdir = _task_workdir(app, params, task)
    private_dir(workdir)
    # Inside the hooks, current_task().workdir says where the run happens.
    _tasks._set_current(dataclasses.replace(task, workdir=str(workdir)))
    _place_inputs(app, workdir, task.id)
    _place_parent_outputs(app, workdir, task)
    ctx = ShellContext(task.id, task.name, workdir, dict(params))
    if app.preprocess is not None:
        app.preprocess(ctx)
    rendered = app.render(**params)
    from .launcher.workers.process import run_child, run_environment

    own_env = {**app.env, config.env_name("TASK_ID"): str(task.id)}
    job_out = workdir / JOB_OUT
    # A plain command inherits the worker's environment with its own variables set there
    # for the run (env=None: copying and encoding the whole environment for every start cost
    # more than the rest of subprocess's work for /bin/true); an MPI launcher is given it.
    with open(job_out, "ab") as out, run_environment({} if task.mpi else own_env):
        env: dict[str, str] | None = {**os.environ, **own_env} if task.mpi else None
        argv = _argv(app, rendered, env or os.environ, workdir, task.id)
        if task.mpi:
            # Started on every rank of its placement by the launcher's MPI launcher.
            from .launcher.mpi.run import command_argv

            argv, env = command_argv(task, argv, env)
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        one_line = rendered.replace("\n", "\\n")  # a value's newline must not end the header
        out.write(f"# balsam_futures: task {task.id} started {started} on "
                  f"{socket.gethostname()}: {one_line}\n".encode(errors="replace"))
        command = shlex.join(argv)
        if task.mpi:  # what was started, hosts and ranks included, for `show` and triage
            out.write(f"# balsam_futures: MPI command: {command}\n".encode(errors="replace"))
        out.flush()

        try:
            # run_child: the command dies with its worker, and with the launcher.
            code = run_child(argv, mpi=bool(task.mpi), cwd=workdir, env=env,
                             stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        except FileNotFoundError as exc:  # removed between the check and the start
            raise ShellCommandNotFound(argv[0], rendered, workdir=str(workdir),
                                       task_id=task.id) from exc
        except PermissionError as exc:
            raise ShellTaskError(126, rendered, workdir=str(workdir), task_id=task.id,
                                 message=f"shell task {task.id}: cannot execute {argv[0]!r}: "
                                         f"{exc.strerror}") from exc
    if code != 0:
        tail = _tail(job_out, ERROR_TAIL_LINES)
        found = _NOT_FOUND.findall(tail) if code == 127 and app.needs_shell else None
        if found:
            raise ShellCommandNotFound(found[-1].strip(), rendered, workdir=str(workdir),
                                       output_tail=tail, task_id=task.id)
        raise ShellTaskError(code, rendered, workdir=str(workdir), output_tail=tail,
                             task_id=task.id)
    result = ShellResult(code, workdir, job_out, command)
    if app.postprocess is not None:
        value = app.postprocess(ctx, result)
        if value is not None:
            return value
    return result
