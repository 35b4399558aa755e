"""Shell applications: command templates with safe quoting, environment, inputs and hooks.

    master: ex.submit(app, x=1)                 worker (launcher/worker.py), as a Python task
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
as code: that is what such a template asks for.  A template that uses the shell itself (pipes, redirections, ``;``, ``$VAR``...) runs under
``/bin/sh -c``; any other runs without a shell.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import glob
import os
import pickle
import re
import shlex
import shutil
import socket
import struct
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path, PurePath
from string import Formatter
from typing import Any

from . import config
from . import tasks as _tasks
from .errors import ShellCommandNotFound, ShellInputNotFound, ShellTaskError
from .sitedir import resolve_site

#: The file in the working directory that receives the command's stdout and stderr.
JOB_OUT = "job.out"
#: Lines of job.out a ShellTaskError carries.  More helps to see why a run failed; every
#: line is stored with the error in the task row and printed with the traceback.
ERROR_TAIL_LINES = 20
#: Characters that make a template need a shell when they stand outside quotes.
_SHELL_CHARS = frozenset("|&;<>()$`*?[]~\n")
#: A first word that only a shell understands (keywords and builtins that change the shell).
_SHELL_WORDS = frozenset({
    "!", "{", "}", "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done",
    "case", "esac", "function", "export", "cd", "source", ".", "eval", "exec", "set", "unset",
    "ulimit", "umask", "trap", "alias",
})
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")
_NOT_FOUND = re.compile(r"([^\s:][^:\n]*): (?:command )?not found\s*$", re.MULTILINE)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
_GLOB_CHARS = re.compile(r"[*?[]")
#: Stands for a value where ShellApp._arg_sizes splits a template.
_TOKEN = re.compile("\0[0-9]+\0")
#: Parameter value types: each has one obvious text form on a command line.
PARAM_TYPES = (str, int, float, PurePath)
#: The most bytes one argument or environment string may take in execve(2), its final NUL
#: included: Linux's MAX_ARG_STRLEN (32 pages, include/uapi/linux/binfmts.h), at 4 KiB pages,
#: the smallest.  Past it execve fails with E2BIG however much room ARG_MAX leaves.
MAX_ARG_STRLEN = 131072
#: What execve counts for each string besides its bytes: its pointer in argv or envp.
_POINTER = struct.calcsize("P")

# One parsed piece of a template: literal text, then a field (name, format spec, conversion)
# or None after the last literal.
_Part = tuple[str, "str | None", str, "str | None"]



def _refuse_nul(text: str, what: str) -> None:
    # A C string ends at its first NUL: no argument, path or variable can hold one.
    if "\0" in text:
        raise ValueError(f"{what} contains a NUL character, which no command line, path or "
                         "environment variable can hold")


@functools.cache
def _arg_max() -> int:
    """The most bytes execve(2) takes for arguments and environment together, pointers
    included: sysconf ARG_MAX, a quarter of the stack limit on Linux (execve(2), "Limits on
    size of arguments and environment").  Asked here, at submit; the launcher's stack limit
    may differ."""
    try:
        limit = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        limit = -1
    return limit if limit > 0 else MAX_ARG_STRLEN


def _parse_fields(template: str, what: str) -> tuple[_Part, ...]:
    """Split a ``{param}`` template, rejecting every field that is not a plain name."""
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{what} {template!r} is not a valid template: {exc} "
                         "(write {{ and }} for literal braces)") from None
    parts: list[_Part] = []
    for literal, name, spec, conv in parsed:
        if name is not None:
            if name == "" or name.isdigit():
                raise ValueError(f"{what} has the positional field {{{name}}}; name every "
                                 "field, e.g. {infile}")
            if not name.isidentifier():
                raise ValueError(f"{what} has the field {{{name}}}: fields are plain names, "
                                 "without attributes or indexes")
            if spec and "{" in spec:
                raise ValueError(f"{what} has a nested field in {{{name}:{spec}}}")
        parts.append((literal, name, spec or "", conv))
    return tuple(parts)


def _scan_command(parts: tuple[_Part, ...]) -> bool:
    """Check where each placeholder stands; return whether the command needs a shell.

    Shell syntax counts only outside quotes (``echo 'a|b'`` needs none); ``$`` and backticks
    count inside double quotes too.  A placeholder must stand in plain shell words.
    """
    single = double = backtick = comment = escaped = heredoc = False
    needs_shell = False
    prev = " "
    for literal, name, _spec, _conv in parts:
        for ch in literal:
            if comment:
                comment = ch != "\n"
            elif escaped:
                escaped = False
            elif single:
                single = ch != "'"
            elif double:
                if ch == "\\":
                    escaped = True
                elif ch == '"':
                    double = False
                elif ch in "$`":
                    needs_shell = True
                    backtick ^= ch == "`"
            elif ch == "\\":
                escaped = True
            elif ch == "'":
                single = True
            elif ch == '"':
                double = True
            elif ch == "#" and (prev.isspace() or prev in ";&|()<>"):
                comment = needs_shell = True
            else:
                if ch in _SHELL_CHARS:
                    needs_shell = True
                if ch == "`":
                    backtick = not backtick
                if ch == "<" and prev == "<":
                    heredoc = True
            prev = ch
        if name is None:
            continue
        where = ("inside single quotes" if single else "inside double quotes" if double
                 else "inside backticks" if backtick else "in a comment" if comment
                 else "after a backslash" if escaped else "after $" if prev == "$"
                 else "after a here-document (<<)" if heredoc else None)
        if where:
            raise ValueError(
                f"the placeholder {{{name}}} stands {where} in the command; put it in plain "
                "shell words: its value is quoted for the shell already")
        prev = "x"
    if single or double or backtick:
        raise ValueError("the command has an unterminated quote or backtick")
    if escaped:
        raise ValueError("the command ends with a lone backslash")
    words = shlex.split("".join(lit + ("x" if name is not None else "")
                                for lit, name, _s, _c in parts), comments=False)
    if not words:
        raise ValueError("the command is empty: it must name a program")
    return needs_shell or words[0] in _SHELL_WORDS or bool(_ASSIGNMENT.match(words[0]))


def _format_value(value: Any, spec: str, conv: str | None) -> str:
    if conv == "r":
        value = repr(value)
    elif conv == "a":
        value = ascii(value)
    elif conv == "s":
        value = str(value)
    return format(value, spec)


def _fill(parts: tuple[_Part, ...], values: Mapping[str, Any], quote: bool) -> str:
    out = []
    for literal, name, spec, conv in parts:
        out.append(literal)
        if name is not None:
            text = _format_value(values[name], spec, conv)
            if "\0" in text:
                raise ValueError(f"the value of parameter {name!r} contains a NUL character, "
                                 "which no command-line argument can hold")
            out.append(shlex.quote(text) if quote else text)
    return "".join(out)


def _safe_name(text: str) -> str:
    """``text`` as one path component of [A-Za-z0-9_.-] that is never ``.`` or ``..``."""
    safe = _UNSAFE_NAME.sub("_", text)
    return safe if safe.strip(".") else safe.replace(".", "_") or "_"


def _absolute(path: str | os.PathLike[str], what: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a path, not {type(path).__name__}")
    text = os.fspath(path)
    if isinstance(text, str):
        _refuse_nul(text, what)
    return os.path.abspath(os.path.expanduser(text))


def _normalize_inputs(inputs: Any) -> tuple[tuple[str | None, str], ...]:
    """``inputs`` as ((name in the workdir or None, absolute source path or pattern), ...)."""
    if inputs is None:
        return ()
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if isinstance(inputs, Mapping):
        pairs = []
        for dest, src in inputs.items():
            if not isinstance(dest, str) or not dest or os.path.isabs(dest) \
                    or ".." in PurePath(dest).parts:
                raise ValueError(f"inputs: {dest!r} must be a relative name inside the "
                                 "working directory")
            pairs.append((dest, _absolute(src, f"inputs[{dest!r}]")))
        return tuple(pairs)
    if isinstance(inputs, (list, tuple)):
        return tuple((None, _absolute(src, "each of inputs")) for src in inputs)
    raise TypeError("inputs must be a list of paths or glob patterns, or a mapping of names "
                    f"in the working directory to them, not {type(inputs).__name__}")



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

    def tail(self, n: int = 20) -> str:
        """The last ``n`` lines of ``job.out`` (the command's stdout and stderr)."""
        return _tail(self.job_out, n)


def _tail(path: Path, n: int, block: int = 8192) -> str:
    """The last ``n`` lines of a file, read from its end (job.out may be large)."""
    if n <= 0:
        return ""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        pos, data = end, b""
        while pos > 0 and data.count(b"\n") <= n:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(lines[-n:])



def shell_call(app: ShellApp, args: tuple, kwargs: dict) -> tuple[Callable[..., Any], tuple]:
    """What ``submit(app, **params)`` stores: the runner and its arguments (validated)."""
    params = app.bind(*args, **kwargs)
    return _run_shell_task, (app, params)



def _check_workdir(path: Path) -> None:
    _refuse_nul(str(path), "the working directory")
    if not path.is_absolute() or ".." in path.parts:
        raise ValueError(f"the working directory {str(path)!r} must be an absolute path "
                         "without '..'")


def _task_workdir(app: ShellApp, params: Mapping[str, Any], task: _tasks.TaskContext) -> Path:
    name = _safe_name(task.name or "task")
    if app.workdir is not None:
        path = Path(_fill(app._workdir_parts, {**params, "id": task.id, "name": name},
                          quote=False))
        _check_workdir(path)
        return path
    if task.workdir:  # the task's own option (already resolved against the site)
        path = Path(task.workdir)
        _check_workdir(path)
        return path
    site = Path(task.site) if task.site else resolve_site(None)
    workflow = _safe_name(task.tags.get("workflow", "default"))
    return site / "data" / workflow / f"{name}_{task.id}"


def _make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each 0700 (Path.mkdir gives parents the
    umask's mode)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for p in reversed(missing):
        try:
            p.mkdir(mode=0o700)
        except FileExistsError:
            pass  # another task made it meanwhile


def _place(src: str, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
        dst.unlink()  # left by an earlier run of this task
    if link:
        if dst.exists():
            shutil.rmtree(dst)
        os.symlink(src, dst)
    elif os.path.isdir(src):
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def _place_inputs(app: ShellApp, workdir: Path, task_id: int) -> None:
    for dest, pattern in app.inputs:
        is_glob = bool(_GLOB_CHARS.search(pattern))
        if is_glob:
            matches = sorted(glob.glob(pattern))
        else:
            matches = [pattern] if os.path.lexists(pattern) else []
        if not matches:
            raise ShellInputNotFound(pattern, task_id=task_id)
        for src in matches:
            if dest is None:
                dst = workdir / os.path.basename(src)
            elif is_glob:
                dst = workdir / dest / os.path.basename(src)
            else:
                dst = workdir / dest
            _place(src, dst, app.link)


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


def _argv(app: ShellApp, rendered: str, env: Mapping[str, str], workdir: Path,
          task_id: int) -> list[str]:
    """The argv to run, after checking that its program exists (no shell) so a missing one
    is reported by name instead of as an OSError from deep inside subprocess."""
    if app.needs_shell:
        return ["/bin/sh", "-c", rendered]
    argv = shlex.split(rendered)
    exe = argv[0]
    if "/" in exe:
        path = exe if os.path.isabs(exe) else os.path.join(workdir, exe)
        found = os.path.isfile(path) and os.access(path, os.X_OK)
    else:
        found = shutil.which(exe, path=env.get("PATH", os.defpath)) is not None
    if not found:
        raise ShellCommandNotFound(exe, rendered, workdir=str(workdir), task_id=task_id,
                                   path=env.get("PATH", os.defpath))
    return argv


def _run_shell_task(app: ShellApp, params: dict[str, Any]) -> Any:
    """Run one shell task in a worker (the callable stored for every shell task)."""
    task = _tasks.current_task()
    if task is None:
        raise RuntimeError("a shell task runs only inside a balsam_futures task")
    workdir = _task_workdir(app, params, task)
    _make_private_dirs(workdir)
    # Inside the hooks, current_task().workdir says where the run happens.
    _tasks._set_current(dataclasses.replace(task, workdir=str(workdir)))
    _place_inputs(app, workdir, task.id)
    _place_parent_outputs(app, workdir, task)
    ctx = ShellContext(task.id, task.name, workdir, dict(params))
    if app.preprocess is not None:
        app.preprocess(ctx)
    rendered = app.render(**params)
    env = {**os.environ, **app.env, config.env_name("TASK_ID"): str(task.id)}
    job_out = workdir / JOB_OUT
    with open(job_out, "ab") as out:
        argv = _argv(app, rendered, env, workdir, task.id)
        if task.mpi:
            # Started on every rank of its placement by the launcher's MPI launcher.
            from .launcher.mpi_task import command_argv

            argv, env = command_argv(task, argv, env)
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        one_line = rendered.replace("\n", "\\n")  # a value's newline must not end the header
        out.write(f"# balsam_futures: task {task.id} started {started} on "
                  f"{socket.gethostname()}: {one_line}\n".encode(errors="replace"))
        out.flush()
        from .launcher.worker import run_child

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
    result = ShellResult(code, workdir, job_out)
    if app.postprocess is not None:
        value = app.postprocess(ctx, result)
        if value is not None:
            return value
    return result
