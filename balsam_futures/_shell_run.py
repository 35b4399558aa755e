"""The run side of a shell task, in the worker that runs it (apps.py ``_run_shell_task``): its
working directory, the inputs placed there, the argv to start, and the tail of ``job.out``."""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import tasks as _tasks
from ._shell_template import _check_workdir, _fill
from .errors import ShellCommandNotFound, ShellInputNotFound
from .sitedir import resolve_site

if TYPE_CHECKING:
    from .apps import ShellApp

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
_GLOB_CHARS = re.compile(r"[*?[]")


def _safe_name(text: str) -> str:
    """``text`` as one path component of [A-Za-z0-9_.-] that is never ``.`` or ``..``."""
    safe = _UNSAFE_NAME.sub("_", text)
    return safe if safe.strip(".") else safe.replace(".", "_") or "_"


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
    return default_workdir(task)


def default_workdir(task: _tasks.TaskContext) -> Path:
    """Where a task without a working directory of its own runs (a shell task) or writes its
    ``job.out`` (a Python task of a launcher that is not its executor's own child):
    ``<site>/data/<workflow tag, or default>/<name>_<id>``."""
    site = Path(task.site) if task.site else resolve_site(None)
    return site / "data" / relative_default_workdir(task.name, task.tags, task.id)


def relative_default_workdir(name: str | None, tags: Mapping[str, str], task_id: int) -> str:
    """``default_workdir`` relative to the site's data/ directory (a task's ``workdir``
    option in that form resolves to the same place)."""
    workflow = _safe_name(tags.get("workflow", "default"))
    return f"{workflow}/{_safe_name(name or 'task')}_{task_id}"




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


#: (program, PATH) that _argv found: a worker runs the same command many times.
_found: set[tuple[str, str]] = set()


def _argv(app: ShellApp, rendered: str, env: Mapping[str, str], workdir: Path,
          task_id: int) -> list[str]:
    """The argv to run, after checking that its program exists (no shell) so a missing one
    is reported by name instead of as an OSError from deep inside subprocess."""
    if app.needs_shell:
        return ["/bin/sh", "-c", rendered]
    argv = shlex.split(rendered)
    exe = argv[0]
    search_path = env.get("PATH", os.defpath)
    if (exe, search_path) in _found:
        return argv
    if "/" in exe:
        path = exe if os.path.isabs(exe) else os.path.join(workdir, exe)
        found = os.path.isfile(path) and os.access(path, os.X_OK)
    else:
        found = shutil.which(exe, path=search_path) is not None
    if not found:
        raise ShellCommandNotFound(exe, rendered, workdir=str(workdir), task_id=task_id,
                                   path=search_path)
    if os.path.isabs(exe) or "/" not in exe:
        # Found once, assumed there for the next runs of this worker (a few stat calls per
        # start otherwise); one removed since fails to start, and is reported by name then.
        _found.add((exe, search_path))
    return argv
