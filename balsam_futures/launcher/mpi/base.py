"""What an MPI launcher is given and what it returns.

    RankLayout (hosts, ranks per node, threads, GPUs)  --argv()-->  list[str] for Popen
                                                        --env()-->   variables to merge into env=
    environ, name  --detect_launcher()-->  the MpiLauncher (locate=True: its program found too)

Each launcher is one file named after its registry key (``mpich.py`` holds ``MpichLauncher``) and
is a pure function of its inputs: no subprocess, no ``os.environ``, no file access. The caller
runs the argv with ``env={**os.environ, **launcher.env(layout), **task_env}`` and passes the same
``{**launcher.env(layout), **task_env}`` as ``argv(..., env=)`` so the variables also travel
through the launcher's own flag to ranks on other hosts.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ...errors import MpiLaunchError

# Registry key -> class name; the key is also the module name under launcher/mpi/. Modules are
# imported on first use so that importing balsam_futures checks nothing about the machine.
_LAUNCHERS: dict[str, str] = {
    "mpich": "MpichLauncher",
    "openmpi": "OpenMpiLauncher",
    "srun": "SrunLauncher",
    "aprun": "AprunLauncher",
    "pals": "PalsLauncher",
    "flux": "FluxLauncher",
}

GPU_AFFINITY_MODULE = "balsam_futures.launcher.mpi.gpu_affinity"


@dataclass(frozen=True)
class RankLayout:
    """Where the ranks of one MPI task go: the same number of ranks on every host.

    ``gpu_ids`` is either empty (the launcher or the scheduler picks GPUs) or holds, for each
    host in ``hosts`` order, the GPU ids this task was given on that host.
    """

    hosts: tuple[str, ...]
    ranks_per_node: int
    threads_per_rank: int = 1
    gpus_per_rank: int = 0
    gpu_ids: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self):
        # Accept lists from callers but store tuples, so the layout stays hashable and frozen.
        if isinstance(self.hosts, str) or not isinstance(self.hosts, Sequence):
            raise TypeError(f"hosts must be a sequence of host names, not {self.hosts!r}")
        object.__setattr__(self, "hosts", tuple(self.hosts))
        object.__setattr__(self, "gpu_ids", tuple(tuple(str(g) for g in ids)
                                                  for ids in self.gpu_ids))
        if not self.hosts:
            raise ValueError("hosts must name at least one host")
        if any(not isinstance(h, str) or not h or "," in h for h in self.hosts):
            raise ValueError(f"hosts must be non-empty names without commas, got {self.hosts!r}")
        for name, low in (("ranks_per_node", 1), ("threads_per_rank", 1), ("gpus_per_rank", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.gpu_ids:
            if len(self.gpu_ids) != len(self.hosts):
                raise ValueError(f"gpu_ids must have one entry per host ({len(self.hosts)}), "
                                 f"got {len(self.gpu_ids)}")
            need = self.ranks_per_node * self.gpus_per_rank
            for host, ids in zip(self.hosts, self.gpu_ids):
                if len(ids) < need:
                    raise ValueError(f"gpu_ids for {host} has {len(ids)} ids, but "
                                     f"ranks_per_node * gpus_per_rank needs {need}")
                if any(not g or "," in g for g in ids):
                    raise ValueError(f"gpu_ids for {host} must be non-empty ids without commas")

    @property
    def num_nodes(self) -> int:
        return len(self.hosts)

    @property
    def num_ranks(self) -> int:
        return len(self.hosts) * self.ranks_per_node


class MpiLauncher(ABC):
    """Builds the command line that starts one MPI task; subclasses only build argv."""

    name: str = ""
    #: the program run by default (a site may give a full path instead)
    default_executable: str = ""
    #: names to look for on PATH, first found wins: distributions install several MPIs side
    #: by side under their own names (Debian: mpirun.openmpi, mpiexec.mpich), and a plain
    #: ``mpirun`` may belong to another MPI than this launcher's
    search_names: tuple[str, ...] = ()

    def __init__(self, executable: str | None = None, python: str | None = None) -> None:
        self.executable = executable or self.default_executable
        # The interpreter that runs the GPU affinity wrapper in front of each rank.
        self.python = python or default_python()

    @abstractmethod
    def argv(self, layout: RankLayout, command: Sequence[str],
             env: Mapping[str, str] | None = None) -> list[str]:
        """The full command line: launcher, its options, then ``command`` unchanged."""

    def env(self, layout: RankLayout) -> dict[str, str]:
        """Variables the ranks need in their environment for this layout."""
        return {"OMP_NUM_THREADS": str(layout.threads_per_rank)}

    def __repr__(self):
        return f"{type(self).__name__}()"


def check_command(command: Sequence[str]) -> list[str]:
    """``command`` as a list; a bare string would be split into characters, so refuse it."""
    if isinstance(command, str) or not command:
        raise ValueError("command must be a non-empty sequence of arguments (an argv list), "
                         f"got {command!r}")
    return [str(a) for a in command]


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    out = dict(env or {})
    for key, value in out.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"env name {key!r} is not a valid environment variable name")
        if not isinstance(value, str):
            raise TypeError(f"env value for {key} must be a str, got {type(value).__name__}")
    return out


def gpu_affinity_prefix(layout: RankLayout, python: str, reverse: bool = False) -> list[str]:
    """The wrapper that gives each local rank its own slice of the task's GPUs.

    Empty when the layout asks for no GPUs. Launchers without GPU binding of their own (hydra,
    Open MPI, PALS, ALPS) put this between their options and the user's command.
    """
    if layout.gpus_per_rank == 0:
        return []
    if not layout.gpu_ids:
        raise ValueError("gpu_ids is required when gpus_per_rank > 0: this launcher cannot "
                         "pick GPUs itself, so the layout must say which ids each host gave")
    per_host = [tuple(reversed(ids)) if reverse else ids for ids in layout.gpu_ids]
    prefix = [python, "-m", GPU_AFFINITY_MODULE, "--per-rank", str(layout.gpus_per_rank)]
    if all(ids == per_host[0] for ids in per_host):
        prefix += ["--ids", ",".join(per_host[0])]
    else:
        # Different ids on different hosts: the wrapper finds its own line by host name.
        for host, ids in zip(layout.hosts, per_host):
            prefix += ["--ids", f"{host}={','.join(ids)}"]
    return [*prefix, "--"]


def default_python() -> str:
    return sys.executable


def launcher_names() -> list[str]:
    return sorted(_LAUNCHERS)


def launcher_class(name: str) -> type[MpiLauncher]:
    """The launcher class registered under ``name`` (the module name: mpich, srun, ...)."""
    if name not in _LAUNCHERS:
        raise ValueError(f"unknown MPI launcher {name!r}; valid names: "
                         f"{', '.join(launcher_names())}")
    module = importlib.import_module(f"{__package__}.{name}")
    return getattr(module, _LAUNCHERS[name])


def detect_launcher(environ: Mapping[str, str], which: Callable[..., str | None] = shutil.which,
                    name: str | None = None, *, locate: bool = False,
                    task_id: int | None = None) -> MpiLauncher:
    """The launcher for this allocation: ``name`` if given, else chosen from the environment;
    with ``locate``, its program found now as well (``MpiLaunchError`` if it is not there,
    naming task ``task_id`` as the one that needs it, if given).

    The one place that guesses. The batch system is the one ``launcher.nodes`` detects (the
    only code that reads the schedulers' variables): a flux instance wins, since flux may
    itself run inside Slurm; then Slurm (srun); then Cray ALPS (``aprun`` on PATH); else
    hydra ``mpiexec``. PALS (Polaris/Aurora) looks like MPICH from the environment, so it is
    chosen by name only.
    """
    if name is None:
        from ..nodes import detect_node_list

        system = detect_node_list(environ).name
        if system == "flux":
            name = "flux"
        elif system == "slurm":
            name = "srun"
        elif which("aprun"):
            name = "aprun"
        else:
            name = "mpich"
    launcher = launcher_class(name)()
    if locate:
        _locate(launcher, environ, which, task_id)
    return launcher


def _locate(launcher: MpiLauncher, environ: Mapping[str, str], which: Callable[..., str | None],
            task_id: int | None) -> None:
    """Set ``launcher.executable`` to the full path of its program.

    For MPICH, one installed beside the interpreter wins (the mpich wheel's mpiexec in a
    virtual environment, which need not be activated).  Then the launcher's own names on
    ``environ``'s PATH, most specific first, since a plain ``mpiexec`` or ``mpirun`` may be
    another MPI's (Open MPI's, Slurm's wrapper) or the wheel's.
    """
    here = os.path.dirname(sys.executable)
    beside = os.path.join(here, launcher.executable)
    if launcher.name == "mpich" and os.access(beside, os.X_OK):
        launcher.executable = beside
        return
    # The interpreter's own bin directory holds the mpich wheel's programs: not this MPI's.
    path = os.pathsep.join(p for p in environ.get("PATH", os.defpath).split(os.pathsep)
                           if os.path.abspath(p or ".") != here)
    for program in launcher.search_names or (launcher.executable,):
        found = which(program, path=path)
        if found is not None:
            launcher.executable = found
            return
    who = f"task {task_id} needs" if task_id is not None else "this launcher needs"
    raise MpiLaunchError(
        f"{who} the MPI launcher {launcher.executable!r} ({launcher.name}), which is not on "
        "PATH; install it (pip install mpich for MPICH) or start the launcher with "
        "--mpi-launcher naming the one this system has", task_id=task_id)
